"""Plain-``xp`` reference kernels: the specification every fast twin must match.

Each function takes NumPy or CuPy arrays that the dispatcher already validated and writes
its results into the buffers it is given, so all implementations share one contract.
"""

import numpy as np

from ._checks import get_array_module
from .winograd import (  # noqa: F401 - the Winograd transforms' reference, in its own file
    winograd_input,
    winograd_input_adjoint,
    winograd_output,
    winograd_output_adjoint,
    winograd_output_pool,
    winograd_output_pool_adjoint,
)


def softmax_cross_entropy_rows(x, t, row_loss, gx):
    """Per-row softmax cross-entropy and its gradient.

    x: (N, C) float logits; t: (N,) integer labels in [0, C).
    Writes row_loss[i] = logsumexp(x[i]) - x[i, t[i]] and
    gx[i] = (softmax(x[i]) - onehot(t[i])) / N, both in x's dtype, using a subtracted row max
    (no clipping). Labels outside [0, C) give a NaN row loss instead of an out-of-bounds access.
    """
    xp = get_array_module(x)
    n, c = x.shape
    z = x - x.max(axis=1, keepdims=True)
    e = xp.exp(z)
    s = e.sum(axis=1, keepdims=True)
    valid = (t >= 0) & (t < c)
    safe_t = xp.where(valid, t, 0)
    rows = xp.arange(n)
    loss = xp.log(s[:, 0]) - z[rows, safe_t]
    row_loss[...] = xp.where(valid, loss, x.dtype.type("nan"))
    xp.divide(e, s, out=gx)
    gx[rows, safe_t] -= valid.astype(x.dtype)
    gx *= x.dtype.type(1.0 / max(n, 1))


def mean_loss(total, rows):
    """The mean of the row losses ``rows`` as a 0-d array of their dtype on their device:
    from ``total`` where a twin summed them itself (the CPU twin, in float64), else summed
    here."""
    xp = get_array_module(rows)
    n = max(rows.shape[0], 1)
    if total is not None:
        return xp.array(total / n, rows.dtype)
    loss = rows.sum(keepdims=True).reshape(())
    loss *= rows.dtype.type(1.0 / n)  # in place: stays a 0-d array
    return loss


def bias_activation(x, b, kind):
    """x = act(x + b) in place, x (R, F) C-contiguous, b (F,) or None; act by name:
    sigmoid (as 0.5 tanh(x/2) + 0.5: no overflow), relu, tanh."""
    xp = get_array_module(x)
    if b is not None:
        x += b
    if kind == "sigmoid":
        half = x.dtype.type(0.5)
        x *= half
        xp.tanh(x, out=x)
        x *= half
        x += half
    elif kind == "relu":
        xp.maximum(x, x.dtype.type(0), out=x)
    else:
        xp.tanh(x, out=x)


def activation_backward(g, y, kind, gb):
    """g *= act'(x), written from the forward output y (sigmoid: y (1 - y); relu: y > 0;
    tanh: 1 - y^2), in place; gb (F,) or None gets g summed over rows."""
    one = y.dtype.type(1)
    if kind == "sigmoid":
        g *= y * (one - y)
    elif kind == "relu":
        g *= y > 0
    else:
        g *= one - y * y
    if gb is not None:
        column_sum(g, gb)


_ONES = {}  # (array type, device, rows, dtype) -> a vector of ones, reused across calls


def column_sum(g, out):
    """out = g.sum(axis=0) for 2-D ``g``, as ones @ g: a BLAS matrix-vector product, 3-5x
    faster than NumPy's axis-0 sum (128 x 128: 5.1 -> 1.6 us; 8192 x 128: 187 -> 48 us,
    measured). Returns ``out``."""
    xp = get_array_module(g)
    key = (type(g), str(getattr(g, "device", "cpu")), g.shape[0], g.dtype)
    ones = _ONES.get(key)
    if ones is None:
        ones = _ONES[key] = xp.ones(g.shape[0], g.dtype)
    return xp.matmul(ones, g, out=out)


