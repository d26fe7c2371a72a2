"""Skipping the input columns that are zero in a whole batch: the column-window kernel, the
windowed first layers and training with them, each checked against the same computation
over every column."""

import numpy as np
import pytest
from kernel_cases import case_seed
from xptrain import kernels
from xptrain.data import Dataset
from xptrain.layers import Dense, Linear, WindowedDense, WindowedLinear
from xptrain.model import Sequential
from xptrain.optim import SGD
from xptrain.train import TrainConfig, Trainer


def bordered_images(n, f, seed, blank_rows=3):
    """uint8 rows with a random nonzero window each (a blank border of varying width), and
    ``blank_rows`` all-zero rows among them."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, f), np.uint8)
    for i in range(n):
        lo = int(rng.integers(0, max(f // 2, 1)))
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


def _window_oracle(x):
    cols = np.flatnonzero((x != 0).any(axis=0))
    return (0, 0) if cols.size == 0 else (int(cols[0]), int(cols[-1]) + 1)


@pytest.mark.parametrize("impl", ["reference", "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,f", [(1, 1), (1, 9), (7, 23), (128, 784), (33, 5)])
def test_column_window_kernel(impl, dtype, n, f):
    rng = np.random.default_rng(case_seed(impl, str(dtype), n, f))
    x = bordered_images(n, f, int(rng.integers(1 << 30)), blank_rows=min(3, n)).astype(dtype)
    assert kernels.column_window(x, impl=impl) == _window_oracle(x)
    for lo, hi in ((0, f), (f - 1, f), (0, 1)):
        x2 = np.zeros((n, f), dtype)
        x2[n // 2, lo], x2[0, hi - 1] = -1.5, 2.0
        assert kernels.column_window(x2, impl=impl) == _window_oracle(x2)
    assert kernels.column_window(np.zeros((n, f), dtype), impl=impl) == (0, 0)
    x3 = np.zeros((n, f), dtype)
    x3[-1, f // 2] = np.nan  # NaN is nonzero: it must reach the product
    assert kernels.column_window(x3, impl=impl) == (f // 2, f // 2 + 1)


@pytest.mark.parametrize("mode", ["fused", "reference"])
@pytest.mark.parametrize("span", [(3, 17), (0, 9), (12, 20), (5, 6), (0, 0), (0, 20)])
@pytest.mark.parametrize("windowed,plain", [(WindowedLinear, Linear), (WindowedDense, Dense)])
def test_windowed_layer_matches_all_columns(mode, span, windowed, plain):
    """Forward, the weight gradient (zero outside the window), the bias gradient and the
    input gradient, against the same layer reading every column."""
    lo, hi = span
    rng = np.random.default_rng(case_seed(mode, span, plain.__name__))
    x = np.zeros((6, 20))
    x[:, lo:hi] = rng.standard_normal((6, hi - lo))
    gy = rng.standard_normal((6, 4))
    kw = {"activation": "tanh"} if plain is Dense else {}
    out = []
    for layer in (windowed(20, 4, **kw), plain(20, 4, **kw)):
        model = Sequential([layer], 20, np, seed=1, dtype=np.float64,
                           ops=kernels.resolve("cpu", mode))
        model.params[...] = np.random.default_rng(2).standard_normal(model.n_params)
        model.grads[...] = np.nan  # every gradient entry must be written
        y = model.forward(x, train=True).copy()
        gx = layer.backward(gy.copy(), need_gx=True, sink=model.sink)
        out.append((y, gx.copy(), model.grads.copy()))
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_the_window_follows_each_batch():
    model = Sequential([WindowedLinear(8, 3)], 8, np, seed=0, dtype=np.float64)
    layer = model.layers[0]
    x = np.zeros((2, 8))
    x[:, 2:5] = 1
    model.forward(x, train=True)
    assert layer.rows == (2, 5)
    model.forward(np.ones((2, 8)), train=True)
    assert layer.rows == (0, 8)
    layer.backward(np.ones((2, 3)), need_gx=False, sink=model.sink)
    np.testing.assert_array_equal(model.grads[:24].reshape(8, 3), np.full((8, 3), 2.0))


def test_an_all_zero_batch_trains(cpu):
    data = bordered_dataset(n_train=20)
    data.x_train[:] = 0
    data.x_train[:4, 10] = 9  # rows 0-3 have one nonzero column; the rest are blank
    t = Trainer(TrainConfig(epochs=1, batch_size=1, hidden=(8,), zero_columns="skip",
                            optimizer="sgd", momentum=0.0, weight_decay=0.01), data, cpu,
                log=lambda s: None)
    assert type(t.model.layers[0]) is WindowedDense
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
        if optimizer == "sgd":  # fold the first weight (8 x 40 entries) too
            t.optimizer = SGD(t.model, 0.0, False, weight_decay, fold_min_size=100)
            assert t.optimizer.fold is not None and t.optimizer.fold.n_folded == 320
        t.fit()
        runs[zc] = t
    skip, read = runs["skip"], runs["read"]
    assert type(skip.model.layers[0]) is WindowedDense
    assert type(read.model.layers[0]).__name__ == "Dense"
    np.testing.assert_allclose(skip.model.params, read.model.params, rtol=1e-4, atol=1e-5)
    assert skip.history[-1]["train_loss"] == pytest.approx(read.history[-1]["train_loss"],
                                                           rel=1e-4)


def test_zero_columns_setting():
    assert TrainConfig().skips_zero_columns("cpu")
    assert not TrainConfig().skips_zero_columns("cuda")  # auto: a device read per step there
    assert TrainConfig(zero_columns="skip").skips_zero_columns("cuda")
    assert not TrainConfig(zero_columns="read").skips_zero_columns("cpu")
    with pytest.raises(ValueError, match="zero_columns must be one of auto, skip, read, "
                                         "got 'never'"):
        TrainConfig(zero_columns="never").validate()


def test_a_network_not_opening_with_a_linear_reads_every_column(cpu):
    data = bordered_dataset(n_train=40)
    t = Trainer(TrainConfig(epochs=1, batch_size=8, model="conv4-pool-fc8",
                            zero_columns="skip"), data, cpu, log=lambda s: None)
    assert not any("Windowed" in type(layer).__name__ for layer in t.model.layers)
    t.fit()
    assert np.isfinite(t.model.params).all()
