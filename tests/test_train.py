"""Training: determinism, validation split, history, metrics, and real MNIST end to end."""

import numpy as np
import pytest
from xptrain import metrics
from xptrain.kernels import blas
from xptrain.train import TrainConfig, Trainer


def run(data, backend, **kw):
    config = TrainConfig(**{"epochs": 2, "batch_size": 32, "hidden": (32,), **kw})
    t = Trainer(config, data, backend, log=lambda s: None)
    return t, t.fit()


def test_same_seed_same_result(tiny_data, cpu):
    a, ha = run(tiny_data, cpu, dropout=0.2, seed=3)
    b, hb = run(tiny_data, cpu, dropout=0.2, seed=3)
    c, _ = run(tiny_data, cpu, dropout=0.2, seed=4)
    np.testing.assert_array_equal(a.model.params, b.model.params)
    assert [r["train_loss"] for r in ha] == [r["train_loss"] for r in hb]
    assert not np.array_equal(a.model.params, c.model.params)


def test_dropout_masks_come_from_the_step_seed(tiny_data, cpu):
    """A step's masks depend on (seed, epoch, step) alone: the same step drawn twice gives
    the same mask, another step another one."""
    t = Trainer(TrainConfig(epochs=1, batch_size=32, hidden=(32,), dropout=0.5), tiny_data,
                cpu, log=lambda s: None)
    drop = next(layer for layer in t.model.layers if layer.draws)
    x = np.ones((4, 784), np.float32)
    masks = []
    for key in ((0, 0, 5), (0, 0, 5), (0, 0, 6), (0, 1, 5)):
        t.model.forward(x, train=True, seed=t.batches.step_key(*key[1:]))
        masks.append(drop.mask.copy())
    np.testing.assert_array_equal(masks[0], masks[1])
    assert not np.array_equal(masks[0], masks[2]) and not np.array_equal(masks[0], masks[3])


def test_evaluation_output_is_the_callers(tiny_data, cpu):
    """A forward in evaluation returns a new array: the next forward does not overwrite it."""
    t, _ = run(tiny_data, cpu, epochs=1)
    x = np.random.default_rng(0).random((8, 784)).astype(np.float32)
    first = t.model.forward(x)
    kept = first.copy()
    t.model.forward(x[::-1].copy())
    np.testing.assert_array_equal(first, kept)


def test_learns_synthetic_digits(tiny_data, cpu):
    t, history = run(tiny_data, cpu, epochs=8, lr=3e-3)
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert history[-1]["test_accuracy"] > 0.9
    for key in ("epoch", "train_loss", "test_loss", "seconds", "samples_per_second", "lr"):
        assert key in history[-1]


def test_validation_split_reports_val(tiny_data, cpu):
    t, history = run(tiny_data, cpu, val_fraction=0.2)
    assert t.n_train == 240 and t.data.y_eval.shape == (60,)
    assert "val_accuracy" in history[0] and "test_accuracy" not in history[0]


@pytest.mark.parametrize("momentum", [0.9, 0.0])
def test_kernel_modes_follow_the_same_curve(tiny_data, cpu, momentum):
    """Fused and reference kernels give the same run up to float32 rounding, with the
    weights' SGD step folded into backward in the fused run (into the weights, or with
    momentum into their velocity)."""
    kw = dict(epochs=6, activation="sigmoid", optimizer="sgd", lr=0.1, batch_size=16,
              momentum=momentum)
    fused, hf = run(tiny_data, cpu, kernels="fused", **kw)
    assert (fused.optimizer.fold is not None) == (blas.FOUND is not None)
    assert (type(fused.model.layers[0]).__name__, fused.ops.name) == ("WindowedDense", "numba")
    ref, hr = run(tiny_data, cpu, kernels="reference", **kw)
    assert len(hf) * fused.steps_per_epoch >= 100
    np.testing.assert_allclose([r["train_loss"] for r in hf], [r["train_loss"] for r in hr],
                               rtol=1e-4)
    np.testing.assert_allclose(fused.model.params, ref.model.params, rtol=1e-3, atol=1e-5)


def test_config_errors_name_the_value():
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        TrainConfig(batch_size=0).validate()
    with pytest.raises(ValueError, match="val_fraction must be in"):
        TrainConfig(val_fraction=1.0).validate()
    with pytest.raises(ValueError, match="kernels must be one of fused, reference.*'fast'"):
        TrainConfig(kernels="fast").validate()
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        TrainConfig(dropout=1.0).validate()


def test_metrics():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 1, 1, 1, 0, 2])
    conf = metrics.confusion_counts(np, y, p, 3)
    np.testing.assert_array_equal(conf, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    assert metrics.accuracy(conf) == pytest.approx(4 / 6)
    np.testing.assert_allclose(metrics.per_class_accuracy(conf), [0.5, 1.0, 0.5])
    table = metrics.format_per_class(conf)
    assert "    2        2        1    50.00%  0 (1)" in table


@pytest.mark.slow
def test_real_mnist_end_to_end(mnist, cpu):
    """Three epochs of the default recipe on the real data clear 97.5% test accuracy."""
    config = TrainConfig(epochs=3)
    t = Trainer(config, mnist, cpu, log=lambda s: None)
    history = t.fit()
    loss, conf = t.evaluate(t.data.x_test, t.data.y_test)
    assert metrics.accuracy(conf) >= 0.975
    assert conf.sum() == 10000 and loss < 0.1
    assert history[-1]["test_accuracy"] == pytest.approx(metrics.accuracy(conf))
