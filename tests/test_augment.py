"""Augmentation: the affine-warp twins against the reference and against exact warps, the
seeded draws (same per step, N-independent rows), and training with it (never at
evaluation, resumable)."""

import numpy as np
import pytest
from kernel_cases import TOL, case_seed
from xptrain import kernels
from xptrain.augment import Augment, spread_matrix
from xptrain.data import to_pixels
from xptrain.train import TrainConfig, Trainer

CPU_IMPLS = kernels.available("cpu")
IDENTITY = np.array([1, 0, 0, 0, 1, 0], np.float32)


def _batch(rng, n, c, h, w, dtype):
    return rng.random((n, c * h * w)).astype(dtype)


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,c,h,w", [(1, 1, 28, 28), (7, 1, 5, 9), (3, 2, 6, 4), (33, 3, 1, 7)])
@pytest.mark.parametrize("regime", ["mild", "wild", "far", "flow"])
def test_affine_warp_twins(impl, dtype, n, c, h, w, regime):
    rng = np.random.default_rng(case_seed(impl, str(dtype), n, c, h, w, regime))
    x = _batch(rng, n, c, h, w, dtype)
    spread = {"mild": 0.2, "wild": 2.0, "far": 0.1, "flow": 0.3}[regime]
    theta = (IDENTITY + rng.normal(0, spread, (n, 6))).astype(dtype)
    if regime == "far":
        theta[:, 2] += 3 * w  # the whole source lies outside: zeros
    flow = rng.normal(0, 2, (n, 2, h * w)).astype(dtype) if regime == "flow" else None
    got = kernels.affine_warp(x, theta, (h, w), flow, impl=impl)
    ref = kernels.affine_warp(x, theta, (h, w), flow, impl="reference")
    np.testing.assert_allclose(got, ref, rtol=TOL[dtype]["rtol"], atol=1e-5 if
                               dtype == np.float32 else 1e-12)
    if regime == "far":
        assert not got.any()
    assert got.min() >= -1e-6 and got.max() <= x.max() + 1e-5  # a convex blend of pixels


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_affine_warp_exact_maps(impl):
    """The identity copies; an integer shift moves pixels and fills zeros; a quarter turn
    of a square image is a transpose-and-flip (bilinear at integer points is exact)."""
    rng = np.random.default_rng(case_seed("exact", impl))
    x = _batch(rng, 2, 1, 7, 7, np.float32)
    img = x.reshape(2, 7, 7)
    same = kernels.affine_warp(x, np.tile(IDENTITY, (2, 1)), (7, 7), impl=impl)
    np.testing.assert_array_equal(same, x)
    shift = np.tile(IDENTITY, (2, 1))
    shift[:, 2], shift[:, 5] = 2, -1  # read column j + 2, row i - 1
    out = kernels.affine_warp(x, shift, (7, 7), impl=impl).reshape(2, 7, 7)
    np.testing.assert_array_equal(out[:, 1:, :5], img[:, :6, 2:])
    assert not out[:, 0].any() and not out[:, :, 5:].any()
    quarter = np.tile(np.array([0, -1, 0, 1, 0, 0], np.float32), (2, 1))  # source (-v, u)
    out = kernels.affine_warp(x, quarter, (7, 7), impl=impl).reshape(2, 7, 7)
    np.testing.assert_allclose(out, np.rot90(img, k=1, axes=(1, 2)), atol=1e-6)


def test_affine_warp_refuses_bad_arguments():
    x = np.zeros((2, 16), np.float32)
    theta = np.tile(IDENTITY, (2, 1))
    with pytest.raises(ValueError, match="16 features per row, not a multiple of the image "
                                         "size 3x3"):
        kernels.affine_warp(x, theta, (3, 3))
    with pytest.raises(ValueError, match=r"theta must be .* shape \(2, 6\)"):
        kernels.affine_warp(x, theta[:1], (4, 4))
    with pytest.raises(ValueError, match=r"flow must be .* shape \(2, 2, 16\)"):
        kernels.affine_warp(x, theta, (4, 4), np.zeros((2, 2, 15), np.float32))
    with pytest.raises(ValueError, match="must not overlap"):
        kernels.affine_warp(x, theta, (4, 4), out=x)


