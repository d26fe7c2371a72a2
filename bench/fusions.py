"""What each kept fusion buys: the benchmark model with one fusion removed at a time (same
data, order and initial weights), as interleaved whole epochs and as interleaved blocks of
steps (every other round in reverse order). Blocks of 50 steps take ~25 ms, so a round of
six sits inside one of this shared host's fast or slow spells, which last seconds: their
medians are the steadier figure.

``python -m xptrain.bench.fusions [--rounds N] [--blocks N] [--steps N] [--threads N]
[--data-dir DIR]``
"""

import argparse
import json


def runners(data, backend, model):
    """name -> EngineRunner: all fusions, and each one removed; then SGD with momentum 0.9
    (the CLI's SGD), with and without its fold."""
    from ..layers import Activation, Linear, WindowedLinear
    from ..model import Sequential
    from ..optim import SGD
    from .training import EngineRunner

    out = {name: EngineRunner(data, backend, "fused", **model, **kw) for name, kw in (
        ("all fusions", {}), ("no column window", {"zero_columns": "read"}),
        ("no fold", {}), ("no bias+activation", {}), ("momentum", {"momentum": 0.9}),
        ("momentum, no fold", {"momentum": 0.9}))}
    t = out["no fold"].trainer
    t.optimizer = SGD(t.model, fold=False)
    t = out["momentum, no fold"].trainer
    t.optimizer = SGD(t.model, 0.9, fold=False)
    t = out["no bias+activation"].trainer
    n_in, width = t.model.n_in, model["hidden"][0]
    m = Sequential([WindowedLinear(n_in, width), Activation(model["activation"]),
                    Linear(width, data.n_classes)], n_in, t.xp, ops=t.ops)
    m.params[...] = t.model.params  # the same slots: weights, then biases
    t.model, t.optimizer = m, SGD(m)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m xptrain.bench.fusions")
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--blocks", type=int, default=201, help="interleaved blocks of steps")
    p.add_argument("--steps", type=int, default=50, help="steps per block")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-dir")
    args = p.parse_args(argv)
    from ..backend import select_backend
    from ..data import load_mnist
    from .harness import MODEL
    from .timing import interleaved, set_threads, summary

    set_threads(args.threads)
    data = load_mnist(args.data_dir, download=False, progress=False)
    rs = runners(data, select_backend("cpu"), MODEL)
    times = interleaved({k: r.train_epoch for k, r in rs.items()}, args.rounds, warmup=1,
                        alternate=True)
    blocks = interleaved({k: (lambda r=r: r.train_steps(args.steps)) for k, r in rs.items()},
                         args.blocks, warmup=1, alternate=True)
    med = {k: summary(v)["median"] for k, v in times.items()}
    step = {k: summary(v)["median"] / args.steps * 1e6 for k, v in blocks.items()}
    rows = {k: {"epoch_seconds": round(v, 4), "vs_all": round(v / med["all fusions"], 3),
                "step_us": round(step[k], 1),
                "step_vs_all": round(step[k] / step["all fusions"], 3),
                "test_accuracy": rs[k].accuracy()} for k, v in med.items()}
    print(json.dumps({"model": MODEL, "threads": args.threads, "rounds": args.rounds,
                      "blocks": args.blocks, "steps_per_block": args.steps, "rows": rows},
                     indent=1))


if __name__ == "__main__":
    main()
