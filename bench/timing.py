"""Timing helpers: warm-up, synchronization, interleaved repeats, medians and spreads."""

import os
import statistics
import time


def time_call(fn, sync=None):
    """Seconds for one call of ``fn``, synchronizing the device (if given) on both sides."""
    if sync:
        sync()
    start = time.perf_counter()
    fn()
    if sync:
        sync()
    return time.perf_counter() - start


def samples(fn, repeats=30, warmup=3, sync=None, inner=1):
    """``repeats`` timings of ``inner`` back-to-back calls each, in seconds per call."""
    for _ in range(warmup):
        fn()

    def block():
        for _ in range(inner):
            fn()

    return [time_call(block, sync) / inner for _ in range(repeats)]


def interleaved(fns, rounds=5, warmup=1, sync=None):
    """Time each of ``fns`` (name -> callable) in turn, A B A B ..., after ``warmup`` rounds.

    Interleaving spreads the noise of a busy machine over every contender alike.
    Returns name -> list of seconds.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            out[name].append(time_call(fn, sync))
    return out


def summary(values):
    """Median and spread (interquartile range over median) of a list of timings."""
    values = sorted(values)
    med = statistics.median(values)
    if len(values) >= 4:
        q = statistics.quantiles(values, n=4)
        spread = (q[2] - q[0]) / med if med else 0.0
    else:
        spread = (values[-1] - values[0]) / med if med else 0.0
    return {"median": med, "spread": spread, "min": values[0], "n": len(values)}


def set_threads(n):
    """Use ``n`` threads for BLAS/OpenMP (threadpoolctl) and PyTorch; return what was set."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    state = {"threads": n}
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
        state["threadpoolctl"] = True
    except ImportError:
        state["threadpoolctl"] = False  # env vars only: effective for libraries not yet loaded
    try:
        import torch

        torch.set_num_threads(n)
        state["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return state
