"""The training loop, written once against ``xp``.

The data set is uploaded once (uint8) and converted on the device; each epoch draws a seeded
permutation on the host (so CPU and GPU see the same batches), uploads it once, and gathers
batches on the device. The loss accumulates on the device and is read once per epoch.
"""

import math
import signal
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

import kernels

from . import checkpoint
from .backend import is_out_of_memory, out_of_memory_error
from .config import TrainConfig  # noqa: F401 - part of this module's API
from .data import PIXEL_SCALE, nonzero_spans, to_pixels
from .losses import SoftmaxCrossEntropy, summed_loss
from .metrics import accuracy, confusion_counts
from .model import build_model, from_spec
from .optim import Schedule, make_optimizer


# Train accuracy is measured after each epoch on this many training images (no per-step cost).
TRAIN_ACCURACY_SAMPLES = 10_000


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C: a checkpoint was saved; ``.path`` names it (None without an output dir)."""

    def __init__(self, message, path):
        super().__init__(message)
        self.path = path


class Trainer:
    """Trains a model (MLP or CNN) on a :class:`~engine.data.Dataset` with one
    :class:`~engine.backend.Backend`."""

    def __init__(self, config, dataset, backend, out_dir=None, log=print, progress=False):
        self.config, self.backend, self.xp = config.validate(), backend, backend.xp
        self.log, self.progress = log, progress
        self.out_dir = Path(out_dir) if out_dir else None
        if self.out_dir:
            self.out_dir.mkdir(parents=True, exist_ok=True)  # fail now, not after an epoch
        self.dataset = dataset
        try:
            host_x_train = self._upload(dataset)
            self.model = build_model(config.model, dataset.x_train.shape[1],
                                     dataset.image_shape, config.hidden, dataset.n_classes,
                                     config.activation, config.dropout, self.xp, config.seed)
            self.optimizer = make_optimizer(config.optimizer, self.model, config.lr,
                                            config.momentum, config.nesterov,
                                            config.weight_decay)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise out_of_memory_error(exc, config.batch_size, "set-up") from exc
            raise
        self.steps_per_epoch = math.ceil(self.n_train / config.batch_size)
        total = config.epochs * self.steps_per_epoch
        self.schedule = Schedule(config.lr, config.schedule, total,
                                 round(config.warmup_epochs * self.steps_per_epoch),
                                 config.step_epochs * self.steps_per_epoch, config.gamma)
        self.loss_fn = SoftmaxCrossEntropy()
        self.epoch, self.step_in_epoch, self.partial_loss = 0, 0, 0.0
        self.history = []
        self._stop_requested = False
        self._batches, self._losses = {}, None
        self._row_spans = None  # per training row, its nonzero columns (see _batch_cols)
        if self.model.takes_cols and config.skips_zero_columns(backend.name):
            self._row_spans = nonzero_spans(host_x_train)  # from the host: no device read
        self.batch_cols = [None] * self.steps_per_epoch
        self.compile_seconds = kernels.prepare(backend.name)

    # -- data -------------------------------------------------------------------------
    def _upload(self, d):
        """Put the training, evaluation and test sets on the device; return the host
        training images (after any validation split)."""
        c = self.config
        x_train, y_train = d.x_train, d.y_train
        if c.val_fraction:
            x_train, y_train, x_eval, y_eval = _split(x_train, y_train, c.val_fraction, c.seed)
            self.eval_name = "val"
        else:
            x_eval, y_eval, self.eval_name = d.x_test, d.y_test, "test"
        self.n_train = len(y_train)
        self.x_train, self.y_train = self._to_device(x_train, y_train)
        self.x_test, self.y_test = self._to_device(d.x_test, d.y_test)
        if c.val_fraction:
            self.x_eval, self.y_eval = self._to_device(x_eval, y_eval)
        else:  # the test set itself: no second upload
            self.x_eval, self.y_eval = self.x_test, self.y_test
        return x_train

    def _to_device(self, x_uint8, y):
        """Upload uint8 pixels once; batches are converted to float32 on the device."""
        return self.backend.asarray(x_uint8), self.backend.asarray(y, dtype=np.int64)

    # -- training ---------------------------------------------------------------------
    def _epoch_rng(self, epoch, stream):
        return np.random.SeedSequence([self.config.seed, epoch, stream])

    def _prepare_epoch(self, epoch):
        """Upload the epoch's permutation (returned) and set :attr:`batch_cols` for it;
        reseed dropout so a resume draws the same masks."""
        order = np.random.default_rng(self._epoch_rng(epoch, 0)).permutation(self.n_train)
        for i, layer in enumerate(self.model.dropout_layers()):
            seed = int(self._epoch_rng(epoch, 1 + i).generate_state(1)[0])
            layer.rng = self.xp.random.default_rng(seed)
        self.batch_cols = self._batch_cols(order)
        return self.backend.asarray(order)

    def _batch_cols(self, order):
        """Per step of an epoch in ``order``: the window ``(lo, hi)`` of columns that are
        nonzero in some row of the batch, for the first layer to read alone (None: all of
        them, or this run does not skip). Host work once per epoch: no device sync."""
        steps = [None] * self.steps_per_epoch
        if self._row_spans is None:
            return steps
        lo, hi = self._row_spans
        starts = np.arange(0, self.n_train, self.config.batch_size)
        n_in = self.x_train.shape[1]
        for s, (a, b) in enumerate(zip(np.minimum.reduceat(lo[order], starts).tolist(),
                                        np.maximum.reduceat(hi[order], starts).tolist())):
            if a > 0 or b < n_in:
                steps[s] = (a, b) if a < b else (0, 0)  # (0, 0): an all-zero batch
        return steps

    def _skip_dropout_draws(self, steps):
        """Replay the dropout draws of ``steps`` already-done batches (resume mid-epoch)."""
        layers = [layer for layer in self.model.dropout_layers() if layer.p > 0]
        if not layers or not steps:
            return
        shapes = self._dropout_sample_shapes(layers)
        bs = self.config.batch_size
        for s in range(steps):
            n = min(bs, self.n_train - s * bs)
            for layer in layers:
                layer.draw((n,) + shapes[id(layer)], np.dtype(np.float32))

    def _dropout_sample_shapes(self, layers):
        """Per-sample input shape of each dropout layer, from a one-row forward pass drawn
        from throwaway generators (any layer stack: dense or convolutional)."""
        saved = [layer.rng for layer in layers]
        for layer in layers:
            layer.rng = self.xp.random.default_rng(0)
        self.model.forward(to_pixels(self.x_train[:1]), train=True)
        shapes = {id(layer): tuple(layer.mask.shape[1:]) for layer in layers}
        for layer, rng in zip(layers, saved):
            layer.rng = rng
        return shapes

    def train_epoch(self, epoch, bar=None):
        """Run one epoch from ``self.step_in_epoch``; return (mean train loss, seconds,
        samples trained)."""
        xp, bs = self.xp, self.config.batch_size
        perm = self._prepare_epoch(epoch)
        cols = self.batch_cols
        labels = xp.take(self.y_train, perm)  # once per epoch, not a gather per step
        self._skip_dropout_draws(self.step_in_epoch)
        losses = self._step_losses()
        first = self.step_in_epoch
        self.backend.synchronize()
        start = time.perf_counter()
        for s in range(first, self.steps_per_epoch):
            if self._stop_requested:
                self._interrupt(epoch, s, self._loss_sum(losses, first, s))
            loss = self.step(perm[s * bs:(s + 1) * bs],
                             self.schedule(epoch * self.steps_per_epoch + s),
                             labels[s * bs:(s + 1) * bs], cols[s])
            losses[s] = loss  # one device copy; summed once per epoch
            if bar is not None:
                bar.update(1)
        # the epoch's one host sync
        total = self._loss_sum(losses, first, self.steps_per_epoch) + self.partial_loss
        seconds = time.perf_counter() - start
        samples = self.n_train - min(first * bs, self.n_train)
        self.step_in_epoch, self.partial_loss = 0, 0.0
        return total / self.n_train, seconds, samples

    def _step_losses(self):
        """The per-step mean losses of an epoch (reused), and each step's row count."""
        if self._losses is None:
            bs, n = self.config.batch_size, self.n_train
            rows = [min(bs, n - s * bs) for s in range(self.steps_per_epoch)]
            self._losses = self.xp.zeros(self.steps_per_epoch, np.float32)
            self._rows = self.xp.asarray(np.array(rows, np.float64))
        return self._losses

    def _loss_sum(self, losses, first, stop):
        """Summed training loss of steps ``first`` to ``stop`` (float64; a host read)."""
        return float(self.xp.dot(losses[first:stop].astype(np.float64), self._rows[first:stop]))

    def step(self, idx, lr, labels=None, cols=None):
        """One training step on the rows ``idx`` (a device array) whose labels are
        ``labels`` (looked up when not given); returns the 0-d loss. ``cols = (lo, hi)``:
        the batch is zero outside those columns (:attr:`batch_cols`), so the first layer
        reads only them."""
        xb = kernels.gather_rows(self.x_train, idx, PIXEL_SCALE, out=self._batch(idx))
        logits = self.model.forward(xb, train=True, cols=cols)
        if labels is None:
            labels = self.xp.take(self.y_train, idx)
        loss, gy = self.loss_fn(logits, labels)
        fold = self.optimizer.fold_factors(lr)
        self.model.backward(gy, fold)
        self.optimizer.step(lr, folded=fold is not None)
        return loss

    def _batch(self, idx):
        """The reusable float32 batch buffer for a batch of ``len(idx)`` rows."""
        n = idx.shape[0]
        if self._batches.get(n) is None:
            self._batches[n] = self.xp.empty((n, self.x_train.shape[1]), np.float32)
        return self._batches[n]

    def evaluate(self, x, y):
        """Mean loss and the confusion matrix (host) over ``x, y`` in chunks."""
        xp, n, chunk = self.xp, y.shape[0], min(self.config.eval_batch, self.model.eval_chunk)
        loss_sum = xp.zeros((), np.float64)
        preds = xp.empty(n, np.int64)
        for s in range(0, n, chunk):
            logits = self.model.forward(to_pixels(x[s:s + chunk]), train=False)
            loss_sum += summed_loss(logits, y[s:s + chunk])
            preds[s:s + chunk] = logits.argmax(axis=1)
        conf = confusion_counts(xp, y, preds, self.dataset.n_classes)
        return float(loss_sum) / max(n, 1), self.backend.to_host(conf)

    def fit(self):
        """Train the remaining epochs; return the history (a list of per-epoch dicts)."""
        old = _install_sigint(self)
        try:
            for epoch in range(self.epoch, self.config.epochs):
                self._run_epoch(epoch)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise out_of_memory_error(exc, self.config.batch_size) from exc
            raise
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)
        return self.history

    def _run_epoch(self, epoch):
        bar = self._bar(epoch)
        train_loss, seconds, samples = self.train_epoch(epoch, bar)
        if bar is not None:
            bar.close()
        eval_loss, conf = self.evaluate(self.x_eval, self.y_eval)
        n = min(TRAIN_ACCURACY_SAMPLES, self.n_train)
        train_acc = accuracy(self.evaluate(self.x_train[:n], self.y_train[:n])[1])
        row = {"epoch": epoch + 1, "train_loss": train_loss, "train_accuracy": train_acc,
               f"{self.eval_name}_loss": eval_loss, f"{self.eval_name}_accuracy": accuracy(conf),
               "seconds": seconds, "samples_per_second": samples / seconds if seconds else None,
               "lr": self.schedule((epoch + 1) * self.steps_per_epoch - 1)}
        if not (math.isfinite(train_loss) and math.isfinite(eval_loss)):
            last = self.checkpoint_path if self.epoch else None
            raise TrainingDiverged(
                f"the loss became {train_loss if not math.isfinite(train_loss) else eval_loss}"
                f" in epoch {epoch + 1}: lower the learning rate (--lr, now {self.config.lr})"
                ", add warm-up (--warmup) or use a smaller batch; "
                + (f"last good checkpoint: {last}" if last else "no checkpoint was written"))
        self.history.append(row)
        self.epoch = epoch + 1
        self.log(_format_row(row, self.eval_name, self.config.epochs))
        self.save()

    def _bar(self, epoch):
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch, leave=False,
                    desc=f"epoch {epoch + 1}/{self.config.epochs}", unit="step")

    def _interrupt(self, epoch, step, loss_sum):
        self.epoch, self.step_in_epoch = epoch, step
        self.partial_loss += loss_sum
        path = self.save()
        where = f"epoch {epoch + 1}, step {step}/{self.steps_per_epoch}"
        msg = (f"interrupted at {where}; checkpoint saved to {path}; continue with "
               f"--resume {path}" if path else f"interrupted at {where} (no --out, not saved)")
        raise TrainingInterrupted(msg, path)

    # -- checkpoints ------------------------------------------------------------------
    @property
    def checkpoint_path(self):
        return self.out_dir / "checkpoint.npz" if self.out_dir else None

    def save(self, path=None):
        """Write the checkpoint and the history JSON (atomically); return the path."""
        path = path or self.checkpoint_path
        if path is None:
            return None
        opt_arrays, opt_meta = self.optimizer.state_dict()
        checkpoint.save(path, self.model.state_dict(), opt_arrays, self.metadata(opt_meta))
        checkpoint.write_json(Path(path).parent / "history.json", self.history)
        return path

    def metadata(self, opt_meta=None):
        return {"model": self.model.spec(), "config": _jsonable(asdict(self.config)),
                "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                "partial_loss": self.partial_loss, "optimizer": opt_meta or {},
                "history": self.history, "n_classes": self.dataset.n_classes,
                "image_shape": list(self.dataset.image_shape),
                "data": self.dataset.describe(), "versions": versions(),
                "device": self.backend.name, "kernels": kernels.get_mode()}

    @classmethod
    def resume(cls, path, dataset, backend, out_dir=None, **kwargs):
        """Rebuild a trainer from a checkpoint and continue where it stopped."""
        params, optim, meta = checkpoint.load(path)
        config = TrainConfig.from_dict(meta["config"])
        trainer = cls(config, dataset, backend, out_dir or Path(path).parent, **kwargs)
        expected = from_spec(meta["model"], np).spec()
        if expected != trainer.model.spec():
            raise checkpoint.CheckpointError(f"{path}: its model does not match its config")
        trainer.model.load_state_dict(params)
        trainer.optimizer.load_state_dict(optim, meta["optimizer"])
        trainer.epoch, trainer.step_in_epoch = meta["epoch"], meta["step_in_epoch"]
        trainer.partial_loss, trainer.history = meta["partial_loss"], meta["history"]
        return trainer


def _split(x, y, fraction, seed):
    from .data import split_validation

    return split_validation(x, y, fraction, seed)


def _install_sigint(trainer):
    """First Ctrl-C: finish the step, save, stop. A second one interrupts at once."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        if trainer._stop_requested:
            raise KeyboardInterrupt
        trainer._stop_requested = True

    return signal.signal(signal.SIGINT, handler)


def _format_row(row, eval_name, epochs):
    return (f"epoch {row['epoch']:>3}/{epochs}  train_loss {row['train_loss']:.4f}  "
            f"{eval_name}_loss {row[f'{eval_name}_loss']:.4f}  "
            f"{eval_name}_acc {row[f'{eval_name}_accuracy'] * 100:.2f}%  "
            f"{row['seconds']:.2f}s  {row['samples_per_second'] or 0:,.0f} samples/s")


def _jsonable(d):
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def versions():
    import platform

    import numba

    from . import __version__

    return {"xptrain": __version__, "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__}
