"""The convolution helpers' twins (im2col, col2im, max pooling) against the reference,
and the shape checks that keep the unchecked twins in bounds."""

import numpy as np
import pytest
from kernel_cases import TOL, case_seed
from xptrain import kernels

CPU_IMPLS = kernels.available("cpu")


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,k,stride,pad", [((2, 5, 7, 1), 3, 1, 1), ((1, 6, 5, 8), 3, 2, 0),
                                                ((3, 4, 4, 16), 2, 2, 1), ((1, 7, 7, 5), 5, 1, 2)])
def test_im2col_col2im_twins(impl, dtype, shape, k, stride, pad):
    rng = np.random.default_rng(case_seed(impl, str(dtype), shape, k, stride, pad))
    x = rng.standard_normal(shape).astype(dtype)
    cols = kernels.im2col(x, k, stride, pad, impl=impl)
    ref = kernels.im2col(x, k, stride, pad, impl="reference")
    np.testing.assert_array_equal(cols, ref)
    g = rng.standard_normal(cols.shape).astype(dtype)
    out, out_ref = np.full(shape, np.nan, dtype), np.full(shape, np.nan, dtype)
    kernels.resolve("cpu", impl).col2im(g, k, stride, pad, out)
    kernels.resolve("cpu", "reference").col2im(g, k, stride, pad, out_ref)
    np.testing.assert_allclose(out, out_ref, **TOL[dtype])
    # adjoint: <im2col(x), g> == <x, col2im(g)>
    assert np.vdot(cols, g) == pytest.approx(np.vdot(x, out), rel=1e-4)


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("shape,k,stride", [((2, 4, 6, 3), 2, 2), ((1, 7, 5, 9), 3, 2),
                                            ((2, 3, 3, 4), 2, 1), ((1, 5, 7, 4), 2, 2),
                                            ((2, 9, 8, 2), 3, 3)])
def test_maxpool_twins(impl, shape, k, stride):
    rng = np.random.default_rng(case_seed(impl, shape, k, stride))
    x = rng.standard_normal(shape).astype(np.float32)
    x[0, 0, 0, 0] = x[0, 0, 1, 0] = 9.0  # a tie: the first maximum wins
    x[-1, 1, 1, -1] = np.nan  # NaN wins its windows, as argmax
    x[-1, 0, 0, 0] = np.inf
    x[0, -1, -1, -1] = -np.inf
    x[-1, -1, :, 0] = np.nan  # a window that is all NaN where the pooling reaches it
    oh, ow = (shape[1] - k) // stride + 1, (shape[2] - k) // stride + 1
    outs = []
    for name in (impl, "reference"):
        y, arg = np.empty((shape[0], oh, ow, shape[3]), np.float32), np.empty(
            (shape[0], oh, ow, shape[3]), np.uint8)
        kernels.resolve("cpu", name).maxpool_forward(x, k, stride, y, arg)
        gx = np.full(shape, np.nan, np.float32)
        kernels.resolve("cpu", name).maxpool_backward(np.ones_like(y), arg, k, stride, gx)
        outs.append((y, arg, gx))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
    assert outs[0][1][0, 0, 0, 0] == 0


def test_window_kernels_refuse_inconsistent_shapes():
    """The Numba twins index by these shapes without bounds checks: the wrappers must stop
    a mismatch before it becomes an out-of-bounds access."""
    x = np.zeros((2, 6, 6, 4), np.float32)
    y, arg = np.zeros((2, 3, 3, 4), np.float32), np.zeros((2, 3, 3, 4), np.uint8)
    with pytest.raises(ValueError, match=r"y must be .* shape \(2, 3, 3, 4\), got float32 "
                                         r"\(2, 4, 3, 4\)"):
        kernels.maxpool_forward(x, 2, 2, np.zeros((2, 4, 3, 4), np.float32), arg)
    with pytest.raises(ValueError, match="arg must be a C-contiguous uint8"):
        kernels.maxpool_forward(x, 2, 2, y, np.zeros((2, 3, 3, 4), np.int64))
    with pytest.raises(ValueError, match=r"gy must be .* shape \(2, 3, 3, 4\)"):
        kernels.maxpool_backward(np.zeros((2, 5, 5, 4), np.float32), arg, 2, 2, x)
    with pytest.raises(ValueError, match=r"gcols must be .* shape \(2, 6, 6, 3, 3, 4\)"):
        kernels.col2im(np.zeros((2, 7, 6, 3, 3, 4), np.float32), 3, 1, 1, x)
    with pytest.raises(ValueError, match="max pool: k=7, stride=7, pad=0 do not fit 6x6"):
        kernels.maxpool_forward(x, 7, 7, y, arg)
