"""The numba-cuda kernels under the Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1).

Collected only in a pytest process started with the simulator on (see
tests/test_kernels_cudasim.py); tiny shapes, since the simulator runs a few thousand
threads per second.
"""

import os

import numpy as np
import pytest
from kernel_cases import TOL, arrange, case_seed, make_labels, make_logits
from xptrain import kernels

pytestmark = pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") != "1",
                                reason="needs NUMBA_ENABLE_CUDASIM=1 set before Numba loads")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 10), (3, 1), (5, 3), (130, 4)])
@pytest.mark.parametrize("regime", ["normal", "huge", "equal", "nan_row"])
def test_softmax_ce_matches_reference(dtype, shape, regime):
    x = make_logits(shape, dtype, regime, "fortran" if shape[0] == 5 else "c",
                    seed=case_seed(str(dtype), shape, regime))
    t = make_labels(shape[0], shape[1], 3)
    loss, g = kernels.softmax_cross_entropy(x, t, impl="numba-cuda")
    loss_r, g_r = kernels.softmax_cross_entropy(x, t, impl="reference")
    assert g.dtype == dtype and loss.dtype == dtype
    np.testing.assert_allclose(g, g_r, **TOL[dtype])
    np.testing.assert_allclose(loss, loss_r, **TOL[dtype])
    if regime == "nan_row":
        assert np.isnan(g[shape[0] // 2]).all()
        assert np.isfinite(np.delete(g, shape[0] // 2, axis=0)).all()


def test_bad_label_gives_nan_row_not_oob():
    x = np.zeros((3, 4), np.float32)
    rows = np.zeros(3, np.float32)
    kernels.softmax_cross_entropy(x, np.array([1, 4, -1]), row_loss=rows,
                                  impl="numba-cuda", check=False)
    assert np.isfinite(rows[0]) and np.isnan(rows[1:]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (2, 3, 5)])
def test_sigmoid_backward_matches_reference(dtype, shape):
    rng = np.random.default_rng(case_seed(dtype, shape))
    y = rng.random(shape).astype(dtype)
    gy = rng.standard_normal(shape).astype(dtype)
    gx = kernels.sigmoid_backward(gy, y, impl="numba-cuda")
    np.testing.assert_allclose(gx, kernels.sigmoid_backward(gy, y, impl="reference"),
                               **TOL[dtype])
    assert gx.dtype == dtype


@pytest.mark.parametrize("kind", kernels.ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,with_bias", [((1, 1), True), ((7, 3), False), ((2, 3, 5), True)])
def test_bias_activation_and_backward_match_reference(kind, dtype, shape, with_bias):
    rng = np.random.default_rng(case_seed(kind, dtype, shape, with_bias))
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    x.reshape(-1)[0] = np.nan
    x.reshape(-1)[-1] = -np.inf  # relu gives 0, sigmoid 0, tanh -1
    b = rng.standard_normal(shape[-1]).astype(dtype) if with_bias else None
    y, y_r = x.copy(), x.copy()
    kernels.bias_activation(y, b, kind, impl="numba-cuda")
    kernels.bias_activation(y_r, b, kind, impl="reference")
    tol = dict(rtol=4e-6, atol=2e-7) if dtype == np.float32 else TOL[dtype]
    np.testing.assert_allclose(y, y_r, **tol)  # NaN compares equal to NaN here
    gy = rng.standard_normal(shape).astype(dtype)
    gb, gb_r = np.empty(shape[-1], dtype), np.empty(shape[-1], dtype)
    gx = kernels.activation_backward(gy, y_r, kind, bias_grad=gb, impl="numba-cuda")
    gx_r = kernels.activation_backward(gy, y_r, kind, bias_grad=gb_r, impl="reference")
    np.testing.assert_allclose(gx, gx_r, **TOL[dtype])
    np.testing.assert_allclose(gb, gb_r, **TOL[dtype])


@pytest.mark.parametrize("layout", ["fortran", "strided"])
def test_activation_backward_in_place_on_strided_arrays(layout):
    """The GPU twins flatten their arrays: the dispatcher must hand them contiguous ones and
    copy the result back into a strided in-place target and bias_grad, not into a copy."""
    rng = np.random.default_rng(case_seed(layout))
    y = rng.random((6, 5)).astype(np.float32)
    gy0 = rng.standard_normal((6, 5)).astype(np.float32)
    gy = arrange(gy0.copy(), layout)
    gb = np.full(10, np.nan, np.float32)[::2]
    assert kernels.activation_backward(gy, arrange(y.copy(), layout), "sigmoid", out=gy,
                                       bias_grad=gb, impl="numba-cuda") is gy
    expected = gy0 * y * (1 - y)
    np.testing.assert_allclose(gy, expected, **TOL[np.float32])
    np.testing.assert_allclose(gb, expected.sum(axis=0), rtol=1e-5, atol=1e-6)


def test_bias_gradient_sum_keeps_an_infinity():
    y = np.ones((3, 2), np.float32)  # relu' = 1: gx = gy
    gy = np.array([[np.inf, 1], [2, 3], [4, 5]], np.float32)
    gb = np.empty(2, np.float32)
    kernels.activation_backward(gy, y, "relu", bias_grad=gb, impl="numba-cuda")
    np.testing.assert_array_equal(gb, [np.inf, 9])


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, True, 1e-2)])
def test_sgd_update(momentum, nesterov, wd):
    rng = np.random.default_rng(case_seed(momentum, nesterov, wd))
    a = [rng.standard_normal(37).astype(np.float32) for _ in range(3)]
    b = [x.copy() for x in a]
    kernels.sgd_update(*a, 0.1, momentum, nesterov, wd, 20, impl="numba-cuda")
    kernels.sgd_update(*b, 0.1, momentum, nesterov, wd, 20, impl="reference")
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, **TOL[np.float32])


