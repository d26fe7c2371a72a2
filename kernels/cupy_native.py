"""CuPy-native twins (RawKernel / ElementwiseKernel) of the numba-cuda kernels.

CuPy's own launches are thinner than numba-cuda's (no array-interface conversion per
argument); which twin is the GPU default is decided by measurement on a GPU
(``python -m bench.gpu_check`` times both). Same contracts as :mod:`kernels.reference`.
Kernels are compiled on first use by CuPy (NVRTC) and launched on CuPy's current stream.
"""

import numpy as np

from . import reference
from ._checks import is_cupy_array

_SOFTMAX_CE = r"""
template<typename T, typename L>
__device__ void softmax_ce(const T* x, const L* t, T* row_loss, T* gx, long long n, int c,
                           T inv_n) {
    long long i = (long long)blockDim.x * blockIdx.x + threadIdx.x;
    if (i >= n) return;
    const T* xi = x + i * c;
    T* gi = gx + i * c;
    T m = xi[0];
    for (int j = 1; j < c; ++j) if (xi[j] > m) m = xi[j];
    T s = 0;
    for (int j = 0; j < c; ++j) { T e = exp(xi[j] - m); gi[j] = e; s += e; }
    long long k = (long long)t[i];
    T scale = inv_n / s;
    for (int j = 0; j < c; ++j) gi[j] *= scale;
    if (k < 0 || k >= c) { row_loss[i] = nan(""); return; }
    row_loss[i] = log(s) - (xi[k] - m);
    gi[k] -= inv_n;
}
"""
_LABEL_TYPES = {"int64": "long long", "int32": "int", "uint8": "unsigned char",
                "int16": "short", "int8": "signed char", "uint32": "unsigned int",
                "uint16": "unsigned short", "uint64": "unsigned long long"}
_FLOAT_TYPES = {"float32": "float", "float64": "double"}
_cache = {}


def _cupy():
    import cupy

    return cupy


def _softmax_kernel(dtype, label_dtype):
    key = ("softmax_ce", dtype.name, label_dtype.name)
    if key not in _cache:
        t, lt = _FLOAT_TYPES[dtype.name], _LABEL_TYPES[label_dtype.name]
        name = f"softmax_ce_{dtype.name}_{label_dtype.name}"
        code = _SOFTMAX_CE + (
            f'extern "C" __global__ void {name}(const {t}* x, const {lt}* t, {t}* r, {t}* g, '
            f"long long n, int c, {t} inv_n) {{ softmax_ce<{t}, {lt}>(x, t, r, g, n, c, "
            "inv_n); }\n")
        _cache[key] = _cupy().RawKernel(code, name)
    return _cache[key]


def _elementwise(name, params, outs, body):
    if name not in _cache:
        _cache[name] = _cupy().ElementwiseKernel(params, outs, body, name)
    return _cache[name]


def softmax_cross_entropy_rows(x, t, row_loss, gx):
    """Same contract as :func:`kernels.reference.softmax_cross_entropy_rows` (thread/row)."""
    n, c = x.shape
    if n == 0:
        return
    threads = 128
    kernel = _softmax_kernel(x.dtype, t.dtype)
    kernel(((n + threads - 1) // threads,), (threads,),
           (x, t, row_loss, gx, np.int64(n), np.int32(c), x.dtype.type(1.0 / n)))


# Activation formulas over z = x + b (forward) and y = the forward output (backward).
_FWD = {"sigmoid": "T e = exp(-fabs(z)); x = (z >= 0 ? (T)1 : e) / ((T)1 + e)",
        "relu": "x = z <= 0 ? (T)0 : z", "tanh": "x = tanh(z)"}
_BWD = {"sigmoid": "g = g * (y * ((T)1 - y))", "relu": "g = g * (y > 0 ? (T)1 : (T)0)",
        "tanh": "g = g * ((T)1 - y * y)"}


def bias_activation(x, b, kind):
    """Same contract as :func:`kernels.reference.bias_activation`: one launch."""
    k = _elementwise(f"xptrain_bias_{kind}_fwd", "T b", "T x", f"T z = x + b; {_FWD[kind]}")
    k(x.dtype.type(0) if b is None else b, x)  # no bias: a zero scalar, broadcast


def activation_backward(g, y, kind, gb):
    """Same contract as :func:`kernels.reference.activation_backward`."""
    _elementwise(f"xptrain_{kind}_bwd", "T y", "T g", _BWD[kind])(y, g)
    if gb is not None:
        reference.column_sum(g, gb)


def sgd_update(p, g, v, lr, momentum, nesterov, weight_decay, n_decay):
    """Same contract as :func:`kernels.reference.sgd_update`: one launch."""
    if not momentum:
        k = _elementwise("xptrain_sgd_plain", "T g, T lr, T wd, int64 n_decay", "T p",
                         "p -= lr * (i < n_decay ? g + wd * p : g)")
        k(g, lr, weight_decay, np.int64(n_decay), p)
        return
    k = _elementwise(
        "xptrain_sgd_momentum", "T g, T lr, T mom, bool nesterov, T wd, int64 n_decay",
        "T p, T v",
        "T gi = i < n_decay ? g + wd * p : g; T vi = mom * v + gi; v = vi; "
        "p -= lr * (nesterov ? gi + mom * vi : vi)")
    k(g, lr, momentum, nesterov, weight_decay, np.int64(n_decay), p, v)


def adam_update(p, g, m, v, step_size, beta1, beta2, eps, inv_sqrt_bias2, l2, decay, n_decay):
    """Same contract as :func:`kernels.reference.adam_update`: one launch."""
    one = p.dtype.type(1)
    k = _elementwise(
        "xptrain_adam",
        "T g, T step_size, T b1, T b2, T c1, T c2, T eps, T ib2, T l2, T decay, int64 n_decay",
        "T p, T m, T v",
        "T gi = g; T pi = p; if (i < n_decay) { gi += l2 * pi; pi *= decay; } "
        "T mi = b1 * m + c1 * gi; T vi = b2 * v + c2 * (gi * gi); m = mi; v = vi; "
        "p = pi - step_size * (mi / (sqrt(vi) * ib2 + eps))")
    k(g, step_size, beta1, beta2, one - beta1, one - beta2, eps, inv_sqrt_bias2, l2, decay,
      np.int64(n_decay), p, m, v)


def gather_rows(x, idx, scale, out):
    """Same contract as :func:`kernels.reference.gather_rows` (one thread per element)."""
    f = x.shape[1]
    k = _elementwise(
        "xptrain_gather", "raw X x, raw I idx, T scale, int64 n, int64 f", "T out",
        "long long r = i / f, j = i % f; long long row = idx[r]; "
        'out = (row < 0 || row >= n) ? (T)nan("") : (T)x[row * f + j] * scale')
    k(x, idx, scale, np.int64(x.shape[0]), np.int64(f), out)


def gemm(a, b, out, alpha, beta):
    """Same contract as :func:`kernels.reference.gemm`: one cuBLAS call (``cupy.cublas.gemm``
    takes C- or F-contiguous operands as they are) on CuPy's current stream. NumPy arrays
    (the numba-cuda twin under the CUDA simulator) go to the reference."""
    gemm_fn = None
    if is_cupy_array(out):
        from cupy import cublas

        gemm_fn = getattr(cublas, "gemm", None)  # absent in older CuPy releases
    if gemm_fn is None:
        reference.gemm(a, b, out, alpha, beta)
        return
    gemm_fn("N", "N", a, b, out=out, alpha=alpha, beta=beta)
