"""Winograd F(2x2, 3x3) convolution transforms, the plain-xp reference (NumPy and CuPy).

A 3 x 3, stride-1 convolution of (N, H, W, C) channels-last input computes its output in
2 x 2 tiles (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016):

    Y = A^T [(G g G^T) * (B^T d B)] A     (per tile, input channel c and filter f)

with d the tile's 4 x 4 input window, g the 3 x 3 kernel and ``*`` elementwise. Over a
batch the elementwise products summed over channels are 16 matrix products
``M[k] = V[k] @ U[k]`` (k = one of the 4 x 4 transformed positions): 16 * C * F multiplies
per tile where im2col's product does 36 * C * F (2.25x fewer). The transforms are
additions only. Tiles are numbered t = (n * TH + ty) * TW + tx, TH = ceil(OH / 2),
TW = ceil(OW / 2); positions outside the padded input read 0, outputs past OH, OW are
dropped. Backward is the adjoint of each linear step: :func:`winograd_output_adjoint`
(dM = A dY A^T), the products dV = dM U^T and dU = V^T dM, :func:`winograd_input_adjoint`
(B dV B^T summed back into the overlapping windows) and :func:`filter_adjoint`.
"""

import numpy as np

from ._checks import get_array_module

BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)
# (16, 9): U[k = 4 xi + nu] = sum over taps (i, j) of G[xi, i] G[nu, j] g[i, j]
GG = np.einsum("xi,yj->xyij", G, G).reshape(16, 9)


def tiles(oh, ow):
    """Tile rows and columns covering an OH x OW output."""
    return (oh + 1) // 2, (ow + 1) // 2


def _matrix(xp, m, dtype):
    return xp.asarray(m.astype(dtype))


def winograd_input(x, pad, V):
    """V (16, T, C) = B^T d B of every tile's 4 x 4 window d of ``x`` (N, H, W, C) padded
    by ``pad`` (zeros outside); the output is OH = H + 2 pad - 2 by OW = W + 2 pad - 2."""
    xp = get_array_module(x)
    n, h, w, c = x.shape
    th, tw = tiles(h + 2 * pad - 2, w + 2 * pad - 2)
    full = xp.zeros((n, 2 * th + 2, 2 * tw + 2, c), x.dtype)
    rows, cols = min(h, 2 * th + 2 - pad), min(w, 2 * tw + 2 - pad)
    full[:, pad:pad + rows, pad:pad + cols] = x[:, :rows, :cols]
    d = xp.stack([xp.stack([full[:, r:r + 2 * th:2, s:s + 2 * tw:2] for s in range(4)])
                  for r in range(4)])  # (4, 4, N, TH, TW, C)
    bt = _matrix(xp, BT, x.dtype)
    V[...] = xp.einsum("xr,ys,rs...->xy...", bt, bt, d).reshape(16, -1, c)


def winograd_output(M, y):
    """y (N, OH, OW, F) = A^T M A of every tile of M (16, T, F), written."""
    xp = get_array_module(M)
    n, oh, ow, f = y.shape
    th, tw = tiles(oh, ow)
    at = _matrix(xp, AT, M.dtype)
    out = xp.einsum("ax,by,xy...->ab...", at, at, M.reshape(4, 4, n, th, tw, f))
    full = xp.empty((n, 2 * th, 2 * tw, f), M.dtype)
    for a in range(2):
        for b in range(2):
            full[:, a::2, b::2] = out[a, b]
    y[...] = full[:, :oh, :ow]


def winograd_output_adjoint(gy, dM):
    """dM (16, T, F) = A dY A^T of every 2 x 2 tile dY of ``gy`` (N, OH, OW, F) (zeros past
    OH, OW): the adjoint of :func:`winograd_output`."""
    xp = get_array_module(gy)
    n, oh, ow, f = gy.shape
    th, tw = tiles(oh, ow)
    full = xp.zeros((n, 2 * th, 2 * tw, f), gy.dtype)
    full[:, :oh, :ow] = gy
    dy = xp.stack([xp.stack([full[:, a::2, b::2] for b in range(2)]) for a in range(2)])
    at = _matrix(xp, AT, gy.dtype)
    dM[...] = xp.einsum("ax,by,ab...->xy...", at, at, dy).reshape(16, -1, f)


def winograd_output_pool(M, oh, ow, y, arg):
    """:func:`winograd_output` to OH x OW, then 2 x 2 max pooling with stride 2 into
    y (N, OH // 2, OW // 2, F) and its ``arg`` (uint8, window position 2 i + j of the first
    maximum, as :func:`xptrain.kernels.reference.maxpool_forward`). A pooling window is
    one output tile."""
    from .reference import maxpool_forward

    xp = get_array_module(M)
    full = xp.empty((y.shape[0], oh, ow, y.shape[3]), M.dtype)
    winograd_output(M, full)
    maxpool_forward(full, 2, 2, y, arg)


def winograd_output_pool_adjoint(gy, arg, oh, ow, dM):
    """The adjoint of :func:`winograd_output_pool` for the maxima ``arg``: ``gy``
    (N, OH // 2, OW // 2, F) routed to each window's maximum, then
    :func:`winograd_output_adjoint`."""
    from .reference import maxpool_backward

    xp = get_array_module(gy)
    full = xp.empty((gy.shape[0], oh, ow, gy.shape[3]), gy.dtype)
    maxpool_backward(gy, arg, 2, 2, full)
    winograd_output_adjoint(full, dM)


def winograd_input_adjoint(dV, pad, gx):
    """gx (N, H, W, C) = the adjoint of :func:`winograd_input` applied to dV (16, T, C):
    each tile's B dV B^T summed into its window; written."""
    xp = get_array_module(dV)
    n, h, w, c = gx.shape
    th, tw = tiles(h + 2 * pad - 2, w + 2 * pad - 2)
    bt = _matrix(xp, BT, dV.dtype)
    dd = xp.einsum("xr,ys,xy...->rs...", bt, bt, dV.reshape(4, 4, n, th, tw, c))
    full = xp.zeros((n, 2 * th + 2, 2 * tw + 2, c), dV.dtype)
    for r in range(4):
        for s in range(4):
            full[:, r:r + 2 * th:2, s:s + 2 * tw:2] += dd[r, s]
    rows, cols = min(h, 2 * th + 2 - pad), min(w, 2 * tw + 2 - pad)
    gx[...] = 0
    gx[:, :rows, :cols] = full[:, pad:pad + rows, pad:pad + cols]


def filter_transform(W, U):
    """U (16, C, F) = G g G^T of each 3 x 3 kernel in W (9 C, F), taps in (i, j, c) order."""
    xp = get_array_module(W)
    c, f = W.shape[0] // 9, W.shape[1]
    xp.matmul(_matrix(xp, GG, W.dtype), W.reshape(9, c * f), out=U.reshape(16, c * f))


def filter_adjoint(dU, gW):
    """gW (9 C, F) = G^T dU G: the adjoint of :func:`filter_transform`."""
    xp = get_array_module(dU)
    c, f = dU.shape[1], dU.shape[2]
    xp.matmul(_matrix(xp, GG.T, dU.dtype), dU.reshape(16, c * f), out=gW.reshape(9, c * f))
