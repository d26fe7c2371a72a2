"""Fused kernels: the checked public ops, and the resolved ops object the engine holds.

Public ops (NumPy or CuPy in, the same kind out; a mix is a ``TypeError``), every argument
checked on every call::

    loss, dlogits = softmax_cross_entropy(logits, labels)
    gx = sigmoid_backward(gy, y)                     # = activation_backward(gy, y, "sigmoid")
    bias_activation(x, b, "relu")                    # x = act(x + b) in place
    gx = activation_backward(gy, y, "tanh", bias_grad=gb)   # and gb = gx summed over rows
    sgd_update(...), adam_update(...)      # optimizer steps over one flat buffer, in place
    gather_rows(x, idx, scale, out)        # batch gather + uint8 -> float conversion
    gemm(a, b, out, alpha, beta)           # out = alpha a @ b + beta out (BLAS), in place
    column_window(x)                       # (lo, hi) outside which every column is zero
    im2col, col2im, maxpool_forward, maxpool_backward   # convolution helpers
    affine_warp(x, theta, (h, w), flow)    # bilinear resampling per image (augmentation)
    winograd_input, winograd_output, winograd_output_adjoint, winograd_input_adjoint,
    winograd_output_pool, winograd_output_pool_adjoint
                                           # Winograd F(2x2, 3x3) convolution transforms

Each op has named twins with one contract (:mod:`.reference`): ``reference`` (plain ``xp``,
the specification), ``numba`` (``numba.njit``, NumPy arrays), ``numba-cuda`` and ``cupy``
(CuPy arrays). ``impl=`` picks the twin of one call: "fused" (the default: the device's
fast twin), "reference" or a twin's name. The engine does not come through here: it holds
``resolve(device, mode)`` (:mod:`.ops`) and calls the raw kernels on buffers it validated
where it allocated them.
"""

import numpy as np

from . import reference
from ._checks import (
    ACTIVATION_KINDS,
    FLOAT_DTYPES,
    blas_readable,
    check_float,
    check_labels,
    check_out,
    check_shape,
    check_writeable,
    get_array_module,
    rows_by_features,
)
from .ops import FUSED, MODES, OPS, TWINS, Ops, available, for_array, resolve

ACTIVATIONS = tuple(ACTIVATION_KINDS)  # ("sigmoid", "relu", "tanh")
__all__ = ["softmax_cross_entropy", "bias_activation", "activation_backward",
           "sigmoid_backward", "column_sum", "column_window", "sgd_update", "adam_update",
           "gather_rows", "gemm", "im2col", "col2im", "maxpool_forward", "maxpool_backward",
           "affine_warp", "winograd_input", "winograd_output", "winograd_output_adjoint",
           "winograd_input_adjoint", "winograd_output_pool", "winograd_output_pool_adjoint",
           "ACTIVATIONS", "FUSED", "MODES", "OPS", "TWINS", "Ops", "available", "resolve",
           "describe", "get_array_module"]


def describe(device="cpu", mode="fused"):
    """The twin ``mode`` resolves to on ``device``, its fallbacks and compile seconds."""
    ops = resolve(device, mode)
    seconds = ops.compile()
    return {"mode": mode, "device": device, "implementation": ops.name,
            "own": sorted(ops.own), "compile_seconds": seconds,
            "unavailable": dict(ops.fallbacks)}


def _check_activation(activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, "
                         f"got {activation!r}")


def softmax_cross_entropy(logits, labels, out=None, row_loss=None, impl=None, check=True):
    """Mean softmax cross-entropy and its gradient with respect to the logits, in one pass.

    logits: (N, C) float32/float64; labels: (N,) integers in [0, C).
    Returns ``(loss, dlogits)``: ``loss`` a 0-d array of the logits' dtype on their device,
    ``dlogits = (softmax(logits) - onehot(labels)) / N`` (N, C). ``out`` (N, C) and ``row_loss``
    (N,) are optional buffers written in place; the inputs are never modified.
    ``check=False`` skips the label range check (a device sync on CuPy) for labels validated
    at load time; a bad label then yields a NaN loss, never an out-of-bounds write.
    """
    xp = get_array_module(logits, labels, out, row_loss)
    logits = check_float("logits", logits, ndim=2)
    n, c = logits.shape
    if c == 0:
        raise ValueError("logits must have at least one class column")
    labels = check_labels(labels, n, c, check_range=check)
    out = check_out("out", out, (n, c), logits.dtype, logits)
    row_loss = check_out("row_loss", row_loss, (n,), logits.dtype, logits)
    gx = xp.empty_like(logits) if out is None else out
    rows = xp.empty(n, logits.dtype) if row_loss is None else row_loss
    total = for_array(impl, logits).softmax_cross_entropy_rows(logits, labels, rows, gx)
    return reference.mean_loss(total, rows), gx


