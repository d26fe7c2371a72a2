"""Training-step and epoch measurements of the engine, and the matmul floor beside them."""

import numpy as np

import kernels

from engine.data import to_pixels
from engine.train import TrainConfig, Trainer

from .timing import interleaved, samples, summary


def flops_per_sample(sizes):
    """Training FLOPs per sample of an MLP with layer widths ``sizes`` (multiply-add = 2).

    Forward x @ W, backward x.T @ gy and gy @ W.T per layer, except gx of the first layer.
    """
    pairs = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 2 * (3 * sum(pairs) - pairs[0])


def runner_name(device, mode, zero_columns="auto"):
    """The benchmark's name of the engine on ``device`` in kernel ``mode``: numpy-fused,
    cupy-reference, ...; "-dense" / "-skip" where zero columns are read / skipped by choice
    rather than by the device's default."""
    suffix = {"auto": "", "read": "-dense", "skip": "-skip"}[zero_columns]
    return f"{'numpy' if device == 'cpu' else 'cupy'}-{mode}{suffix}"


class EngineRunner:
    """The engine on one backend with one kernel mode, for the benchmark harness."""

    def __init__(self, data, backend, mode, hidden=(128,), activation="sigmoid",
                 optimizer="sgd", lr=0.1, batch_size=128, momentum=0.0, model="mlp",
                 zero_columns="auto"):
        self.name = runner_name(backend.name, mode, zero_columns)
        self.device, self.backend = backend.name, backend
        config = TrainConfig(epochs=1, hidden=tuple(hidden), activation=activation,
                             optimizer=optimizer, lr=lr, momentum=momentum,
                             batch_size=batch_size, schedule="constant", kernels=mode,
                             model=model, zero_columns=zero_columns)
        self.trainer = Trainer(config, data, backend, log=lambda s: None)
        self.compile_seconds = self.trainer.compile_seconds
        self.sizes = [data.x_train.shape[1], *hidden, data.n_classes]
        self.n_train = self.trainer.n_train
        self._perm = self.trainer._prepare_epoch(0)
        self._cols = self.trainer.batch_cols
        self._labels = backend.xp.take(self.trainer.y_train, self._perm)
        self._step = 0

    def flops_per_sample(self):
        """Training FLOPs per sample this runner does: :func:`flops_per_sample`, with the
        first layer's two products over the mean column window of an epoch's batches where
        it skips zero columns."""
        n_in, width = self.sizes[0], self.sizes[1]  # every window None: all n_in columns
        windows = [n_in if c is None else c[1] - c[0] for c in self._cols]
        return flops_per_sample(self.sizes) - 2 * 2 * width * (n_in - float(np.mean(windows)))

    def set_mode(self):
        kernels.set_mode(self.trainer.config.kernels)

    def train_epoch(self):
        """One full epoch (as in training); the device is synchronized by the loss read."""
        self.set_mode()
        self.trainer.train_epoch(0)

    def train_steps(self, n):
        """``n`` training steps cycling through one permutation (for short measurements)."""
        self.set_mode()
        t, bs = self.trainer, self.trainer.config.batch_size
        steps = t.steps_per_epoch
        for _ in range(n):
            s = self._step % steps
            t.step(self._perm[s * bs:(s + 1) * bs], t.config.lr, self._labels[s * bs:(s + 1) * bs],
                   self._cols[s])
            self._step += 1
        self.backend.synchronize()

    def infer(self):
        """Forward pass over the test set (logits stay on the device)."""
        self.set_mode()
        t = self.trainer
        chunk = t.model.eval_chunk
        for s in range(0, t.y_test.shape[0], chunk):
            t.model.forward(to_pixels(t.x_test[s:s + chunk]), train=False).argmax(axis=1)
        self.backend.synchronize()

    def accuracy(self):
        from engine.metrics import accuracy

        return accuracy(self.trainer.evaluate(self.trainer.x_test, self.trainer.y_test)[1])


def matmul_step(backend, sizes, batch):
    """A callable doing just the matrix products of one training step at ``batch``."""
    xp, rng = backend.xp, np.random.default_rng(0)
    mats = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        x = xp.asarray(rng.random((batch, n_in), np.float32))
        w = xp.asarray(rng.random((n_in, n_out), np.float32))
        gy = xp.asarray(rng.random((batch, n_out), np.float32))
        mats.append((x, w, gy, xp.empty((batch, n_out), np.float32),
                     xp.empty((n_in, n_out), np.float32), xp.empty((batch, n_in), np.float32)))

    def step():
        for k, (x, w, gy, y, gw, gx) in enumerate(mats):
            xp.matmul(x, w, out=y)
            xp.matmul(x.T, gy, out=gw)
            if k:
                xp.matmul(gy, w.T, out=gx)
    return step


def gemm_rate(backend, n=2048, repeats=10):
    """Measured float32 matrix-product rate (FLOP/s) of a large square product."""
    xp, rng = backend.xp, np.random.default_rng(1)
    a = xp.asarray(rng.random((n, n), np.float32))
    b = xp.asarray(rng.random((n, n), np.float32))
    out = xp.empty((n, n), np.float32)
    t = summary(samples(lambda: xp.matmul(a, b, out=out), repeats, warmup=2,
                        sync=backend.synchronize))["median"]
    return 2 * n**3 / t


def step_breakdown(runner, batch, repeats=300):
    """Step time, matmul-only time (interleaved, same rounds) and the non-matmul share."""
    mm = matmul_step(runner.backend, runner.sizes, batch)

    def only_matmuls():
        mm()
        runner.backend.synchronize()

    times = interleaved({"step": lambda: runner.train_steps(1), "matmul": only_matmuls},
                        repeats, warmup=20)
    step, mm_s = summary(times["step"])["median"], summary(times["matmul"])["median"]
    return {"config": runner.name, "batch": batch, "step_us": step * 1e6,
            "matmul_us": mm_s * 1e6, "non_matmul_share": max(step - mm_s, 0) / step}
