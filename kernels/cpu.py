"""CPU twins of the reference kernels, compiled with ``numba.njit``.

Serial loops: ``parallel=True`` was erratic at batch 128 on 2 cores, and ``fastmath`` is off
so NaN rows stay NaN. The functions are compiled lazily on first call (per dtype);
:func:`compile_all` warms them and returns the compile time in seconds.
"""

import math
import time

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _softmax_ce_fwd_bwd(x, t, row_loss, gx, inv_n):
    # inv_n is a NumPy scalar of x's dtype, so float32 inputs are computed in float32.
    n, c = x.shape
    for i in range(n):
        m = x[i, 0]
        for j in range(1, c):
            if x[i, j] > m:
                m = x[i, j]
        s = math.exp(x[i, 0] - m)
        gx[i, 0] = s
        for j in range(1, c):
            e = math.exp(x[i, j] - m)
            gx[i, j] = e
            s += e
        k = t[i]
        if k < 0 or k >= c:
            row_loss[i] = np.nan
            k = -1
        else:
            row_loss[i] = math.log(s) - (x[i, k] - m)
        scale = inv_n / s
        for j in range(c):
            gx[i, j] *= scale
        if k >= 0:
            gx[i, k] -= inv_n


@numba.njit(cache=True, nogil=True)
def _sigmoid_bwd(gy, y, gx, one):
    for i in range(y.size):
        gx[i] = gy[i] * y[i] * (one - y[i])


def softmax_cross_entropy_rows(x, t, row_loss, gx):
    """Same contract as :func:`kernels.reference.softmax_cross_entropy_rows` (NumPy only)."""
    _softmax_ce_fwd_bwd(x, t, row_loss, gx, x.dtype.type(1.0 / max(x.shape[0], 1)))


def sigmoid_backward(gy, y, gx):
    """Same contract as :func:`kernels.reference.sigmoid_backward` (NumPy only)."""
    _sigmoid_bwd(gy.reshape(-1), y.reshape(-1), gx.reshape(-1), y.dtype.type(1))


def compile_all():
    """Compile every kernel for float32 and float64; return seconds spent."""
    start = time.perf_counter()
    for dtype in (np.float32, np.float64):
        x = np.zeros((2, 3), dtype)
        softmax_cross_entropy_rows(x, np.zeros(2, np.int64), np.empty(2, dtype), np.empty_like(x))
        sigmoid_backward(x, x, np.empty_like(x))
    return time.perf_counter() - start