def column_window(x):
    """``(lo, hi)``: every column of 2-D ``x`` outside ``[lo, hi)`` is zero in every row
    (NaN counts as nonzero); ``(0, 0)`` when all of ``x`` is zero. Python ints (on CuPy a
    device-to-host read)."""
    nz = (x != 0).any(axis=0)
    if not bool(nz.any()):
        return 0, 0
    return int(nz.argmax()), int(x.shape[1] - nz[::-1].argmax())


def gemm(a, b, out, alpha, beta):
    """out = alpha * a @ b + beta * out, in place; a (M, K), b (K, N), out (M, N) C-contiguous,
    one float dtype, out overlapping neither. With beta = 0, out is not read (a NaN there does
    not propagate), as in BLAS. ``alpha`` and ``beta`` are scalars of the arrays' dtype."""
    xp = get_array_module(a)
    if alpha == 1 and beta == 0:
        xp.matmul(a, b, out=out)
        return
    product = xp.matmul(a, b)
    if alpha != 1:
        product *= alpha
    if beta == 0:
        out[...] = product
        return
    if beta != 1:
        out *= beta
    out += product


def sgd_update(p, g, v, lr, momentum, nesterov, weight_decay, n_decay):
    """SGD step over flat buffers, in place (PyTorch's formula).

    g' = g + weight_decay * p on p[:n_decay]; v = momentum * v + g'; p -= lr * step with
    step = g' + momentum * v (Nesterov) or v (or g' without momentum). Scalars are NumPy
    scalars of p's dtype; ``v`` is unused (may be empty) when momentum is 0.
    """
    if weight_decay:
        g = g.copy()
        g[:n_decay] += weight_decay * p[:n_decay]
    if momentum:
        v *= momentum
        v += g
        step = g + momentum * v if nesterov else v
    else:
        step = g
    p -= lr * step


def adam_scalars(dtype, lr, step, beta1, beta2, eps, weight_decay, decoupled):
    """The scalar arguments of :func:`adam_update` after ``step`` (1-based) steps, in
    ``dtype``: (step_size, beta1, beta2, eps, inv_sqrt_bias2, l2, decay)."""
    t = dtype.type
    l2 = 0.0 if decoupled else weight_decay
    decay = 1.0 - lr * weight_decay if decoupled else 1.0
    return (t(lr / (1.0 - beta1 ** step)), t(beta1), t(beta2), t(eps),
            t((1.0 - beta2 ** step) ** -0.5), t(l2), t(decay))


def adam_update(p, g, m, v, step_size, beta1, beta2, eps, inv_sqrt_bias2, l2, decay, n_decay):
    """Adam/AdamW step over flat buffers, in place.

    On p[:n_decay]: g' = g + l2 * p (Adam's L2 term) and p *= decay (AdamW's decoupled
    decay, 1 - lr * wd); elsewhere g' = g. m = b1 m + (1 - b1) g'; v = b2 v + (1 - b2) g'^2;
    p -= step_size * m / (sqrt(v) * inv_sqrt_bias2 + eps), step_size = lr / (1 - b1^t).
    """
    xp = get_array_module(p)
    one = p.dtype.type(1)
    if l2:
        g = g.copy()
        g[:n_decay] += l2 * p[:n_decay]
    m *= beta1
    m += (one - beta1) * g
    v *= beta2
    v += (one - beta2) * (g * g)
    if decay != one:
        p[:n_decay] *= decay
    denom = xp.sqrt(v)
    denom *= inv_sqrt_bias2
    denom += eps
    p -= step_size * (m / denom)


def gather_rows(x, idx, scale, out):
    """out[r] = x[idx[r]] * scale in out's dtype (x uint8 or float, idx integer).

    Indices outside [0, len(x)) give a NaN row, never an out-of-bounds read.
    """
    xp = get_array_module(x)
    n = x.shape[0]
    valid = (idx >= 0) & (idx < n)
    xp.multiply(xp.take(x, xp.where(valid, idx, 0), axis=0), scale, out=out)
    out[~valid] = out.dtype.type("nan")


