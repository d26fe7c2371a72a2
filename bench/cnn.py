"""The CNN beside PyTorch eager on the CPU: interleaved timings and per-layer profiles.

``python -m xptrain.bench.cnn [--rounds N] [--steps N] [--epochs N] [--profile]
[--data-dir DIR] [--json FILE]``

* blocks: ``--steps`` training steps of the engine, then the same of PyTorch, A B A B ...
  for ``--rounds`` rounds (short blocks spread a noisy machine's bursts over both);
* epochs: ``--epochs`` full training epochs of each, the two taking turns every
  ``--steps`` steps (``--whole-epochs``: turns every whole epoch);
* ``--kernels``: the convolution kernels' numba twins against their references;
* ``--profile``: the engine's step split by layer (forward, backward), loss, optimizer
  and gather, and ``torch.profiler``'s table of the same network's step.

Both train conv32-pool-conv64-pool-fc128 (ReLU) with plain SGD at batch 128 on the same
threads (:func:`.timing.set_threads`).
"""

import argparse
import collections
import json
import time

from .peers import TorchRunner, available
from .report import write_results
from .timing import epochs_in_turns, interleaved, set_threads, summary
from .training import EngineRunner

CNN_MODEL = dict(model="cnn", activation="relu", optimizer="sgd", lr=0.05, batch_size=128)


def runners(data, device="cpu"):
    """name -> runner: the engine (fused kernels) and, when installed, PyTorch."""
    from ..backend import select_backend

    out = {"xptrain": EngineRunner(data, select_backend(device), "fused", **CNN_MODEL)}
    if available("torch"):
        out["torch-eager"] = TorchRunner(data, device, **CNN_MODEL)
    return out


def compare(rs, rounds, steps, epochs, whole_epochs=0):
    """Median milliseconds per step (``rounds`` interleaved blocks of ``steps`` steps) and
    seconds per epoch: ``epochs`` full epochs each, run block by block in turn (a burst of
    a noisy machine lands on both), and ``whole_epochs`` whole epochs in turn."""
    blocks = interleaved({n: (lambda r=r: r.train_steps(steps)) for n, r in rs.items()},
                         rounds, warmup=1)
    rows = {n: {"step_ms": summary(v)["median"] / steps * 1e3,
                "step_spread": summary(v)["spread"]} for n, v in blocks.items()}
    for n, v in epochs_in_turns(rs, epochs, steps).items():
        rows[n].update(epoch_s=summary(v)["median"], epochs=[round(t, 2) for t in v])
    if whole_epochs:
        full = interleaved({n: r.train_epoch for n, r in rs.items()}, whole_epochs, warmup=0)
        for n, v in full.items():
            rows[n].update(whole_epoch_s=summary(v)["median"],
                           whole_epochs=[round(t, 2) for t in v])
    if "torch-eager" in rows:
        peer = rows["torch-eager"]
        for row in rows.values():
            row["vs_torch_steps"] = peer["step_ms"] / row["step_ms"]
            for key in ("epoch_s", "whole_epoch_s"):
                if key in row:
                    row[f"vs_torch_{key[:-2]}"] = peer[key] / row[key]
    return rows


def profile_engine(runner, steps):
    """Milliseconds per step in each layer's forward and backward, the loss, the
    optimizer's update and the batch gather, from ``steps`` timed steps."""
    t = runner.trainer
    spent = collections.defaultdict(float)

    def timed(obj, name, label):
        fn, own = getattr(obj, name), name in vars(obj)

        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            spent[label] += time.perf_counter() - start
            return out
        setattr(obj, name, wrapper)
        return lambda: setattr(obj, name, fn) if own else delattr(obj, name)

    undo = [timed(t, "_gather", "gather"), timed(t, "loss_fn", "loss"),
            timed(t.optimizer, "step", "optimizer")]
    for i, layer in enumerate(t.model.layers):
        label = f"{i} {type(layer).__name__}"
        undo += [timed(layer, "forward", f"{label} forward"),
                 timed(layer, "backward", f"{label} backward")]
    try:
        runner.train_steps(5)
        spent.clear()
        start = time.perf_counter()
        runner.train_steps(steps)
        total = time.perf_counter() - start
    finally:
        for u in undo:
            u()
    rows = {k: v / steps * 1e3 for k, v in spent.items()}
    rows["step (total)"] = total / steps * 1e3
    return rows


