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


def interleaved(fns, rounds=5, warmup=1, sync=None, alternate=False):
    """Time each of ``fns`` (name -> callable) in turn, A B A B ..., after ``warmup`` rounds.

    Interleaving spreads the noise of a busy machine over every contender alike;
    ``alternate=True`` runs every other round in reverse order (A B C C B A ...), so no
    contender always runs right after the same other one (a thread pool still spinning,
    a cache another one filled). Returns name -> list of seconds.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out = {name: [] for name in fns}
    items = list(fns.items())
    for r in range(rounds):
        for name, fn in (items[::-1] if alternate and r % 2 else items):
            out[name].append(time_call(fn, sync))
    return out


def epochs_in_turns(rs, epochs, steps):
    """name -> seconds of each of ``epochs`` epochs of the runners ``rs`` (name -> an
    object with ``train_steps(n)`` and ``steps_per_epoch``), the runners taking turns
    every ``steps`` steps: a slow spell of a noisy machine lands on all of them alike."""
    out = {n: [] for n in rs}
    for _ in range(epochs):
        spent, done = dict.fromkeys(rs, 0.0), 0
        total = max(r.steps_per_epoch for r in rs.values())
        while done < total:
            k = min(steps, total - done)
            for n, r in rs.items():
                spent[n] += time_call(lambda r=r: r.train_steps(k))
            done += k
        for n in rs:
            out[n].append(spent[n])
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