@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_update(decoupled):
    rng = np.random.default_rng(case_seed(decoupled))
    a = [rng.standard_normal(37) for _ in range(3)] + [rng.random(37)]
    b = [x.copy() for x in a]
    kernels.adam_update(*a, 1e-3, 5, weight_decay=1e-2, decoupled=decoupled, n_decay=11,
                        impl="numba-cuda")
    kernels.adam_update(*b, 1e-3, 5, weight_decay=1e-2, decoupled=decoupled, n_decay=11,
                        impl="reference")
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, **TOL[np.float64])


def test_gather_rows():
    x = (np.random.default_rng(case_seed("gather")).random((9, 5)) * 255).astype(np.uint8)
    idx = np.array([8, 0, 3, 9])
    out = kernels.gather_rows(x, idx, 0.5, impl="numba-cuda")
    np.testing.assert_allclose(out[:3], x[[8, 0, 3]] * np.float32(0.5))
    assert np.isnan(out[3]).all()


def test_gemm_on_numpy_arrays_runs_the_reference():
    """The numba-cuda twin's GEMM is cuBLAS (through CuPy); on the simulator's NumPy arrays it
    must give the reference's result, not fail."""
    rng = np.random.default_rng(case_seed("gemm"))
    a, b, out = rng.random((5, 3)), rng.random((3, 4)), rng.random((5, 4))
    expected = 0.5 * out - 2.0 * (a @ b)
    kernels.gemm(a, b, out, -2.0, 0.5, impl="numba-cuda")
    np.testing.assert_allclose(out, expected, **TOL[np.float64])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,c,h,w,flow", [(2, 1, 5, 6, False), (1, 2, 4, 3, True)])
def test_affine_warp_matches_reference(dtype, n, c, h, w, flow):
    rng = np.random.default_rng(case_seed("warp", str(dtype), n, c, h, w, flow))
    x = rng.random((n, c * h * w)).astype(dtype)
    theta = (np.array([1, 0, 0, 0, 1, 0]) + rng.normal(0, 0.4, (n, 6))).astype(dtype)
    f = rng.normal(0, 1.5, (n, 2, h * w)).astype(dtype) if flow else None
    got = kernels.affine_warp(x, theta, (h, w), f, impl="numba-cuda")
    ref = kernels.affine_warp(x, theta, (h, w), f, impl="reference")
    np.testing.assert_allclose(got, ref, rtol=TOL[dtype]["rtol"], atol=1e-5)