def profile_torch(runner, steps, top=12):
    """``torch.profiler``'s self CPU milliseconds per step by operator, the ``top`` ones."""
    from torch.profiler import ProfilerActivity, profile

    runner.train_steps(5)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        runner.train_steps(steps)
        total = time.perf_counter() - start
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    rows = {e.key: e.self_cpu_time_total / 1e3 / steps for e in events[:top]}
    rows["step (total, profiled)"] = total / steps * 1e3
    return rows


def kernel_cases(rng):
    """name -> (op name, arguments): the CNN's convolution kernels at batch 128: the first
    layer's 2 x 2 pooling and its backward (28 x 28 x 32), the second's Winograd transforms
    (14 x 14, 32 -> 64 channels, one chunk of 32 images) and pooling (14 x 14 x 64)."""
    import numpy as np

    f = np.float32
    z1 = rng.standard_normal((128, 28, 28, 32)).astype(f)
    y1, a1 = rng.standard_normal((128, 14, 14, 32)).astype(f), rng.integers(
        0, 4, (128, 14, 14, 32)).astype(np.uint8)
    x2, z2 = rng.random((32, 14, 14, 32), f), rng.standard_normal((128, 14, 14, 64)).astype(f)
    M, g2 = rng.standard_normal((16, 32 * 49, 64)).astype(f), rng.standard_normal(
        (32, 7, 7, 64)).astype(f)
    arg2, dV = rng.integers(0, 4, g2.shape).astype(np.uint8), np.empty((16, 32 * 49, 32), f)
    return {
        "maxpool_backward 2x2 128x28x28x32": ("maxpool_backward", (
            y1, a1, 2, 2, np.empty_like(z1))),
        "maxpool 2x2 128x28x28x32": ("maxpool_forward", (z1, 2, 2, np.empty((128, 14, 14, 32), f),
                                                         np.empty((128, 14, 14, 32), np.uint8))),
        "maxpool 2x2 128x14x14x64": ("maxpool_forward", (z2, 2, 2, np.empty((128, 7, 7, 64), f),
                                                         np.empty((128, 7, 7, 64), np.uint8))),
        "winograd_input 32x14x14x32": ("winograd_input", (x2, 1, dV)),
        "winograd_output_pool 32x14x14x64": ("winograd_output_pool", (
            M, 14, 14, np.empty(g2.shape, f), np.empty(g2.shape, np.uint8))),
        "winograd_output_pool_adjoint": ("winograd_output_pool_adjoint", (
            g2, arg2, 14, 14, np.empty_like(M))),
        "winograd_input_adjoint 32x14x14x32": ("winograd_input_adjoint",
                                               (dV, 1, np.empty_like(x2))),
    }


def kernel_rows(rounds=21):
    """Milliseconds per call of each case, the numba twin and the reference interleaved."""
    import numpy as np

    from .. import kernels

    rows = []
    for name, (op, args) in kernel_cases(np.random.default_rng(0)).items():
        calls = {impl: (lambda fn=getattr(kernels.resolve("cpu", impl), op): fn(*args))
                 for impl in ("numba", "reference")}
        times = interleaved(calls, rounds, warmup=2)
        ms = {impl: summary(v)["median"] * 1e3 for impl, v in times.items()}
        rows.append({"kernel": name, "numba_ms": ms["numba"], "reference_ms": ms["reference"],
                     "speedup": ms["reference"] / ms["numba"]})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m xptrain.bench.cnn")
    p.add_argument("--rounds", type=int, default=15, help="interleaved blocks per contender")
    p.add_argument("--steps", type=int, default=20, help="training steps per block")
    p.add_argument("--epochs", type=int, default=3,
                   help="full epochs each, taking turns every --steps steps (0: none)")
    p.add_argument("--whole-epochs", type=int, default=0,
                   help="full epochs each, taking turns every epoch")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--kernels", action="store_true", help="time the convolution kernels too")
    p.add_argument("--data-dir")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    from ..data import load_mnist

    threads = set_threads(args.threads)
    rs = runners(load_mnist(args.data_dir, download=False, progress=False))
    result = {"threads": threads, "model": CNN_MODEL, "rounds": args.rounds,
              "steps": args.steps, "compare": compare(rs, args.rounds, args.steps,
                                                      args.epochs, args.whole_epochs)}
    if args.kernels:
        result["kernels"] = kernel_rows()
    if args.profile:
        result["profile"] = {"xptrain": profile_engine(rs["xptrain"], 60)}
        if "torch-eager" in rs:
            result["profile"]["torch-eager"] = profile_torch(rs["torch-eager"], 60)
    print(json.dumps(result, indent=1))
    if args.json:
        write_results(args.json, result)
    return result


if __name__ == "__main__":
    main()
