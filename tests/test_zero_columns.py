"""Skipping the input columns that are zero in a whole batch: the per-row spans, the first
Linear layer reading a column window, and the trainer's per-step windows. Each is checked
against the same computation over every column."""

import numpy as np
import pytest

import kernels
from engine.data import Dataset, nonzero_spans
from engine.layers import Linear
from engine.model import Sequential
from engine.train import TrainConfig, Trainer


def bordered_images(n, f, seed, blank_rows=3):
    """uint8 rows with a random nonzero window each (a blank border of varying width), and
    ``blank_rows`` all-zero rows among them."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, f), np.uint8)
    for i in range(n):
        lo = int(rng.integers(0, f // 2))
        hi = int(rng.integers(lo + 1, f + 1))
        x[i, lo:hi] = rng.integers(0, 256, hi - lo)  # zeros inside the window too
        x[i, lo], x[i, hi - 1] = 1 + rng.integers(0, 255, 2)
    x[rng.choice(n, blank_rows, replace=False)] = 0
    return x


def bordered_dataset(n_train=200, f=40, seed=0):
    rng = np.random.default_rng(seed + 1)
    x = bordered_images(n_train + 50, f, seed)
    y = rng.integers(0, 10, n_train + 50).astype(np.int64)
    return Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], "bordered", False, 10,
                   (5, 8))


def test_nonzero_spans_per_row():
    x = bordered_images(37, 23, seed=3)
    lo, hi = nonzero_spans(x, chunk=5)  # rows across chunk boundaries
    for i, row in enumerate(x):
        cols = np.flatnonzero(row)
        if cols.size:
            assert (lo[i], hi[i]) == (cols[0], cols[-1] + 1)
        else:
            assert (lo[i], hi[i]) == (23, 0)  # empty: min/max over a batch ignores it
    assert lo.dtype == hi.dtype == np.int32


def _linear(f, n_out, seed):
    model = Sequential([Linear(f, n_out)], f, np, seed=seed, dtype=np.float64)
    return model, model.layers[0]


@pytest.mark.parametrize("mode", ["fused", "reference"])
@pytest.mark.parametrize("window", [(3, 17), (0, 9), (12, 20), (5, 6), (0, 0)])
@pytest.mark.parametrize("fold", [None, (-0.1, 1.0), (-0.1, 0.97)])
def test_linear_window_matches_all_columns(mode, window, fold):
    """Forward, the weight gradient (zero outside the window) or the folded update (decay
    alone outside it) and the input gradient, against the same layer reading every column."""
    kernels.set_mode(mode)
    try:
        rng = np.random.default_rng(7)
        f, lo, hi = 20, *window
        x = np.zeros((6, f))
        x[:, lo:hi] = rng.standard_normal((6, hi - lo))
        gy = rng.standard_normal((6, 4))
        results = []
        for cols in (None, window):
            model, layer = _linear(f, 4, seed=1)
            model.grads[:] = np.nan  # every gradient entry must be written
            layer.fold = fold
            y = layer.forward(x, True, cols).copy()
            gx = layer.backward(gy, need_gx=True)
            results.append((y, gx.copy(), model.params.copy(),
                            model.grads[:f * 4].copy() if fold is None else None))
        (y0, gx0, p0, g0), (y1, gx1, p1, g1) = results
        np.testing.assert_allclose(y1, y0, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(gx1, gx0, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(p1, p0, rtol=1e-12, atol=1e-12)
        if fold is None:
            np.testing.assert_allclose(g1, g0, rtol=1e-12, atol=1e-12)
            assert not g1.reshape(f, 4)[:lo].any() and not g1.reshape(f, 4)[hi:].any()
    finally:
        kernels.set_mode("fused")


def test_window_is_forgotten_by_a_forward_without_one():
    model, layer = _linear(8, 3, seed=0)
    layer.forward(np.zeros((2, 8)), True, (2, 5))
    layer.forward(np.ones((2, 8)), True)
    layer.backward(np.ones((2, 3)), need_gx=False)
    np.testing.assert_array_equal(model.grads[:24].reshape(8, 3), np.full((8, 3), 2.0))


def test_trainer_windows_are_tight_and_cover_each_batch(cpu):
    data = bordered_dataset()
    t = Trainer(TrainConfig(epochs=1, batch_size=16, hidden=(8,), zero_columns="skip"), data,
                cpu, log=lambda s: None)
    order = t._prepare_epoch(0)
    assert len(t.batch_cols) == t.steps_per_epoch == 13
    skipped = 0
    for s, cols in enumerate(t.batch_cols):
        nz = np.flatnonzero(data.x_train[order[s * 16:(s + 1) * 16]].any(axis=0))
        if cols is None:
            assert (nz[0], nz[-1]) == (0, 39)
        else:
            skipped += 1
            assert cols == (nz[0], nz[-1] + 1)
    assert skipped  # the data has blank borders: some batches must have a window


def test_an_all_zero_batch_gets_an_empty_window(cpu):
    data = bordered_dataset(n_train=20)
    data.x_train[:] = 0
    data.x_train[:4, 10] = 9  # rows 0-3 have one nonzero column; the rest are blank
    t = Trainer(TrainConfig(epochs=1, batch_size=1, hidden=(8,), zero_columns="skip"), data,
                cpu, log=lambda s: None)
    order = t._prepare_epoch(0)
    for s, cols in enumerate(t.batch_cols):
        assert cols == ((10, 11) if order[s] < 4 else (0, 0))
    t.fit()  # trains through the empty windows
    assert np.isfinite(t.model.params).all()


@pytest.mark.parametrize("optimizer,weight_decay", [("sgd", 0.0), ("sgd", 0.01),
                                                    ("adam", 0.0)])
def test_training_with_windows_matches_reading_every_column(cpu, optimizer, weight_decay):
    """Same batches, same updates: folded SGD (with and without decay) and Adam."""
    data = bordered_dataset()
    runs = {}
    for zc in ("skip", "read"):
        config = TrainConfig(epochs=2, batch_size=16, hidden=(8,), optimizer=optimizer,
                             momentum=0.0, lr=0.05, weight_decay=weight_decay,
                             activation="sigmoid", zero_columns=zc)
        t = Trainer(config, data, cpu, log=lambda s: None)
        t.fit()
        runs[zc] = t
    skip, read = runs["skip"], runs["read"]
    assert skip._row_spans is not None and read._row_spans is None
    assert any(cols is not None for cols in skip.batch_cols)
    np.testing.assert_allclose(skip.model.params, read.model.params, rtol=1e-4, atol=1e-5)
    assert skip.history[-1]["train_loss"] == pytest.approx(read.history[-1]["train_loss"],
                                                           rel=1e-4)


def test_zero_columns_setting():
    assert TrainConfig().skips_zero_columns("cpu")
    assert not TrainConfig().skips_zero_columns("cuda")  # auto: not measured on a GPU yet
    assert TrainConfig(zero_columns="skip").skips_zero_columns("cuda")
    assert not TrainConfig(zero_columns="read").skips_zero_columns("cpu")
    with pytest.raises(ValueError, match="zero_columns must be one of auto, skip, read, "
                                         "got 'never'"):
        TrainConfig(zero_columns="never").validate()


def test_a_network_not_opening_with_a_linear_reads_every_column(cpu):
    data = bordered_dataset(n_train=40)
    t = Trainer(TrainConfig(epochs=1, batch_size=8, model="conv4-pool-fc8",
                            zero_columns="skip"), data, cpu, log=lambda s: None)
    t._prepare_epoch(0)
    assert t._row_spans is None and t.batch_cols == [None] * 5
    t.fit()
    assert np.isfinite(t.model.params).all()
