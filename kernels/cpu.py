"""CPU twins of the reference kernels, compiled with ``numba.njit``.

Serial loops: ``parallel=True`` was erratic at batch 128 on 2 cores. Of ``fastmath`` only
FP contraction (fused multiply-add) is on, in the kernels with exponentials, so NaN rows
stay NaN and infinities behave. ``error_model="numpy"`` drops Python's ZeroDivisionError checks and
every loop runs from 0 over a contiguous array, so LLVM can vectorize it (a loop from a
runtime start stayed scalar: 3-6x slower, measured on the optimizer updates). The functions
are compiled lazily on first call (per dtype) and cached on disk; :func:`compile_all` warms
the float32 ones and returns the seconds spent (on the 2-core CPU: about 8 s on a fresh
cache, under 0.5 s from the cache).
"""

import math
import time

import numba
import numpy as np

from . import blas, cpu_math
from ._checks import ACTIVATION_KINDS as _KINDS
from ._checks import layout as blas_layout
from .cpu_conv import (  # noqa: F401 - this twin's convolution ops, in their own file
    col2im,
    compile_conv,
    im2col,
    maxpool_backward,
    maxpool_forward,
)
from .cpu_math import fast_exp
from .cpu_warp import affine_warp  # noqa: F401 - this twin's op, in its own file
from .cpu_winograd import (  # noqa: F401 - the Winograd transforms, in their own file
    compile_winograd,
    winograd_input,
    winograd_input_adjoint,
    winograd_output,
    winograd_output_adjoint,
    winograd_output_pool,
    winograd_output_pool_adjoint,
)


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _softmax_ce_fwd_bwd(x, t, row_loss, gx, inv_n):
    # inv_n is a NumPy scalar of x's dtype, so float32 inputs are computed in float32.
    # Three passes so the exponentials run as one vectorized loop over the whole batch
    # (C = 10 is too short a row to vectorize); returns the summed row losses (float64).
    n, c = x.shape
    for i in range(n):  # shifted logits into gx; the row max parked in row_loss
        m = x[i, 0]
        for j in range(1, c):
            if x[i, j] > m:
                m = x[i, j]
        row_loss[i] = m
        for j in range(c):
            gx[i, j] = x[i, j] - m
    flat = gx.reshape(-1)
    for k in range(flat.size):
        flat[k] = fast_exp(flat[k])
    total = 0.0
    for i in range(n):
        s = gx[i, 0]
        for j in range(1, c):
            s += gx[i, j]
        k = t[i]
        if k < 0 or k >= c:
            row_loss[i] = np.nan
            k = -1
        else:
            row_loss[i] = math.log(s) - (x[i, k] - row_loss[i])
        total += row_loss[i]
        scale = inv_n / s
        for j in range(c):
            gx[i, j] *= scale
        if k >= 0:
            gx[i, k] -= inv_n
    return total


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _sgd(p, g, v, lr, momentum, nesterov, wd):
    if momentum == 0:
        for i in range(p.size):
            p[i] -= lr * (g[i] + wd * p[i])
        return
    for i in range(p.size):
        gi = g[i] + wd * p[i]
        vi = momentum * v[i] + gi
        v[i] = vi
        p[i] -= lr * (gi + momentum * vi if nesterov else vi)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _adam(p, g, m, v, step_size, b1, b2, c1, c2, eps, inv_sqrt_bias2, l2, decay):
    for i in range(p.size):
        gi = g[i] + l2 * p[i]
        mi = b1 * m[i] + c1 * gi
        vi = b2 * v[i] + c2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        p[i] = p[i] * decay - step_size * (mi / (math.sqrt(vi) * inv_sqrt_bias2 + eps))


