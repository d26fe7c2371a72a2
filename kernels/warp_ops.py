"""The checked public image warp: :func:`affine_warp`, the augmentation's resampler."""

from ._checks import check_float, check_out, check_shape, get_array_module
from .ops import for_array


def affine_warp(x, theta, image_shape, flow=None, out=None, impl=None):
    """Images ``x`` (N, C*h*w) resampled bilinearly (0 outside) at an affine map per image.

    ``theta`` (N, 6): output pixel (row i, column j), centred as u = j - (w-1)/2,
    v = i - (h-1)/2, reads the input at column ``t0 u + t1 v + t2 + (w-1)/2`` and row
    ``t3 u + t4 v + t5 + (h-1)/2`` (the identity is [1, 0, 0, 0, 1, 0]); ``flow`` (N, 2, h*w)
    adds per-pixel column and row offsets (elastic distortion). Returns ``out`` (a new array
    of x's dtype by default), which must not overlap ``x``.
    """
    xp = get_array_module(x, theta, flow, out)
    x = check_float("x", x, ndim=2)
    h, w = (int(s) for s in image_shape)
    if h < 1 or w < 1 or x.shape[1] % (h * w):
        raise ValueError(f"x has {x.shape[1]} features per row, not a multiple of the image "
                         f"size {h}x{w}")
    n = x.shape[0]
    theta = check_float("theta", theta, ndim=2)
    check_shape("theta", theta, (n, 6), theta.dtype)
    if flow is not None:
        flow = check_float("flow", flow, ndim=3)
        check_shape("flow", flow, (n, 2, h * w), x.dtype)
    out = xp.empty(x.shape, x.dtype) if out is None else check_out("out", out, x.shape,
                                                                   x.dtype, x)
    if out is x or (xp.shares_memory(out, x) if xp.__name__ == "numpy" else False):
        raise ValueError("out must not overlap x (each output pixel reads four input pixels)")
    for_array(impl, x).affine_warp(x, theta, flow, h, w, out)
    return out
