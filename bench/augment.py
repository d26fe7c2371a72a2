"""What augmentation costs: the warp kernel's twins, and training steps with and without
``--augment`` for the recipes' models, interleaved (A B A B ...) on one machine.

``python -m xptrain.bench.augment [--rounds N] [--steps N] [--data-dir DIR]``
"""

import argparse
import json

import numpy as np


def warp_calls(batch=128, calls=20):
    """name -> a callable running ``calls`` warps of a batch of MNIST-sized images."""
    from .. import kernels

    rng = np.random.default_rng(0)
    x = rng.random((batch, 784)).astype(np.float32)
    out = np.empty_like(x)
    theta = np.tile(np.array([1, 0, 0, 0, 1, 0], np.float32), (batch, 1))
    theta = theta + rng.normal(0, 0.15, theta.shape).astype(np.float32)

    def calls_of(ops):
        return lambda: [ops.affine_warp(x, theta, None, 28, 28, out) for _ in range(calls)]

    return {name: calls_of(kernels.resolve("cpu", name)) for name in ("reference", "numba")}


def step_runs(data, backend, recipe, steps):
    """name -> a callable running ``steps`` training steps of ``recipe``, augment on / off."""
    from ..recipes import recipe_values
    from ..train import TrainConfig, Trainer

    out = {}
    for augment in (True, False):
        config = TrainConfig(**{**recipe_values(recipe), "augment": augment})
        t = Trainer(config, data, backend, log=lambda s: None)
        batches = list(t.batches.epoch(0))[:steps]

        def run(t=t, batches=batches):
            for s, idx, labels in batches:
                t.step(idx, labels, t.config.lr, t.batches.step_key(0, s))
        out[f"{recipe} {'augment' if augment else 'plain'}"] = run
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m xptrain.bench.augment")
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--data-dir")
    args = p.parse_args(argv)
    from ..backend import select_backend
    from ..data import load_mnist
    from .timing import interleaved, summary

    rows = {}
    warp = interleaved(warp_calls(), args.rounds)
    for name, v in warp.items():
        rows[f"affine_warp {name} (ms per 128 images)"] = round(summary(v)["median"] / 20 * 1e3,
                                                               3)
    data = load_mnist(args.data_dir, download=False, progress=False)
    for recipe in ("mlp-best", "cnn-best"):
        times = interleaved(step_runs(data, select_backend("cpu"), recipe, args.steps),
                            args.rounds)
        for name, v in times.items():
            rows[f"{name} (ms per step)"] = round(summary(v)["median"] / args.steps * 1e3, 2)
    print(json.dumps({"rounds": args.rounds, "steps": args.steps, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
