"""The checked public convolution helpers: im2col, col2im and max pooling (channels-last).

The Numba twins index by the shapes checked here and check no bounds themselves.
"""

import numpy as np

from ._checks import (
    check_float,
    check_out,
    check_shape,
    check_writeable,
    get_array_module,
    windows,
)
from .ops import for_array


def im2col(x, k, stride, pad, out=None, impl=None):
    """Columns of every k x k window of channels-last ``x`` (N, H, W, C), zero-padded by
    ``pad``: returns (N, OH, OW, k, k, C), ``out`` if given."""
    xp = get_array_module(x, out)
    x = check_float("x", x, ndim=4)
    n, h, w, c = x.shape
    oh, ow = windows(h, w, k, stride, pad, "im2col")
    shape = (n, oh, ow, k, k, c)
    out = xp.empty(shape, x.dtype) if out is None else check_out("out", out, shape, x.dtype, x)
    for_array(impl, x).im2col(x, k, stride, pad, out)
    return out


def col2im(gcols, k, stride, pad, out, impl=None):
    """The adjoint of :func:`im2col`: sums (N, OH, OW, k, k, C) columns back into ``out``
    (N, H, W, C), which is overwritten."""
    get_array_module(gcols, out)
    gcols = check_float("gcols", gcols, ndim=6)
    if out.ndim != 4:
        raise ValueError(f"out must be 4-D (N, H, W, C), got shape {tuple(out.shape)}")
    n, h, w, c = out.shape
    check_shape("gcols", gcols, (n, *windows(h, w, k, stride, pad, "col2im"), k, k, c),
                gcols.dtype)
    check_out("out", out, out.shape, gcols.dtype, gcols)
    for_array(impl, gcols).col2im(gcols, k, stride, pad, out)
    return out


def maxpool_forward(x, k, stride, y, arg, impl=None):
    """Max pooling of (N, H, W, C) into ``y`` (N, OH, OW, C); ``arg`` (uint8, same shape)
    gets the window position i*k + j of the first maximum."""
    get_array_module(x, y, arg)
    x = check_float("x", x, ndim=4)
    if k * k > 255:
        raise ValueError(f"max pool window {k}x{k} is too large (at most 15x15)")
    n, h, w, c = x.shape
    shape = (n, *windows(h, w, k, stride, 0, "max pool"), c)
    check_shape("y", y, shape, x.dtype)
    check_shape("arg", arg, shape, np.uint8)
    check_writeable("y", y)
    check_writeable("arg", arg)
    for_array(impl, x).maxpool_forward(x, k, stride, y, arg)
    return y


def maxpool_backward(gy, arg, k, stride, gx, impl=None):
    """Route ``gy`` (N, OH, OW, C) to each window's maximum in ``gx`` (N, H, W, C)."""
    get_array_module(gy, arg, gx)
    gy = check_float("gy", gy, ndim=4)
    if gx.ndim != 4:
        raise ValueError(f"gx must be 4-D (N, H, W, C), got shape {tuple(gx.shape)}")
    n, h, w, c = gx.shape
    check_shape("gy", gy, (n, *windows(h, w, k, stride, 0, "max pool"), c), gx.dtype)
    check_shape("arg", arg, gy.shape, np.uint8)
    check_writeable("gx", gx)
    for_array(impl, gy).maxpool_backward(gy, arg, k, stride, gx)
    return gx
