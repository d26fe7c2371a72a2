"""The CPU twin of :func:`kernels.reference.affine_warp`: one pass per output pixel.

The reference spends 12 ms on a batch of 128 MNIST images (2-core CPU, measured): more than
a whole step of the default MLP. Here each output pixel computes its source point, its four
neighbours' weights and the blend in registers, for every channel, in one loop.
"""

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _warp(x, theta, flow, has_flow, h, w, out):
    n = x.shape[0]
    hw = h * w
    c = x.shape[1] // hw
    cx, cy = (w - 1) * 0.5, (h - 1) * 0.5
    zero = x.dtype.type(0)
    for r in range(n):
        t0, t1, t2 = theta[r, 0], theta[r, 1], theta[r, 2] + cx
        t3, t4, t5 = theta[r, 3], theta[r, 4], theta[r, 5] + cy
        for p in range(hw):
            u, v = (p % w) - cx, (p // w) - cy
            sx = t0 * u + t1 * v + t2
            sy = t3 * u + t4 * v + t5
            if has_flow:
                sx += flow[r, 0, p]
                sy += flow[r, 1, p]
            fx0, fy0 = math.floor(sx), math.floor(sy)
            fx, fy = sx - fx0, sy - fy0
            x0, y0 = int(fx0), int(fy0)
            for ch in range(c):
                base = ch * hw
                acc = zero
                for dy in range(2):
                    yi = y0 + dy
                    if yi < 0 or yi >= h:
                        continue
                    wy = fy if dy else 1 - fy
                    for dx in range(2):
                        xi = x0 + dx
                        if xi < 0 or xi >= w:
                            continue
                        wx = fx if dx else 1 - fx
                        acc += wx * wy * x[r, base + yi * w + xi]
                out[r, base + p] = acc


_NO_FLOW = np.zeros((1, 2, 1), np.float32)


def affine_warp(x, theta, flow, h, w, out):
    """Same contract as :func:`kernels.reference.affine_warp`."""
    t = theta.astype(x.dtype)  # the reference's arithmetic: in x's dtype
    if flow is None:
        _warp(x, t, _NO_FLOW.astype(x.dtype), False, h, w, out)
    else:
        _warp(x, t, flow.astype(x.dtype, copy=False), True, h, w, out)
