"""GPU twins of the reference kernels, written with numba-cuda, running on CuPy arrays.

Nothing here imports ``numba.cuda`` until a kernel is first used, and no kernel is compiled
with an explicit signature (that raises on a machine without a driver). Launches go on CuPy's
current stream through ``cuda.external_stream`` with the array-interface sync turned off, so
a launch never blocks the host. Under the Numba CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``)
the same kernels run on NumPy arrays on the CPU, which is how CI tests them.
"""

import math
import os

import numpy as np

from ._checks import ACTIVATION_KINDS as _KIND
from ._checks import get_array_module
from .cupy_native import gemm  # noqa: F401 - cuBLAS: a GEMM is no job for a hand-written kernel

THREADS = 128
_kernels = {}
_streams = {}  # CuPy stream pointer -> numba external stream
_grids = {}  # (h, w, dtype, module) -> the warp's centred pixel coordinates
cuda = None  # numba.cuda, imported on first use


def simulator_enabled():
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


def _build():
    """Define the kernels once (lazy ``@cuda.jit``: compiled per signature at first launch)."""
    if _kernels:
        return _kernels
    global cuda
    from numba import (
        config,
        cuda,  # module global: the simulator swaps the kernels' globals
    )

    # CuPy orders work on its own stream; the per-launch host sync Numba adds by default
    # (NUMBA_CUDA_ARRAY_INTERFACE_SYNC=1) would stall the host every step.
    config.CUDA_ARRAY_INTERFACE_SYNC = False
    _kernels.update(**_loss_kernels(), **_activation_kernels(), **_update_and_gather_kernels(),
                    warp=_warp_kernel(), cuda=cuda)
    return _kernels


def _loss_kernels():
    """The softmax-CE kernel (``cuda`` imported by _build)."""
    @cuda.jit
    def softmax_ce_fwd_bwd(x, t, row_loss, gx, inv_n):
        # inv_n arrives as a NumPy scalar of x's dtype, so float32 math stays float32.
        i = cuda.grid(1)
        n, c = x.shape
        if i >= n:
            return
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
            row_loss[i] = math.nan
            k = -1
        else:
            row_loss[i] = math.log(s) - (x[i, k] - m)
        scale = inv_n / s
        for j in range(c):
            gx[i, j] *= scale
        if k >= 0:
            gx[i, k] -= inv_n

    return dict(softmax_ce=softmax_ce_fwd_bwd)


def _activation_kernels():
    """The activation and column-sum kernels (``cuda`` imported by _build)."""
    @cuda.jit
    def bias_act(x, b, kind, one):
        # kind: 0 sigmoid, 1 relu, 2 tanh; b has x's column count, or 0 entries for no bias
        start, stride = cuda.grid(1), cuda.gridsize(1)
        f = x.shape[1]
        for k in range(start, x.size, stride):
            r, j = k // f, k % f
            z = x[r, j] + b[j] if b.size else x[r, j]
            if kind == 0:
                e = math.exp(-abs(z))
                x[r, j] = (one if z >= 0 else e) / (one + e)
            elif kind == 1:
                x[r, j] = one - one if z <= 0 else z  # a zero of x's type; NaN stays NaN
            else:
                x[r, j] = math.tanh(z)

    @cuda.jit
    def act_bwd(g, y, kind, one):
        start, stride = cuda.grid(1), cuda.gridsize(1)
        for i in range(start, y.size, stride):
            if kind == 0:
                g[i] = g[i] * (y[i] * (one - y[i]))
            elif kind == 1:
                g[i] = g[i] * (one if y[i] > 0 else one - one)
            else:
                g[i] = g[i] * (one - y[i] * y[i])

    @cuda.jit
    def column_sum(g, out, zero):
        # one thread per column; neighbouring threads read neighbouring addresses
        j = cuda.grid(1)
        if j < g.shape[1]:
            s = zero
            for i in range(g.shape[0]):
                s += g[i, j]
            out[j] = s

    return dict(bias_act=bias_act, act_bwd=act_bwd, column_sum=column_sum)