def test_spread_matrix_is_a_smooth_partition_of_unity():
    m = spread_matrix(28, 28)
    np.testing.assert_allclose(m.sum(axis=0), 1.0, rtol=1e-6)
    assert m.min() >= 0 and m.shape == (16, 784)
    field = (np.arange(16, dtype=np.float32) @ m).reshape(28, 28)  # neighbours differ little
    assert np.abs(np.diff(field, axis=0)).max() < 0.6  # 4 per node row over 9 pixels
    assert np.abs(np.diff(field, axis=1)).max() < 0.2  # 1 per node column


def _augment(elastic=1.0):
    return Augment(np, kernels.resolve("cpu"), (28, 28), 2.0, 12.0, 0.1, 8.0, elastic)


def test_draws_come_from_the_step_key_and_the_rows_of_the_global_batch():
    """The same key warps alike, another key otherwise; rows lo... of a batch warped alone
    equal those rows of the whole batch warped at once (data-parallel ranks)."""
    x = _batch(np.random.default_rng(5), 12, 1, 28, 28, np.float32)
    aug = _augment()
    whole = aug(x, (0, 1, 2)).copy()
    np.testing.assert_array_equal(aug(x, (0, 1, 2)), whole)
    assert not np.allclose(aug(x, (0, 1, 3)), whole)
    part = _augment()(x[4:9].copy(), (0, 1, 2), rows=(4, 12))
    np.testing.assert_allclose(part, whole[4:9], rtol=1e-6, atol=1e-6)
    theta, grid = aug.draw((0, 1, 2), 1000)
    angles = np.degrees(np.arctan2(theta[:, 3], theta[:, 0]))  # no shear in the first column
    assert 11 < np.abs(angles).max() <= 12.0 + 1e-4 and np.abs(theta[:, 2]).max() <= 2.0
    assert grid.shape == (1000, 2, 16) and 0.9 < grid.std() < 1.1


def _trainer(data, cpu, **kw):
    config = TrainConfig(**{"epochs": 2, "batch_size": 32, "hidden": (32,), "augment": True,
                            "elastic": 0.5, **kw})
    return Trainer(config, data, cpu, log=lambda s: None)


def test_training_warps_batches_and_evaluation_does_not(tiny_data, cpu):
    t = _trainer(tiny_data, cpu)
    seen = []
    forward = t.model.forward
    t.model.forward = lambda x, train=False, **kw: (seen.append((train, x.copy())),
                                                    forward(x, train, **kw))[1]
    idx = t.xp.arange(32)
    t.step(idx, t.data.y_train[:32], 0.01, (0, 0, 0))
    t.evaluate(t.data.x_test[:32], t.data.y_test[:32])
    plain = t._gather(idx)
    assert seen[0][0] and not np.allclose(seen[0][1], plain)  # training: warped
    np.testing.assert_array_equal(seen[1][1], to_pixels(t.data.x_test[:32]))  # as it is


@pytest.mark.parametrize("model", ["mlp", "conv4-pool-fc8"])
def test_augmented_runs_repeat_and_learn(tiny_data, cpu, model):
    # the synthetic classes are bars 2.4 rows apart: strengths that keep a bar on its row
    kw = dict(model=model, translate=0.5, rotate=2.0, shear=0.0, elastic=0.2, epochs=3)
    a, b = _trainer(tiny_data, cpu, **kw), _trainer(tiny_data, cpu, **kw)
    plain = _trainer(tiny_data, cpu, **{**kw, "augment": False})
    ha, _, _ = a.fit(), b.fit(), plain.fit()
    np.testing.assert_array_equal(a.model.params, b.model.params)
    assert not np.array_equal(a.model.params, plain.model.params)
    floor = 0.5 if model == "mlp" else 0.25  # the small CNN learns slower (59% unaugmented)
    assert ha[-1]["test_accuracy"] > floor and ha[-1]["train_loss"] < ha[0]["train_loss"]

