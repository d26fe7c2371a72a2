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
    xp.multiply(gy, y * (one - y), out=gx)