PREFETCH_ROWS = 4


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _gather(x, idx, scale, out):
    # The rows are random and mostly not in any cache, and the conversion loop alone keeps
    # only a row or two of misses in flight. So the row PREFETCH_ROWS ahead is prefetched
    # line by line (measured on MNIST at batch 128: a cache-cold gather alone 52 -> 34 us;
    # inside training steps 54 -> 43-48 us, the step ~1% faster; 2 to 16 rows ahead and
    # every locality hint did the same).
    n, f = x.shape
    flat = x.reshape(-1)
    line = max(1, 64 // x.itemsize)
    m = idx.size
    for r in range(min(PREFETCH_ROWS, m)):
        _prefetch_row(flat, idx[r], n, f, line)
    for r in range(m):
        if r + PREFETCH_ROWS < m:
            _prefetch_row(flat, idx[r + PREFETCH_ROWS], n, f, line)
        row = idx[r]
        dst = out[r]
        if row < 0 or row >= n:
            dst[:] = np.nan
            continue
        src = x[row]
        for j in range(f):
            dst[j] = src[j] * scale


@numba.njit(inline="always", cache=True, nogil=True, error_model="numpy")
def _prefetch_row(flat, row, n, f, line):
    if 0 <= row < n:
        start = row * f
        for j in range(0, f, line):
            cpu_math.prefetch(flat, start + j)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _column_window(x):
    # Each row only checks the columns outside the window found so far: a count over them
    # (a loop LLVM vectorizes), and a scan for the new bound only where the count is not 0.
    n, f = x.shape
    lo, hi = f, 0
    for i in range(n):
        row = x[i]
        hits = 0
        for j in range(lo):
            hits += row[j] != 0
        if hits:
            for j in range(lo):
                if row[j] != 0:
                    lo = j
                    break
        hits = 0
        for j in range(hi, f):
            hits += row[j] != 0
        if hits:
            for j in range(f - 1, hi - 1, -1):
                if row[j] != 0:
                    hi = j + 1
                    break
    if lo >= hi:
        return 0, 0
    return lo, hi


def column_window(x):
    """Same contract as :func:`kernels.reference.column_window`."""
    return _column_window(x)


def softmax_cross_entropy_rows(x, t, row_loss, gx):
    """Same contract as :func:`kernels.reference.softmax_cross_entropy_rows` (NumPy only);
    returns the summed row losses."""
    return _softmax_ce_fwd_bwd(x, t, row_loss, gx, x.dtype.type(1.0 / max(x.shape[0], 1)))


_bias_act_fwd, _act_bwd = cpu_math.bias_act_fwd, cpu_math.act_bwd


def bias_activation(x, b, kind):
    """Same contract as :func:`kernels.reference.bias_activation`."""
    _bias_act_fwd(x, b, _KINDS[kind])


def activation_backward(g, y, kind, gb):
    """Same contract as :func:`kernels.reference.activation_backward`."""
    _act_bwd(g, y, gb, _KINDS[kind])


def _segments(size, n_decay, uniform):
    """(slice, decays) for each loop over a flat buffer whose first ``n_decay`` entries take
    weight decay: one loop when decay is uniform (none, or over all of it) - a second call
    cost ~4 us per step -, else two slices, each run from 0 so LLVM can vectorize it."""
    if uniform or n_decay in (0, size):
        return ((slice(None), n_decay > 0),)
    return (slice(None, n_decay), True), (slice(n_decay, None), False)


def sgd_update(p, g, v, lr, momentum, nesterov, weight_decay, n_decay):
    """Same contract as :func:`kernels.reference.sgd_update`: one pass over the buffers."""
    if not momentum:
        v = p  # unused
    if not weight_decay:  # one loop over all, without slicing views (the training call)
        _sgd(p, g, v, lr, momentum, nesterov, weight_decay)
        return
    zero = p.dtype.type(0)
    for part, decays in _segments(p.size, n_decay, False):  # weight_decay != 0 here
        _sgd(p[part], g[part], v[part], lr, momentum, nesterov, weight_decay if decays else zero)


def adam_update(p, g, m, v, step_size, beta1, beta2, eps, inv_sqrt_bias2, l2, decay, n_decay):
    """Same contract as :func:`kernels.reference.adam_update`: one pass over the buffers."""
    one = p.dtype.type(1)
    args = (step_size, beta1, beta2, one - beta1, one - beta2, eps, inv_sqrt_bias2)
    for part, decays in _segments(p.size, n_decay, not l2 and decay == one):
        _adam(p[part], g[part], m[part], v[part], *args,
              *((l2, decay) if decays else (one - one, one)))


def gather_rows(x, idx, scale, out):
    """Same contract as :func:`kernels.reference.gather_rows`."""
    _gather(x, idx, scale, out)


# not inline="always": inlined in Numba's IR into each layout specialization of the GEMM
# (two call sites each) it cost ~0.8 s more of a fresh compile; LLVM inlines it anyway
_layout = numba.njit(cache=True, nogil=True)(blas_layout)


@numba.njit(inline="always", cache=True, nogil=True)
def _blas_layout(a):
    # the dispatcher checked that BLAS reads ``a`` as it is (:func:`kernels._blas_ok`)
    m, k = a.shape
    return _layout(m, k, a.strides[0], a.strides[1], a.itemsize)


@numba.njit(cache=True, nogil=True)
def _gemm(a, b, out, alpha, beta, s_fn, d_fn, ilp64):
    m, k = a.shape
    n = b.shape[1]
    trans_a, lda = _blas_layout(a)
    trans_b, ldb = _blas_layout(b)
    fn = s_fn if out.itemsize == 4 else d_fn  # float32: sgemm; float64: dgemm
    if ilp64:
        blas.gemm_call_64(fn, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, out,
                          max(n, 1))
    else:
        blas.gemm_call_32(fn, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, out,
                          max(n, 1))


if blas.FOUND is not None:  # else no twin: the dispatcher runs the reference (np.matmul)
    _S_FN, _D_FN, _ILP64 = blas.FOUND.sgemm, blas.FOUND.dgemm, blas.FOUND.ilp64

    def gemm(a, b, out, alpha, beta):
        """Same contract as :func:`kernels.reference.gemm`: one BLAS call, in NumPy's BLAS."""
        _gemm(a, b, out, alpha, beta, _S_FN, _D_FN, _ILP64)


def compile_all(dtypes=(np.float32,)):
    """Compile every kernel for ``dtypes`` (the engine trains in float32; float64 kernels,
    for checks, compile on first use); return seconds spent."""
    start = time.perf_counter()
    for dtype in dtypes:
        x, c = np.zeros((2, 3), dtype), dtype(0.5)
        softmax_cross_entropy_rows(x, np.zeros(2, np.int64), np.empty(2, dtype), np.empty_like(x))
        for kind in _KINDS:
            for b in (None, x[0]):
                bias_activation(x.copy(), b, kind)
                activation_backward(x.copy(), x, kind, b if b is None else np.empty(3, dtype))
        p = np.zeros(4, dtype)
        for nesterov in (False, True):
            sgd_update(p, p, p, c, c, nesterov, c, 2)
        adam_update(p, p, p, p, c, c, c, c, c, c, c, 2)
        compile_conv(dtype)
        compile_winograd(dtype)
        column_window(x)
        affine_warp(np.zeros((1, 16), dtype), np.zeros((1, 6), dtype), None, 4, 4,
                    np.empty((1, 16), dtype))
        for src in (np.zeros((3, 3), np.uint8), x):
            gather_rows(src, np.zeros(2, np.int64), c, np.empty((2, src.shape[1]), dtype))
        if blas.FOUND is not None:  # a Linear layer's products, and a column window's
            for a, b in ((x, x.T.copy()), (x, x.T), (x.T, x), (x[:, :2].T, x)):
                gemm(a, b, np.empty((a.shape[0], b.shape[1]), dtype), c, c)
    return time.perf_counter() - start