def _update_and_gather_kernels():
    """The optimizer-update and gather kernels (``cuda`` imported by _build)."""
    @cuda.jit
    def sgd(p, g, v, lr, momentum, nesterov, wd, n_decay):
        start, stride = cuda.grid(1), cuda.gridsize(1)
        for i in range(start, p.size, stride):
            gi = g[i] + wd * p[i] if i < n_decay else g[i]
            if momentum != 0:
                vi = momentum * v[i] + gi
                v[i] = vi
                gi = gi + momentum * vi if nesterov else vi
            p[i] -= lr * gi

    @cuda.jit
    def adam(p, g, m, v, step_size, b1, b2, c1, c2, eps, inv_sqrt_bias2, l2, decay, n_decay):
        start, stride = cuda.grid(1), cuda.gridsize(1)
        for i in range(start, p.size, stride):
            pi = p[i]
            gi = g[i]
            if i < n_decay:
                gi += l2 * pi
                pi *= decay
            mi = b1 * m[i] + c1 * gi
            vi = b2 * v[i] + c2 * (gi * gi)
            m[i] = mi
            v[i] = vi
            p[i] = pi - step_size * (mi / (math.sqrt(vi) * inv_sqrt_bias2 + eps))

    @cuda.jit
    def gather(x, idx, scale, out):
        start, stride = cuda.grid(1), cuda.gridsize(1)
        n, f = x.shape
        for k in range(start, out.size, stride):
            r, j = k // f, k % f
            row = idx[r]
            if row < 0 or row >= n:
                out[r, j] = math.nan
            else:
                out[r, j] = x[row, j] * scale

    return dict(sgd=sgd, adam=adam, gather=gather)