def bias_activation(x, b, activation, impl=None):
    """``x = act(x + b)`` in place, one pass; ``b`` (F,) over x's last axis, or None.

    ``activation``: "sigmoid", "relu" or "tanh". Returns ``x``.
    """
    get_array_module(x, b)
    _check_activation(activation)
    x2 = rows_by_features("x", x)
    if b is not None:
        check_shape("b", b, (x2.shape[1],), x2.dtype)
    for_array(impl, x).bias_activation(x2, b, activation)
    return x


def activation_backward(gy, y, activation, out=None, bias_grad=None, impl=None):
    """``gx = gy * act'(x)`` from the forward output ``y`` (sigmoid: ``y (1 - y)``; relu:
    ``y > 0``; tanh: ``1 - y^2``); ``bias_grad`` (F,), if given, gets ``gx`` summed over every
    axis but the last, in the same pass. ``out`` may be ``gy`` (in place); the inputs are
    otherwise never modified. Any layout: strided buffers are computed in contiguous ones
    and copied into place.
    """
    xp = get_array_module(gy, y, out, bias_grad)
    _check_activation(activation)
    y, gy = check_float("y", y), check_float("gy", gy)
    if gy.shape != y.shape or gy.dtype != y.dtype or y.ndim == 0:
        raise ValueError(f"gy must match y (at least 1-D): got {tuple(gy.shape)} {gy.dtype} "
                         f"and {tuple(y.shape)} {y.dtype}")
    target = gb_target = None
    if out is gy:
        check_writeable("out", out)
    else:
        out = check_out("out", out, y.shape, y.dtype, y, contiguous=False)
        if out is not None and not out.flags.c_contiguous:
            target, out = out, None
        out = xp.empty_like(y) if out is None else out
        out[...] = gy
    g2 = out.reshape(-1, y.shape[-1])
    if bias_grad is not None:
        check_shape("bias_grad", bias_grad, (g2.shape[1],), y.dtype, contiguous=False)
        check_writeable("bias_grad", bias_grad)
        if not bias_grad.flags.c_contiguous:
            gb_target, bias_grad = bias_grad, xp.empty_like(bias_grad)
    for_array(impl, y).activation_backward(g2, y.reshape(g2.shape), activation, bias_grad)
    if gb_target is not None:
        gb_target[...] = bias_grad
    if target is not None:
        target[...] = out
        return target
    return out


def sigmoid_backward(gy, y, out=None, bias_grad=None, impl=None):
    """gx = gy * y * (1 - y), with ``y`` the sigmoid's output: :func:`activation_backward`."""
    return activation_backward(gy, y, "sigmoid", out, bias_grad, impl)


def column_sum(g, out, impl=None):
    """``out = g.sum(axis=0)`` for 2-D ``g`` (a BLAS matrix-vector product); returns out."""
    get_array_module(g, out)
    g = check_float("g", g, ndim=2)
    check_out("out", out, (g.shape[1],), g.dtype, g)
    for_array(impl, g).column_sum(g, out)
    return out


def column_window(x, impl=None):
    """``(lo, hi)`` such that every column of 2-D ``x`` outside ``[lo, hi)`` is zero in every
    row (NaN is nonzero); ``(0, 0)`` for an all-zero ``x``. Python ints."""
    get_array_module(x)
    x = check_float("x", x, ndim=2)
    return for_array(impl, x).column_window(x)


def _flat_buffers(names, arrays, written):
    """Check flat optimizer buffers: 1-D, C-contiguous, one float dtype and size, one device;
    the names in ``written`` writeable. Returns the dtype."""
    get_array_module(*arrays)
    for name, a in zip(names, arrays):
        if name in written:
            check_writeable(name, a)
    p = check_float(names[0], arrays[0], ndim=1)
    if p is not arrays[0]:
        raise ValueError(f"{names[0]} must be C-contiguous (it is updated in place)")
    for name, a in zip(names[1:], arrays[1:]):
        if a.shape != p.shape or a.dtype != p.dtype or not a.flags.c_contiguous:
            raise ValueError(f"{name} must be a contiguous {p.dtype} array of shape "
                             f"{p.shape}, got {a.dtype} {tuple(a.shape)}")
    return p.dtype


def sgd_update(p, g, v, lr, momentum=0.0, nesterov=False, weight_decay=0.0, n_decay=None,
               impl=None):
    """One SGD step in place on the flat parameters ``p`` from gradients ``g``.

    ``v`` is the momentum buffer (updated in place; ignored when momentum is 0); weight decay
    applies to ``p[:n_decay]`` (all of ``p`` by default). PyTorch's SGD formula.
    """
    arrays = (p, g) + ((v,) if momentum else ())
    t = _flat_buffers(("p", "g", "v")[:len(arrays)], arrays, ("p", "v")).type
    v = v if momentum else p[:0]
    n_decay = p.size if n_decay is None else int(n_decay)
    for_array(impl, p).sgd_update(p, g, v, t(lr), t(momentum), bool(nesterov), t(weight_decay),
                             n_decay)


