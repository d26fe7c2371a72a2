"""The batches of a training run and the tally of their losses.

Each epoch's order is a seeded permutation of the training rows drawn on the host (so a CPU
and a GPU run see the same batches), uploaded once; a step is a slice of it, and the labels
of the whole epoch are gathered once, not per step. Step losses stay on the device and are
summed once per epoch, weighted by each step's row count.
"""

import math

import numpy as np


class Batches:
    """Batch ``s`` of epoch ``e`` for ``n_train`` rows in batches of ``batch_size`` (the last
    one may be short)."""

    def __init__(self, backend, y_train, batch_size, seed):
        self.backend, self.y_train = backend, y_train
        self.n_train, self.batch_size, self.seed = int(y_train.shape[0]), batch_size, seed
        self.steps_per_epoch = math.ceil(self.n_train / batch_size)
        self.rows = [min(batch_size, self.n_train - s * batch_size)
                     for s in range(self.steps_per_epoch)]

    def order(self, epoch):
        """The host permutation of epoch ``epoch`` (0-based)."""
        ss = np.random.SeedSequence([self.seed, epoch, 0])
        return np.random.default_rng(ss).permutation(self.n_train)

    def epoch(self, epoch, first=0):
        """An iterator of ``(step, idx, labels)`` for the steps ``first...`` of ``epoch``:
        device slices of the epoch's order and of its labels, uploaded and gathered here,
        before the first step (so not inside a timed epoch)."""
        perm = self.backend.asarray(self.order(epoch))
        labels = self.backend.xp.take(self.y_train, perm)
        bs = self.batch_size
        return ((s, perm[s * bs:(s + 1) * bs], labels[s * bs:(s + 1) * bs])
                for s in range(first, self.steps_per_epoch))

    def step_key(self, epoch, step):
        """The seed key of one step's random draws (dropout): the same on resume."""
        return (self.seed, epoch, step)


class LossTally:
    """Per-step mean losses on the device, summed (float64) with one host read."""

    def __init__(self, xp, rows):
        self.losses = xp.zeros(len(rows), np.float32)
        self.rows = xp.asarray(np.array(rows, np.float64))

    def record(self, step, loss):
        self.losses[step] = loss  # a device copy: no sync

    def total(self, first, stop):
        """The summed training loss of steps ``first`` to ``stop`` (a host read)."""
        if stop <= first:
            return 0.0
        seg = self.losses[first:stop].astype(np.float64)
        return float(seg @ self.rows[first:stop])


class DeviceData:
    """The training, evaluation and test sets on the device: uint8 pixels uploaded once
    (batches are converted on the device) and int64 labels. With ``val_fraction`` a seeded
    share of the training set is held out as the evaluation set, else the test set is it."""

    def __init__(self, dataset, backend, val_fraction=0.0, seed=0):
        from .data import split_validation

        x_train, y_train = dataset.x_train, dataset.y_train
        if val_fraction:
            x_train, y_train, x_eval, y_eval = split_validation(x_train, y_train,
                                                                val_fraction, seed)
        up = backend.asarray
        self.x_train, self.y_train = up(x_train), up(y_train, dtype=np.int64)
        self.x_test, self.y_test = up(dataset.x_test), up(dataset.y_test, dtype=np.int64)
        self.eval_name = "val" if val_fraction else "test"
        if val_fraction:
            self.x_eval, self.y_eval = up(x_eval), up(y_eval, dtype=np.int64)
        else:  # the test set itself: no second upload
            self.x_eval, self.y_eval = self.x_test, self.y_test
        self.n_train = int(self.y_train.shape[0])