def im2col(x, k, stride, pad, cols):
    """cols[n, oh, ow, i, j, c] = x[n, oh*stride + i - pad, ow*stride + j - pad, c] (0 outside).

    x: (N, H, W, C) channels-last; cols: (N, OH, OW, k, k, C), written.
    """
    xp = get_array_module(x)
    n, h, w, c = x.shape
    _, oh, ow = cols.shape[:3]
    if pad:
        padded = xp.zeros((n, h + 2 * pad, w + 2 * pad, c), x.dtype)
        padded[:, pad:h + pad, pad:w + pad] = x
        x = padded
    s = stride
    for i in range(k):
        for j in range(k):
            cols[:, :, :, i, j, :] = x[:, i:i + s * oh:s, j:j + s * ow:s, :]


def col2im(gcols, k, stride, pad, gx):
    """The adjoint of :func:`im2col`: gx (N, H, W, C) = sum of gcols over the windows."""
    xp = get_array_module(gcols)
    n, h, w, c = gx.shape
    _, oh, ow = gcols.shape[:3]
    full = xp.zeros((n, h + 2 * pad, w + 2 * pad, c), gx.dtype)
    s = stride
    for i in range(k):
        for j in range(k):
            full[:, i:i + s * oh:s, j:j + s * ow:s, :] += gcols[:, :, :, i, j, :]
    gx[...] = full[:, pad:h + pad, pad:w + pad]


def maxpool_forward(x, k, stride, y, arg):
    """y = max over each k x k window (no padding); arg = i*k + j of the first maximum.

    x: (N, H, W, C); y: (N, OH, OW, C); arg: (N, OH, OW, C) uint8, both written.
    """
    xp = get_array_module(x)
    _, oh, ow, _ = y.shape
    s = stride
    win = xp.stack([x[:, i:i + s * oh:s, j:j + s * ow:s, :]
                    for i in range(k) for j in range(k)])
    arg[...] = win.argmax(axis=0)
    y[...] = win.max(axis=0)


def maxpool_backward(gy, arg, k, stride, gx):
    """gx (N, H, W, C) = gy routed to each window's first maximum (summed where windows
    overlap)."""
    _, oh, ow, _ = gy.shape
    s = stride
    gx[...] = 0
    for i in range(k):
        for j in range(k):
            gx[:, i:i + s * oh:s, j:j + s * ow:s, :] += gy * (arg == i * k + j)


def affine_warp(x, theta, flow, h, w, out):
    """Each image resampled (bilinear, 0 outside) at an affine map of the output grid.

    x, out: (N, C*h*w) images, channels first, row-major; theta: (N, 6): output pixel
    (row i, column j), centred as u = j - (w-1)/2, v = i - (h-1)/2, reads the input at column
    ``t0 u + t1 v + t2 + (w-1)/2`` and row ``t3 u + t4 v + t5 + (h-1)/2``; flow: None, or
    (N, 2, h*w) column and row offsets added to those coordinates (elastic distortion).
    """
    xp = get_array_module(x)
    n, hw = x.shape[0], h * w
    cx, cy = (w - 1) / 2, (h - 1) / 2
    grid = xp.arange(hw, dtype=np.int64)
    u = (grid % w).astype(x.dtype) - x.dtype.type(cx)
    v = (grid // w).astype(x.dtype) - x.dtype.type(cy)
    t = theta.astype(x.dtype)
    sx = t[:, 0:1] * u + t[:, 1:2] * v + (t[:, 2:3] + x.dtype.type(cx))
    sy = t[:, 3:4] * u + t[:, 4:5] * v + (t[:, 5:6] + x.dtype.type(cy))
    if flow is not None:
        sx += flow[:, 0]
        sy += flow[:, 1]
    x0, y0 = xp.floor(sx), xp.floor(sy)
    fx, fy = sx - x0, sy - y0
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    planes = x.reshape(n, -1, hw)
    acc = xp.zeros(planes.shape, x.dtype)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            idx = xp.clip(yi, 0, h - 1) * w + xp.clip(xi, 0, w - 1)
            weight = xp.where(inside, wx * wy, x.dtype.type(0))
            src = xp.take_along_axis(planes, xp.broadcast_to(idx[:, None], planes.shape), 2)
            acc += weight[:, None] * src
    out[...] = acc.reshape(n, -1)
