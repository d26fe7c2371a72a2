"""CPU (Numba) twins of the convolution helpers: im2col, col2im, max pooling.

Serial loops over contiguous channels-last arrays, as in :mod:`.cpu`; shapes are checked by
the callers (:mod:`.conv_ops`, the layers that allocate the buffers).
"""

import numba
import numpy as np

from . import reference


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _im2col(x, k, s, p, cols):
    n, h, w, c = x.shape
    oh, ow = cols.shape[1], cols.shape[2]
    for a in range(n):
        for y in range(oh):
            for z in range(ow):
                for i in range(k):
                    r = y * s + i - p
                    for j in range(k):
                        q = z * s + j - p
                        dst = cols[a, y, z, i, j]
                        if 0 <= r < h and 0 <= q < w:
                            src = x[a, r, q]
                            for ch in range(c):
                                dst[ch] = src[ch]
                        else:
                            dst[:] = 0


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _col2im(gcols, k, s, p, gx):
    n, h, w, c = gx.shape
    oh, ow = gcols.shape[1], gcols.shape[2]
    gx[:] = 0
    for a in range(n):
        for y in range(oh):
            for z in range(ow):
                for i in range(k):
                    r = y * s + i - p
                    if 0 <= r < h:
                        for j in range(k):
                            q = z * s + j - p
                            if 0 <= q < w:
                                src, dst = gcols[a, y, z, i, j], gx[a, r, q]
                                for ch in range(c):
                                    dst[ch] += src[ch]


# Max pooling compares branch-free (a select per channel, every load and store done), so
# the loop over contiguous channels vectorizes: the general kernel 1.4x and the 2 x 2
# stride-2 one, with its four window positions unrolled, 5x faster than a compare-and-store
# loop (128 x 28 x 28 x 32 float32: 1.87 -> 1.32 and 0.34 ms, 2-core AMD EPYC).


@numba.njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _takes(v, best):
    # v replaces the maximum so far: strictly greater (the first maximum stays), or the
    # first NaN (NaN wins, as argmax)
    return (v > best) | ((v != v) & (best == best))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _maxpool_fwd(x, k, s, y, arg):
    if k == 2 and s == 2:
        _maxpool2_fwd(x, y, arg)
        return
    n, oh, ow, c = y.shape
    for a in range(n):
        for p in range(oh):
            for q in range(ow):
                best, where = y[a, p, q], arg[a, p, q]
                best[:] = x[a, p * s, q * s]
                where[:] = 0
                for i in range(k):
                    for j in range(k):
                        if i == 0 and j == 0:
                            continue
                        src, pos = x[a, p * s + i, q * s + j], np.uint8(i * k + j)
                        for ch in range(c):
                            v, b = src[ch], best[ch]
                            t = _takes(v, b)
                            best[ch] = v if t else b
                            where[ch] = pos if t else where[ch]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _maxpool2_fwd(x, y, arg):
    n, oh, ow, c = y.shape
    for a in range(n):
        for p in range(oh):
            r0, r1 = x[a, 2 * p], x[a, 2 * p + 1]
            for q in range(ow):
                max4(r0[2 * q], r0[2 * q + 1], r1[2 * q], r1[2 * q + 1], y[a, p, q],
                     arg[a, p, q], c)


@numba.njit(inline="always", cache=True, nogil=True, error_model="numpy")
def max4(v0, v1, v2, v3, best, where, n):
    """best[:n], where[:n] = the maximum of v0[:n] ... v3[:n] and its index 0-3, elementwise
    (a 2 x 2 window's four positions in order)."""
    for m in range(n):
        b, w = v0[m], np.uint8(0)
        v = v1[m]
        t = _takes(v, b)
        b, w = (v, np.uint8(1)) if t else (b, w)
        v = v2[m]
        t = _takes(v, b)
        b, w = (v, np.uint8(2)) if t else (b, w)
        v = v3[m]
        t = _takes(v, b)
        b, w = (v, np.uint8(3)) if t else (b, w)
        best[m] = b
        where[m] = w


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _maxpool_bwd(gy, arg, k, s, gx):
    n, oh, ow, c = gy.shape
    if s == k:
        _maxpool_bwd_tiled(gy, arg, k, gx)
        return
    gx[:] = 0
    for a in range(n):
        for p in range(oh):
            for q in range(ow):
                g, where = gy[a, p, q], arg[a, p, q]
                for ch in range(c):
                    m = where[ch]
                    gx[a, p * s + m // k, q * s + m % k, ch] += g[ch]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _maxpool_bwd_tiled(gy, arg, k, gx):
    # Windows do not overlap: write every gx element once (the gradient or 0) instead of
    # zeroing gx and scattering into it (1.6x less memory traffic).
    n, oh, ow, c = gy.shape
    h, w = gx.shape[1], gx.shape[2]
    for a in range(n):
        for p in range(oh):
            for i in range(k):
                for q in range(ow):
                    g, where = gy[a, p, q], arg[a, p, q]
                    for j in range(k):
                        dst = gx[a, p * k + i, q * k + j]
                        pos = i * k + j
                        for ch in range(c):
                            dst[ch] = g[ch] if where[ch] == pos else 0
        gx[a, oh * k:h] = 0  # rows below the last window get no gradient,
        gx[a, :, ow * k:w] = 0  # nor do the columns right of the last window




# Below this many channels the row-of-channels inner loop is too short to beat NumPy's
# strided copies (measured: C = 1 was 5x slower in Numba, C >= 16 was 3.5-9x faster).
MIN_CHANNELS = 4


def im2col(x, k, stride, pad, cols):
    """Same contract as :func:`kernels.reference.im2col`."""
    if x.shape[3] < MIN_CHANNELS:
        return reference.im2col(x, k, stride, pad, cols)
    _im2col(x, k, stride, pad, cols)


def col2im(gcols, k, stride, pad, gx):
    """Same contract as :func:`kernels.reference.col2im`."""
    if gx.shape[3] < MIN_CHANNELS:
        return reference.col2im(gcols, k, stride, pad, gx)
    _col2im(gcols, k, stride, pad, gx)


def maxpool_forward(x, k, stride, y, arg):
    """Same contract as :func:`kernels.reference.maxpool_forward`."""
    _maxpool_fwd(x, k, stride, y, arg)


def maxpool_backward(gy, arg, k, stride, gx):
    """Same contract as :func:`kernels.reference.maxpool_backward`."""
    _maxpool_bwd(gy, arg, k, stride, gx)


def compile_conv(dtype):
    """Compile this file's kernels for ``dtype`` on tiny inputs."""
    img = np.zeros((1, 4, 4, MIN_CHANNELS), dtype)
    cols = np.zeros((1, 4, 4, 3, 3, MIN_CHANNELS), dtype)
    _im2col(img, 3, 1, 1, cols)
    _col2im(cols, 3, 1, 1, img)
    pooled, arg = np.empty((1, 2, 2, MIN_CHANNELS), dtype), np.empty((1, 2, 2, MIN_CHANNELS),
                                                                     np.uint8)
    _maxpool_fwd(img, 2, 2, pooled, arg)
    _maxpool_bwd(pooled, arg, 2, 2, img)