def adam_update(p, g, m, v, lr, step, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                decoupled=False, n_decay=None, impl=None):
    """One Adam (``decoupled=True``: AdamW) step in place; ``step`` is the 1-based count.

    ``m`` and ``v`` are the moment buffers (updated in place); weight decay applies to
    ``p[:n_decay]`` (all of ``p`` by default), as an L2 term (Adam) or decoupled (AdamW).
    """
    dtype = _flat_buffers(("p", "g", "m", "v"), (p, g, m, v), ("p", "m", "v"))
    n_decay = p.size if n_decay is None else int(n_decay)
    scalars = reference.adam_scalars(dtype, lr, step, beta1, beta2, eps, weight_decay,
                                     decoupled)
    for_array(impl, p).adam_update(p, g, m, v, *scalars, n_decay)


def gather_rows(x, idx, scale=1.0, out=None, dtype=None, impl=None):
    """``out[r] = x[idx[r]] * scale``: a batch gathered and converted in one pass.

    x: (N, F) uint8 or float; idx: (B,) integers. ``out`` (B, F) float32/float64 (a new
    float32 array by default). Out-of-range indices give NaN rows, never an out-of-bounds read.
    """
    xp = get_array_module(x, idx, out)
    if x.ndim != 2 or getattr(idx, "ndim", None) != 1 or idx.dtype.kind not in "iu":
        raise ValueError(f"gather_rows needs a 2-D x and 1-D integer idx, got x "
                         f"{tuple(x.shape)} and idx {getattr(idx, 'dtype', type(idx))}")
    shape = (idx.shape[0], x.shape[1])
    if out is None:
        out = xp.empty(shape, dtype or "float32")
    check_out("out", out, shape, out.dtype, x)
    check_float("out", out)
    if not x.flags.c_contiguous:
        x = xp.ascontiguousarray(x)
    if not idx.flags.c_contiguous:
        idx = xp.ascontiguousarray(idx)
    for_array(impl, x).gather_rows(x, idx, out.dtype.type(scale), out)
    return out


def gemm(a, b, out, alpha=1.0, beta=0.0, impl=None):
    """``out = alpha * a @ b + beta * out`` in place (a BLAS GEMM); returns ``out``.

    a (M, K), b (K, N), out (M, N): one float dtype, one device. ``a`` and ``b`` are read as
    they are where BLAS can (:func:`._checks.blas_readable`: C or F order, or whole columns
    of a C array, ``x[:, lo:hi]``, and its transpose), else copied; ``out`` must be
    C-contiguous, writeable and share no memory with ``a`` or ``b``. With ``beta = 0`` out is
    only written.
    """
    xp = get_array_module(a, b, out)
    a, b = _operand("a", a), _operand("b", b)
    if a.dtype != b.dtype or a.shape[1] != b.shape[0]:
        raise ValueError(f"gemm: a {tuple(a.shape)} {a.dtype} and b {tuple(b.shape)} {b.dtype}"
                         " must share a dtype and the inner size")
    if out is None:
        raise TypeError("gemm: out is required (it is written in place)")
    check_out("out", out, (a.shape[0], b.shape[1]), a.dtype, a)
    if xp.may_share_memory(out, a) or xp.may_share_memory(out, b):
        raise ValueError("gemm: out must not share memory with a or b")
    t = out.dtype.type
    empty = 0 in (*a.shape, b.shape[1])  # BLAS takes no zero sizes: the reference does
    for_array("reference" if empty else impl, out).gemm(a, b, out, t(alpha), t(beta))
    return out


def _operand(name, a):
    """A 2-D float operand of :func:`gemm`: as it is where BLAS reads it so (any layout
    :func:`blas_readable` takes on the host, C or F order on a GPU), else a C-contiguous
    copy."""
    if getattr(a, "ndim", None) == 2 and a.dtype in FLOAT_DTYPES and (
            a.flags.f_contiguous or (type(a) is np.ndarray and blas_readable(a))):
        return a
    return check_float(name, a, ndim=2)


from .conv_ops import col2im, im2col, maxpool_backward, maxpool_forward  # noqa: E402
from .warp_ops import affine_warp  # noqa: E402
from .winograd_ops import (  # noqa: E402
    winograd_input,
    winograd_input_adjoint,
    winograd_output,
    winograd_output_adjoint,
    winograd_output_pool,
    winograd_output_pool_adjoint,
)
