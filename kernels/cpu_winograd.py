"""CPU (Numba) twins of the Winograd F(2x2, 3x3) transforms of :mod:`.winograd`.

Every loop runs over a contiguous range with a load or two and one store, so LLVM
vectorizes it without giving up on aliasing checks (a loop over one tile's channels with
its 16 loads and 16 stores stayed scalar: 3-6 ms a transform for 128 x 14 x 14 x 32, now
about 1). The trick is the layout of one image at a time: padded, with the pixel columns
split by parity (column q at phase q % 2, index q // 2), the four window columns of the
tiles tx = 0, 1, ... are four contiguous runs, so a transform over a whole row of tiles is
a few long loops. Shapes are checked by the callers (the layer that allocates the
buffers, :mod:`.conv_ops`).
"""

import numba
import numpy as np

from .cpu_conv import max4
from .winograd import tiles

_JIT = dict(cache=True, nogil=True, error_model="numpy")


@numba.njit(inline="always", **_JIT)
def _runs(A, xi, t0, tw):
    # planes 4 xi ... 4 xi + 3 of A (16, T, C) over the tiles t0 ... t0 + tw, flat
    return (A[4 * xi, t0:t0 + tw].reshape(-1), A[4 * xi + 1, t0:t0 + tw].reshape(-1),
            A[4 * xi + 2, t0:t0 + tw].reshape(-1), A[4 * xi + 3, t0:t0 + tw].reshape(-1))