def _warp_kernel():
    """The affine warp: one thread per (image, output pixel), every channel."""
    from numba import int64

    @cuda.jit
    def warp(x, theta, flow, has_flow, u_of, v_of, cx, cy, one, h, w, out):
        # float32 stays float32: the grid coordinates come as arrays and every constant as
        # a scalar of x's dtype (an int mixed with a float32 would make float64 math)
        k = cuda.grid(1)
        hw = h * w
        n = x.shape[0]
        if k >= n * hw:
            return
        r, p = k // hw, k % hw
        zero = one - one
        u, v = u_of[p], v_of[p]
        sx = theta[r, 0] * u + theta[r, 1] * v + theta[r, 2] + cx
        sy = theta[r, 3] * u + theta[r, 4] * v + theta[r, 5] + cy
        if has_flow:
            sx += flow[r, 0, p]
            sy += flow[r, 1, p]
        fx0, fy0 = math.floor(sx), math.floor(sy)
        fx, fy = sx - fx0, sy - fy0
        x0, y0 = int64(fx0), int64(fy0)
        for ch in range(x.shape[1] // hw):
            acc = zero
            for dy in range(2):
                yi = y0 + dy
                if 0 <= yi < h:
                    wy = fy if dy else one - fy
                    for dx in range(2):
                        xi = x0 + dx
                        if 0 <= xi < w:
                            acc += (fx if dx else one - fx) * wy * x[r, ch * hw + yi * w + xi]
            out[r, ch * hw + p] = acc

    return warp


def _launch_config(n_threads):
    """(blocks, threads, stream) for ``n_threads`` work items on CuPy's current stream."""
    k = _build()
    blocks = max(1, (n_threads + THREADS - 1) // THREADS)
    if simulator_enabled():
        return blocks, THREADS, 0
    import cupy

    ptr = cupy.cuda.get_current_stream().ptr
    if not ptr:  # CuPy's default (legacy null) stream: numba's stream 0 is the same one
        return blocks, THREADS, 0
    stream = _streams.get(ptr)
    if stream is None:  # one wrapper per CuPy stream, not one per launch
        stream = _streams[ptr] = k["cuda"].external_stream(ptr)
    return blocks, THREADS, stream


def _device_args(*arrays):
    """Refuse host arrays on a real GPU: Numba would copy them to and fro on every launch."""
    if simulator_enabled():
        return arrays
    if any(isinstance(a, np.ndarray) for a in arrays):
        raise TypeError("the numba-cuda kernels take CuPy arrays; got a NumPy array "
                        "(use the 'numba' implementation on the CPU)")
    cuda = _build()["cuda"]
    return tuple(cuda.as_cuda_array(a, sync=False) for a in arrays)


def softmax_cross_entropy_rows(x, t, row_loss, gx):
    """Same contract as :func:`kernels.reference.softmax_cross_entropy_rows` (one thread/row)."""
    blocks, threads, stream = _launch_config(x.shape[0])
    inv_n = x.dtype.type(1.0 / max(x.shape[0], 1))
    _build()["softmax_ce"][blocks, threads, stream](*_device_args(x, t, row_loss, gx), inv_n)


def bias_activation(x, b, kind):
    """Same contract as :func:`kernels.reference.bias_activation` (grid-stride loop)."""
    if not x.size:
        return
    blocks, threads, stream = _launch_config(min(x.size, 65536 * THREADS))
    b = x[0, :0] if b is None else b
    _build()["bias_act"][blocks, threads, stream](*_device_args(x, b), np.int32(_KIND[kind]),
                                                  x.dtype.type(1))


def activation_backward(g, y, kind, gb):
    """Same contract as :func:`kernels.reference.activation_backward`: one launch, and one
    more (a thread per column) for the bias gradient."""
    if not g.size:
        if gb is not None:
            gb[...] = 0
        return
    blocks, threads, stream = _launch_config(min(g.size, 65536 * THREADS))
    flat = _device_args(g.reshape(-1), y.reshape(-1))
    _build()["act_bwd"][blocks, threads, stream](*flat, np.int32(_KIND[kind]), y.dtype.type(1))
    if gb is not None:
        blocks, threads, stream = _launch_config(g.shape[1])
        _build()["column_sum"][blocks, threads, stream](*_device_args(g, gb), y.dtype.type(0))


def sgd_update(p, g, v, lr, momentum, nesterov, weight_decay, n_decay):
    """Same contract as :func:`kernels.reference.sgd_update`: one launch."""
    blocks, threads, stream = _launch_config(min(p.size, 65536 * THREADS))
    v = v if v.size else g  # unused without momentum (never p: the simulator copies back)
    _build()["sgd"][blocks, threads, stream](*_device_args(p, g, v), lr, momentum, nesterov,
                                             weight_decay, np.int64(n_decay))


def adam_update(p, g, m, v, step_size, beta1, beta2, eps, inv_sqrt_bias2, l2, decay, n_decay):
    """Same contract as :func:`kernels.reference.adam_update`: one launch."""
    one = p.dtype.type(1)
    blocks, threads, stream = _launch_config(min(p.size, 65536 * THREADS))
    _build()["adam"][blocks, threads, stream](*_device_args(p, g, m, v), step_size, beta1,
                                              beta2, one - beta1, one - beta2, eps,
                                              inv_sqrt_bias2, l2, decay, np.int64(n_decay))


def gather_rows(x, idx, scale, out):
    """Same contract as :func:`kernels.reference.gather_rows`: one thread per element."""
    blocks, threads, stream = _launch_config(min(out.size, 65536 * THREADS))
    dx, didx, dout = _device_args(x, idx, out)
    _build()["gather"][blocks, threads, stream](dx, didx, scale, dout)


def affine_warp(x, theta, flow, h, w, out):
    """Same contract as :func:`kernels.reference.affine_warp`: one launch."""
    n = x.shape[0] * h * w
    if not n:
        return
    xp = get_array_module(x)
    blocks, threads, stream = _launch_config(n)
    theta = theta.astype(x.dtype, copy=False)
    has_flow = flow is not None
    key = (h, w, x.dtype.str, xp.__name__)
    if key not in _grids:  # the centred column and row of every output pixel, and an
        p = xp.arange(h * w)  # unused stand-in for no flow: made once, not per step
        _grids[key] = ((p % w).astype(x.dtype) - (w - 1) / 2,
                       (p // w).astype(x.dtype) - (h - 1) / 2, xp.zeros((1, 2, 1), x.dtype))
    u_of, v_of, no_flow = _grids[key]
    flow = flow if has_flow else no_flow
    cx, cy = x.dtype.type((w - 1) / 2), x.dtype.type((h - 1) / 2)
    args = (*_device_args(x, theta, flow), has_flow, *_device_args(u_of, v_of), cx, cy,
            x.dtype.type(1), np.int64(h), np.int64(w), *_device_args(out))
    _build()["warp"][blocks, threads, stream](*args)
