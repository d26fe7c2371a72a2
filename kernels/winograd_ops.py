"""The checked public Winograd F(2x2, 3x3) transforms (channels-last; :mod:`.winograd`).

The Numba twins index by the shapes checked here and check no bounds themselves.
"""

import numpy as np

from ._checks import check_float, check_out, check_shape, get_array_module
from .ops import for_array
from .winograd import tiles


def _tiled(h, w, pad, what):
    oh, ow = h + 2 * pad - 2, w + 2 * pad - 2
    if pad < 0 or min(oh, ow) < 1:
        raise ValueError(f"{what}: a 3x3 window with pad={pad} does not fit {h}x{w}")
    th, tw = tiles(oh, ow)
    return oh, ow, th, tw


def winograd_input(x, pad, V=None, impl=None):
    """B^T d B of every 2 x 2 output tile's 4 x 4 window of ``x`` (N, H, W, C), zero-padded
    by ``pad``: returns V (16, T, C), ``V`` if given."""
    xp = get_array_module(x, V)
    x = check_float("x", x, ndim=4)
    n, h, w, c = x.shape
    _, _, th, tw = _tiled(h, w, pad, "winograd_input")
    shape = (16, n * th * tw, c)
    V = xp.empty(shape, x.dtype) if V is None else check_out("V", V, shape, x.dtype, x)
    for_array(impl, x).winograd_input(x, pad, V)
    return V


def winograd_output(M, y, impl=None):
    """y (N, OH, OW, F) = A^T M A of every tile of M (16, T, F), T = N ceil(OH/2)
    ceil(OW/2); ``y`` is written and returned."""
    get_array_module(M, y)
    M = check_float("M", M, ndim=3)
    if y.ndim != 4 or min(y.shape[1:3]) < 1:
        raise ValueError(f"y must be 4-D (N, OH, OW, F), got shape {tuple(y.shape)}")
    n, oh, ow, f = y.shape
    th, tw = tiles(oh, ow)
    check_shape("M", M, (16, n * th * tw, f), M.dtype)
    check_out("y", y, y.shape, M.dtype, M)
    for_array(impl, M).winograd_output(M, y)
    return y


def winograd_output_adjoint(gy, dM=None, impl=None):
    """The adjoint of :func:`winograd_output`: A dY A^T of every 2 x 2 tile of ``gy``
    (N, OH, OW, F): returns dM (16, T, F), ``dM`` if given."""
    xp = get_array_module(gy, dM)
    gy = check_float("gy", gy, ndim=4)
    n, oh, ow, f = gy.shape
    th, tw = tiles(oh, ow)
    shape = (16, n * th * tw, f)
    dM = xp.empty(shape, gy.dtype) if dM is None else check_out("dM", dM, shape, gy.dtype, gy)
    for_array(impl, gy).winograd_output_adjoint(gy, dM)
    return dM


def winograd_input_adjoint(dV, pad, gx, impl=None):
    """The adjoint of :func:`winograd_input`: gx (N, H, W, C) = each tile's B dV B^T summed
    into its window (``gx`` is overwritten and returned)."""
    get_array_module(dV, gx)
    dV = check_float("dV", dV, ndim=3)
    if gx.ndim != 4:
        raise ValueError(f"gx must be 4-D (N, H, W, C), got shape {tuple(gx.shape)}")
    n, h, w, c = gx.shape
    _, _, th, tw = _tiled(h, w, pad, "winograd_input_adjoint")
    check_shape("dV", dV, (16, n * th * tw, c), dV.dtype)
    check_out("gx", gx, gx.shape, dV.dtype, dV)
    for_array(impl, dV).winograd_input_adjoint(dV, pad, gx)
    return gx


def _pooled_shapes(n, oh, ow, f):
    if min(oh, ow) < 2:
        raise ValueError(f"a 2x2 max pooling does not fit a {oh}x{ow} output")
    th, tw = tiles(oh, ow)
    return (16, n * th * tw, f), (n, oh // 2, ow // 2, f)


def winograd_output_pool(M, oh, ow, y, arg, impl=None):
    """The output transform to OH x OW followed by 2 x 2, stride-2 max pooling: y
    (N, OH // 2, OW // 2, F) and ``arg`` (uint8, the window position of the first maximum)
    are written; returns ``y``."""
    get_array_module(M, y, arg)
    M = check_float("M", M, ndim=3)
    if y.ndim != 4:
        raise ValueError(f"y must be 4-D (N, OH // 2, OW // 2, F), got shape {tuple(y.shape)}")
    m_shape, y_shape = _pooled_shapes(y.shape[0], oh, ow, y.shape[3])
    check_shape("M", M, m_shape, M.dtype)
    check_out("y", y, y_shape, M.dtype, M)
    check_shape("arg", arg, y_shape, np.uint8)
    for_array(impl, M).winograd_output_pool(M, oh, ow, y, arg)
    return y


def winograd_output_pool_adjoint(gy, arg, oh, ow, dM=None, impl=None):
    """The adjoint of :func:`winograd_output_pool` for the maxima ``arg``: returns dM
    (16, T, F), ``dM`` if given."""
    xp = get_array_module(gy, arg, dM)
    gy = check_float("gy", gy, ndim=4)
    m_shape, y_shape = _pooled_shapes(gy.shape[0], oh, ow, gy.shape[3])
    check_shape("gy", gy, y_shape, gy.dtype)
    check_shape("arg", arg, y_shape, np.uint8)
    dM = xp.empty(m_shape, gy.dtype) if dM is None else check_out("dM", dM, m_shape, gy.dtype,
                                                                   gy)
    for_array(impl, gy).winograd_output_pool_adjoint(gy, arg, oh, ow, dM)
    return dM