@numba.njit(**_JIT)
def _split(x, a, pad, P):
    # P (Hp, 2, U, C) = image a zero-padded, column q + pad at (phase, index) = divmod
    h, w = x.shape[1], x.shape[2]
    P[:] = 0
    for r in range(min(h, P.shape[0] - pad)):
        for q in range(min(w, 2 * P.shape[2] - pad)):
            qq = q + pad
            P[r + pad, qq % 2, qq // 2] = x[a, r, q]


@numba.njit(**_JIT)
def _unsplit(P, a, pad, gx):
    # gx[a] = the unpadded part of P (the adjoint of _split)
    h, w = gx.shape[1], gx.shape[2]
    gx[a] = 0
    for r in range(min(h, P.shape[0] - pad)):
        for q in range(min(w, 2 * P.shape[2] - pad)):
            qq = q + pad
            gx[a, r, q] = P[r + pad, qq % 2, qq // 2]


@numba.njit(**_JIT)
def _input(x, pad, th, tw, V):
    n, c = x.shape[0], x.shape[3]
    P = np.empty((2 * th + 2, 2, tw + 1, c), x.dtype)
    R = np.empty((4, 2 * (tw + 1) * c), x.dtype)
    half, span = (tw + 1) * c, tw * c
    pf = P.reshape(2 * th + 2, 2 * half)
    for a in range(n):
        _split(x, a, pad, P)
        for ty in range(th):  # rows: B^T d over the tile row's four padded rows
            d0, d1, d2, d3 = pf[2 * ty], pf[2 * ty + 1], pf[2 * ty + 2], pf[2 * ty + 3]
            for m in range(2 * half):
                R[0, m] = d0[m] - d2[m]
            for m in range(2 * half):
                R[1, m] = d1[m] + d2[m]
            for m in range(2 * half):
                R[2, m] = d2[m] - d1[m]
            for m in range(2 * half):
                R[3, m] = d1[m] - d3[m]
            t0 = (a * th + ty) * tw
            for xi in range(4):  # columns: (B^T d) B; window columns 2tx + 0, 1, 2, 3
                row = R[xi]
                e0, e1 = row[0:span], row[half:half + span]
                e2, e3 = row[c:c + span], row[half + c:half + c + span]
                v0, v1, v2, v3 = _runs(V, xi, t0, tw)
                for m in range(span):
                    v0[m] = e0[m] - e2[m]
                for m in range(span):
                    v1[m] = e1[m] + e2[m]
                for m in range(span):
                    v2[m] = e2[m] - e1[m]
                for m in range(span):
                    v3[m] = e1[m] - e3[m]


@numba.njit(**_JIT)
def _output_row(M, t0, tw, S, Y):
    # Y (2, 2, tw, F) = the output of the tiles t0 ... t0 + tw: (row, column parity, tx)
    span = S.shape[2]
    yf = Y.reshape(2, 2, span)
    for xi in range(4):  # columns: M A, A's columns (1, 1, 1, 0) and (0, 1, -1, -1)
        m0, m1, m2, m3 = _runs(M, xi, t0, tw)
        s0, s1 = S[xi, 0], S[xi, 1]
        for m in range(span):
            s0[m] = m0[m] + m1[m] + m2[m]
        for m in range(span):
            s1[m] = m1[m] - m2[m] - m3[m]
    for b in range(2):  # rows: A^T (M A)
        for m in range(span):
            yf[0, b, m] = S[0, b, m] + S[1, b, m] + S[2, b, m]
        for m in range(span):
            yf[1, b, m] = S[1, b, m] - S[2, b, m] - S[3, b, m]


@numba.njit(**_JIT)
def _output(M, th, tw, y):
    n, oh, ow, f = y.shape
    S = np.empty((4, 2, tw * f), y.dtype)
    Y = np.empty((2, 2, tw, f), y.dtype)
    for a in range(n):
        for ty in range(th):
            _output_row(M, (a * th + ty) * tw, tw, S, Y)
            for i in range(min(2, oh - 2 * ty)):
                for q in range(ow):
                    y[a, 2 * ty + i, q] = Y[i, q % 2, q // 2]


@numba.njit(**_JIT)
def _output_pool(M, th, tw, y, arg):
    # each whole tile is a 2 x 2 pooling window: its maximum and position, never the
    # output itself
    n, ph, pw, f = y.shape
    S = np.empty((4, 2, tw * f), y.dtype)
    Y = np.empty((2, 2, tw * f), y.dtype)
    for a in range(n):
        for ty in range(ph):
            _output_row(M, (a * th + ty) * tw, tw, S, Y.reshape(2, 2, tw, f))
            max4(Y[0, 0], Y[0, 1], Y[1, 0], Y[1, 1], y[a, ty].reshape(-1),
                 arg[a, ty].reshape(-1), pw * f)


@numba.njit(**_JIT)
def _adjoint_row(g, E, dM, t0, tw):
    # dM of the tiles t0 ... t0 + tw from their output gradient g (2, 2 * tw * F)
    span = E.shape[2]
    ef = E.reshape(4, 2 * span)
    g0, g1 = g[0], g[1]  # rows: A dY, A's rows (1, 0) (1, 1) (1, -1) (0, -1)
    for m in range(2 * span):
        ef[0, m] = g0[m]
    for m in range(2 * span):
        ef[1, m] = g0[m] + g1[m]
    for m in range(2 * span):
        ef[2, m] = g0[m] - g1[m]
    for m in range(2 * span):
        ef[3, m] = -g1[m]
    for xi in range(4):  # columns: (A dY) A^T
        e0, e1 = E[xi, 0], E[xi, 1]
        d0, d1, d2, d3 = _runs(dM, xi, t0, tw)
        for m in range(span):
            d0[m] = e0[m]
        for m in range(span):
            d1[m] = e0[m] + e1[m]
        for m in range(span):
            d2[m] = e0[m] - e1[m]
        for m in range(span):
            d3[m] = -e1[m]


@numba.njit(**_JIT)
def _output_adjoint(gy, th, tw, dM):
    n, oh, ow, f = gy.shape
    g = np.zeros((2, 2, tw, f), gy.dtype)  # (row, column parity, tx, f); zeros past OH, OW
    E = np.empty((4, 2, tw * f), gy.dtype)
    for a in range(n):
        for ty in range(th):
            for i in range(2):
                if 2 * ty + i < oh:
                    for q in range(ow):
                        g[i, q % 2, q // 2] = gy[a, 2 * ty + i, q]
                else:
                    g[i] = 0
            _adjoint_row(g.reshape(2, -1), E, dM, (a * th + ty) * tw, tw)


@numba.njit(**_JIT)
def _output_pool_adjoint(gy, arg, th, tw, dM):
    n, ph, pw, f = gy.shape
    g = np.zeros((2, 2, tw * f), gy.dtype)  # zeros in tiles no window pools
    E = np.empty((4, 2, tw * f), gy.dtype)
    for a in range(n):
        for ty in range(th):
            if ty < ph:  # each window's gradient to its maximum's place in the tile
                src, where = gy[a, ty].reshape(-1), arg[a, ty].reshape(-1)
                for m in range(pw * f):
                    v, w = src[m], where[m]
                    g[0, 0, m] = v if w == 0 else 0
                    g[0, 1, m] = v if w == 1 else 0
                    g[1, 0, m] = v if w == 2 else 0
                    g[1, 1, m] = v if w == 3 else 0
            else:
                g[:] = 0
            _adjoint_row(g.reshape(2, -1), E, dM, (a * th + ty) * tw, tw)


@numba.njit(**_JIT)
def _input_adjoint(dV, pad, th, tw, gx):
    n, c = gx.shape[0], gx.shape[3]
    half, span = (tw + 1) * c, tw * c
    P = np.empty((2 * th + 2, 2, tw + 1, c), gx.dtype)  # the padded, split gradient
    H = np.empty((4, 2 * half), gx.dtype)
    pf = P.reshape(2 * th + 2, 2 * half)
    for a in range(n):
        P[:] = 0
        for ty in range(th):
            t0 = (a * th + ty) * tw
            H[:] = 0
            for xi in range(4):  # columns: dV B^T, into window columns 2tx + 0, 1, 2, 3
                v0, v1, v2, v3 = _runs(dV, xi, t0, tw)
                h = H[xi]
                c0, c1 = h[0:span], h[half:half + span]
                c2, c3 = h[c:c + span], h[half + c:half + c + span]
                for m in range(span):
                    c0[m] += v0[m]
                for m in range(span):
                    c1[m] += v1[m] - v2[m] + v3[m]
                for m in range(span):
                    c2[m] += v1[m] + v2[m] - v0[m]
                for m in range(span):
                    c3[m] -= v3[m]
            # rows: B (dV B^T), B's rows (1, 0, 0, 0) (0, 1, -1, 1) (-1, 1, 1, 0) (0, 0, 0, -1)
            p0, p1, p2, p3 = pf[2 * ty], pf[2 * ty + 1], pf[2 * ty + 2], pf[2 * ty + 3]
            h0, h1, h2, h3 = H[0], H[1], H[2], H[3]
            for m in range(2 * half):
                p0[m] += h0[m]
            for m in range(2 * half):
                p1[m] += h1[m] - h2[m] + h3[m]
            for m in range(2 * half):
                p2[m] += h1[m] + h2[m] - h0[m]
            for m in range(2 * half):
                p3[m] -= h3[m]
        _unsplit(P, a, pad, gx)


def winograd_input(x, pad, V):
    """Same contract as :func:`kernels.winograd.winograd_input`."""
    _input(x, pad, *tiles(x.shape[1] + 2 * pad - 2, x.shape[2] + 2 * pad - 2), V)


def winograd_output(M, y):
    """Same contract as :func:`kernels.winograd.winograd_output`."""
    _output(M, *tiles(y.shape[1], y.shape[2]), y)


def winograd_output_adjoint(gy, dM):
    """Same contract as :func:`kernels.winograd.winograd_output_adjoint`."""
    _output_adjoint(gy, *tiles(gy.shape[1], gy.shape[2]), dM)


def winograd_output_pool(M, oh, ow, y, arg):
    """Same contract as :func:`kernels.winograd.winograd_output_pool`."""
    _output_pool(M, *tiles(oh, ow), y, arg)


def winograd_output_pool_adjoint(gy, arg, oh, ow, dM):
    """Same contract as :func:`kernels.winograd.winograd_output_pool_adjoint`."""
    _output_pool_adjoint(gy, arg, *tiles(oh, ow), dM)


def winograd_input_adjoint(dV, pad, gx):
    """Same contract as :func:`kernels.winograd.winograd_input_adjoint`."""
    _input_adjoint(dV, pad, *tiles(gx.shape[1] + 2 * pad - 2, gx.shape[2] + 2 * pad - 2), gx)


def compile_winograd(dtype):
    """Compile the four transforms for ``dtype`` on a tiny input."""
    x = np.zeros((1, 3, 3, 2), dtype)
    V, M = np.empty((16, 4, 2), dtype), np.empty((16, 4, 2), dtype)
    y = np.empty((1, 3, 3, 2), dtype)
    winograd_input(x, 1, V)
    winograd_output(M, y)
    winograd_output_adjoint(y, M)
    winograd_input_adjoint(V, 1, x)
    pooled, arg = np.empty((1, 1, 1, 2), dtype), np.empty((1, 1, 1, 2), np.uint8)
    winograd_output_pool(M, 3, 3, pooled, arg)
    winograd_output_pool_adjoint(pooled, arg, 3, 3, M)
