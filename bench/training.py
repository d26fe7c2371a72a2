"""Training-step and epoch measurements of the engine, and the matmul floor beside them."""

import numpy as np

from ..data import to_pixels
from ..kernels import reference
from ..layers import ColumnWindow
from ..train import TrainConfig, Trainer
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
        self.steps_per_epoch = self.trainer.steps_per_epoch
        self._steps = None
        self.mean_window = self._mean_window(data)

    def _mean_window(self, data):
        """The mean input columns the first layer reads over epoch 0's batches (all of them
        unless it skips zero columns), found on the host copy of the data."""
        t = self.trainer
        if not isinstance(t.model.layers[0], ColumnWindow):
            return float(self.sizes[0])
        order, bs = t.batches.order(0), t.config.batch_size
        spans = [reference.column_window(data.x_train[order[s:s + bs]])
                 for s in range(0, len(order), bs)]
        return float(np.mean([hi - lo for lo, hi in spans]))

    def flops_per_sample(self):
        """Training FLOPs per sample this runner does: :func:`flops_per_sample`, with the
        first layer's two products over its mean column window where it skips zero
        columns."""
        n_in, width = self.sizes[0], self.sizes[1]
        return flops_per_sample(self.sizes) - 2 * 2 * width * (n_in - self.mean_window)

    def train_epoch(self):
        """One full epoch (as in training); the device is synchronized by the loss read."""
        self.trainer.train_epoch(0)

    def train_steps(self, n):
        """``n`` training steps cycling through epoch 0's batches (short measurements)."""
        t = self.trainer
        for _ in range(n):
            step = next(self._steps, None) if self._steps is not None else None
            if step is None:
                self._steps = t.batches.epoch(0)
                step = next(self._steps)
            s, idx, labels = step
            t.step(idx, labels, t.config.lr, t.batches.step_key(0, s))
        self.backend.synchronize()

    def infer(self):
        """Forward pass over the test set (logits stay on the device)."""
        t = self.trainer
        chunk = t.model.eval_rows
        for s in range(0, t.data.y_test.shape[0], chunk):
            t.model.forward(to_pixels(t.data.x_test[s:s + chunk])).argmax(axis=1)
        self.backend.synchronize()

    def accuracy(self):
        from ..metrics import accuracy

        t = self.trainer
        return accuracy(t.evaluate(t.data.x_test, t.data.y_test)[1])


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
