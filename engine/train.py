"""The training loop, written once against ``xp`` and the resolved kernel ops."""

import math
import signal
import threading
import time
from pathlib import Path

import numpy as np

from . import checkpoint, kernels, parallel
from .augment import Augment
from .backend import is_out_of_memory, out_of_memory_error
from .batches import Batches, DeviceData, LossTally
from .builders import assemble, model_entries
from .config import TrainConfig  # noqa: F401 - part of this module's API
from .data import PIXEL_SCALE, to_pixels
from .losses import SoftmaxCrossEntropy
from .metrics import accuracy, confusion_counts
from .model import Sequential
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
    """Trains a model (MLP or CNN) on a :class:`~xptrain.data.Dataset` with one
    :class:`~xptrain.backend.Backend` and the kernels ``config.kernels`` resolves to."""

    def __init__(self, config, dataset, backend, out_dir=None, log=print, progress=False,
                 group=None):
        self.config, self.backend, self.xp = config.validate(), backend, backend.xp
        self.ops = kernels.resolve(backend.name, config.kernels)
        self.group = parallel.for_device(group or parallel.group(), backend)  # .parallel
        self.log, self.progress, self.dataset = log, progress, dataset
        self.out_dir = Path(out_dir) if out_dir else None
        if self.out_dir and self.group.rank == 0:  # rank 0 writes; fail now, not later
            self.out_dir.mkdir(parents=True, exist_ok=True)
        c = config
        try:
            self.data = DeviceData(dataset, backend, c.val_fraction, c.seed)
            entries = model_entries(c.model, dataset.x_train.shape[1], dataset.image_shape,
                                    c.hidden, dataset.n_classes, c.activation, c.dropout)
            layers = assemble(entries, window=c.skips_zero_columns(backend.name))
            self.model = Sequential(layers, dataset.x_train.shape[1], self.xp, c.seed,
                                    ops=self.ops)
            self.optimizer = make_optimizer(c.optimizer, self.model, c.lr, c.momentum,
                                            c.nesterov, c.weight_decay,
                                            fold=self.group.size == 1)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise out_of_memory_error(exc, c.batch_size, "set-up") from exc
            raise
        self.batches = Batches(backend, self.data.y_train, c.batch_size, c.seed)
        spe = self.steps_per_epoch = self.batches.steps_per_epoch
        self.schedule = Schedule(c.lr, c.schedule, c.epochs * spe, round(c.warmup_epochs * spe),
                                 c.step_epochs * spe, c.gamma)
        self.loss_fn = SoftmaxCrossEntropy(self.xp, self.ops, c.label_smoothing)
        self.augment = Augment.from_config(c, self.xp, self.ops, dataset.image_shape)
        self.epoch, self.step_in_epoch, self.partial_loss, self.history = 0, 0, 0.0, []
        self._stop_requested, self._stop_agreed, self._inputs = False, False, {}
        self.reduce = None
        if self.group.size > 1:
            parallel.broadcast_parameters(self.model, self.group)
            self.reduce = parallel.reducer(self.model, self.group)
        self.compile_seconds = self.ops.compile()

    @property
    def n_train(self):
        return self.data.n_train

    def step(self, idx, labels, lr, key=()):
        """One training step on the rows ``idx`` (a device array) with labels ``labels``
        and learning rate ``lr``; ``key`` seeds its random draws. Returns the 0-d loss."""
        if self.reduce is not None:
            return self._parallel_step(idx, labels, lr, key)
        logits = self.model.forward(self._inputs_of(idx, key), train=True, seed=key)
        loss, gy = self.loss_fn(logits, labels)
        self.optimizer.backward_step(gy, lr)
        return loss

    def _inputs_of(self, idx, key, rows=None):
        """The batch of rows ``idx``: gathered, scaled and, when on, augmented."""
        xb = self._gather(idx)
        return xb if self.augment is None else self.augment(xb, key, rows)

    def _gather(self, idx):
        n = idx.shape[0]
        xb = self._inputs.get(n)
        if xb is None:  # the reusable float32 batch buffer the gather writes
            xb = self._inputs[n] = self.xp.empty((n, self.data.x_train.shape[1]), "float32")
        self.ops.gather_rows(self.data.x_train, idx, PIXEL_SCALE, xb)
        return xb

    def _parallel_step(self, idx, labels, lr, key):
        """This rank's slice of the global batch, the gradients of all ranks reduced, the
        same update on every rank (see :mod:`.parallel`)."""
        total = idx.shape[0]
        lo, hi = parallel.my_rows(total, self.group)
        loss = 0.0
        if hi > lo:
            logits = self.model.forward(self._inputs_of(idx[lo:hi], key, (lo, total)),
                                        train=True, seed=key, rows=(lo, total))
            loss, gy = self.loss_fn(logits, labels[lo:hi])
            self.model.backward(gy)
        else:
            self.model.grads[...] = 0  # no rows here: this rank adds nothing
        mean, self._stop_agreed = self.reduce(hi - lo, loss, self._stop_requested)
        self.optimizer.step(lr)
        return self.xp.asarray(mean, "float32")

    def train_epoch(self, epoch, bar=None):
        """Run epoch ``epoch`` from ``self.step_in_epoch``; return (mean train loss, seconds,
        samples trained)."""
        b, first = self.batches, self.step_in_epoch
        tally = LossTally(self.xp, b.rows)
        steps = b.epoch(epoch, first)
        self.backend.synchronize()
        start = time.perf_counter()
        for s, idx, labels in steps:
            if self._stop_agreed if self.reduce is not None else self._stop_requested:
                self._interrupt(epoch, s, tally.total(first, s))
            lr = self.schedule(epoch * self.steps_per_epoch + s)
            tally.record(s, self.step(idx, labels, lr, b.step_key(epoch, s)))
            if bar is not None:
                bar.update(1)
        total = tally.total(first, self.steps_per_epoch) + self.partial_loss  # the one sync
        seconds = time.perf_counter() - start
        samples = sum(b.rows[first:])
        self.step_in_epoch, self.partial_loss = 0, 0.0
        return total / self.n_train, seconds, samples

    def evaluate(self, x, y):
        """Mean loss and the confusion matrix (host) over ``x, y`` in chunks; sharded over
        data-parallel ranks and reduced."""
        xp, n = self.xp, y.shape[0]
        lo, hi = parallel.my_rows(n, self.group)
        x, y = x[lo:hi], y[lo:hi]
        chunk = min(self.config.eval_batch, self.model.eval_rows)
        loss_sum, preds = xp.zeros((), "float64"), xp.empty(hi - lo, "int64")
        for s in range(0, hi - lo, chunk):
            logits = self.model.forward(to_pixels(x[s:s + chunk]))
            loss_sum += self.loss_fn.summed(logits, y[s:s + chunk])
            preds[s:s + chunk] = logits.argmax(axis=1)
        conf = self.backend.to_host(confusion_counts(xp, y, preds, self.dataset.n_classes))
        if self.group.size > 1:
            buf = self.group.allreduce(np.concatenate([[float(loss_sum)], conf.ravel()]))
            return buf[0] / max(n, 1), buf[1:].astype(np.int64).reshape(conf.shape)
        return float(loss_sum) / max(n, 1), conf

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
        d, name = self.data, self.data.eval_name
        eval_loss, conf = self.evaluate(d.x_eval, d.y_eval)
        n = min(TRAIN_ACCURACY_SAMPLES, self.n_train)
        train_acc = accuracy(self.evaluate(d.x_train[:n], d.y_train[:n])[1])
        row = {"epoch": epoch + 1, "train_loss": train_loss, "train_accuracy": train_acc,
               f"{name}_loss": eval_loss, f"{name}_accuracy": accuracy(conf),
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
        self.log(_format_row(row, name, self.config.epochs))
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

    @property
    def checkpoint_path(self):
        return self.out_dir / "checkpoint.npz" if self.out_dir else None

    def save(self, path=None):
        """Write the checkpoint and the history JSON (atomically); return the path."""
        from .resume import metadata

        path = path or self.checkpoint_path
        if path is None or self.group.rank != 0:  # one writer: rank 0
            return path
        opt_arrays, opt_meta = self.optimizer.state_dict()
        checkpoint.save(path, self.model.state_dict(), opt_arrays, metadata(self, opt_meta))
        checkpoint.write_json(Path(path).parent / "history.json", self.history)
        return path

    @classmethod
    def resume(cls, path, dataset, backend, out_dir=None, overrides=None, **kwargs):
        """Continue the run saved at ``path`` (see :func:`xptrain.resume.resume`)."""
        from .resume import resume

        return resume(cls, path, dataset, backend, out_dir, overrides, **kwargs)


def _install_sigint(trainer):
    """First Ctrl-C: finish the step, save, stop. A second one interrupts at once."""
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
