"""This engine against an earlier checkout of it (a tree with top-level ``engine``,
``kernels`` and ``bench`` packages, as before the one-package layout) and PyTorch eager,
epochs interleaved in one process.

``python -m xptrain.bench.against_tree OLD_TREE [--rounds 21] [--threads 2] [--data-dir DIR]``

Two configurations of 784-128-10 sigmoid at batch 128: plain SGD lr 0.1 (the benchmark's
``numpy-fused`` row) and SGD lr 0.5 with momentum 0.9 (``xptrain train --hidden 128
--activation sigmoid --optimizer sgd --lr 0.5``: the CLI's SGD has momentum 0.9). Prints
JSON: each contender's median and best epoch, and from each of the two this tree's time
over the old one's and PyTorch's over each. Whole epochs, interleaved, every other round in
reverse order: taking turns every few steps instead made whoever followed PyTorch pay for
its still-spinning OpenMP threads. Read the medians: on a shared host the best epochs are
single outliers (PyTorch's best momentum epoch came out faster than its best plain one,
which does less work).
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

CONFIGS = {"plain": dict(lr=0.1, momentum=0.0), "momentum": dict(lr=0.5, momentum=0.9)}


def old_packages(tree):
    """The old tree's runner, data loader and backend choice. Imported before PyTorch:
    the old BLAS finder takes the first BLAS library mapped into the process."""
    tree = Path(tree).resolve()
    missing = [name for name in ("engine", "kernels", "bench") if not (tree / name).is_dir()]
    if missing:
        raise SystemExit(f"against_tree: {tree} has no {', '.join(missing)} package folder "
                         "(expected a checkout of the tree before the one-package layout)")
    sys.path.insert(0, str(tree))
    from bench.training import EngineRunner
    from engine.backend import select_backend
    from engine.data import load_mnist
    from kernels import blas  # finds its library now, while only NumPy's is mapped

    from ..kernels import blas as new_blas
    found = getattr(blas, "FOUND", None)
    if found is not None and new_blas.FOUND is not None and found.path != new_blas.FOUND.path:
        raise SystemExit(f"against_tree: the old tree took {found.path}, this one "
                         f"{new_blas.FOUND.path}: two BLAS pools would fight for the cores")
    return EngineRunner, select_backend, load_mnist


def runners(old, data_dir):
    """name -> runner: this tree, the old one and PyTorch eager for each configuration."""
    from ..backend import select_backend
    from ..data import load_mnist
    from .peers import TorchRunner
    from .training import EngineRunner

    OldRunner, old_backend, old_load = old
    new_data = load_mnist(data_dir, download=False, progress=False)
    old_data = old_load(data_dir, download=False, progress=False)
    nb, ob = select_backend("cpu"), old_backend("cpu")
    out = {}
    for name, kw in CONFIGS.items():
        out[f"new {name}"] = EngineRunner(new_data, nb, "fused", **kw)
        out[f"old {name}"] = OldRunner(old_data, ob, "fused", **kw)
        out[f"torch {name}"] = TorchRunner(new_data, "cpu", **kw)
    return out


def ratios(times, stat):
    """Per configuration: this tree's time over the old one's, PyTorch's over each, from the
    statistic ``stat`` of each contender's epochs."""
    t = {k: stat(v) for k, v in times.items()}
    return {name: {"new_over_old_time": round(t[f"new {name}"] / t[f"old {name}"], 3),
                   "torch_over_new": round(t[f"torch {name}"] / t[f"new {name}"], 2),
                   "torch_over_old": round(t[f"torch {name}"] / t[f"old {name}"], 2)}
            for name in CONFIGS}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m xptrain.bench.against_tree")
    p.add_argument("old_tree")
    p.add_argument("--rounds", type=int, default=21)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-dir")
    args = p.parse_args(argv)
    old = old_packages(args.old_tree)
    from .timing import interleaved, set_threads

    set_threads(args.threads)
    rs = runners(old, args.data_dir)
    times = interleaved({k: r.train_epoch for k, r in rs.items()}, args.rounds, warmup=1,
                        alternate=True)
    out = {"rounds": args.rounds, "threads": args.threads,
           "median_epoch_seconds": {k: round(statistics.median(v), 4) for k, v in times.items()},
           "best_epoch_seconds": {k: round(min(v), 4) for k, v in times.items()},
           "from_medians": ratios(times, statistics.median), "from_best": ratios(times, min)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
