"""Plain-``xp`` reference kernels: the specification every fast twin must match.

Each function takes NumPy or CuPy arrays that the dispatcher already validated and writes
its results into the buffers it is given, so all implementations share one contract.
"""

from ._checks import get_array_module


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


def sigmoid_backward(gy, y, gx):
    """gx = gy * y * (1 - y), with y the sigmoid's forward output (any shape)."""
    one = y.dtype.type(1)
    xp = get_array_module(y)
    xp.multiply(gy, y * (one - y), out=gx)  # y * (1 - y) first: the same rounding as the twins


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
