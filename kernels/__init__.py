"""Fused kernels with one dispatcher.

Public ops (NumPy or CuPy in, the same kind out; a mix is a ``TypeError``)::

    loss, dlogits = softmax_cross_entropy(logits, labels)
    gx = sigmoid_backward(gy, y)                     # = activation_backward(gy, y, "sigmoid")
    bias_activation(x, b, "relu")                  # x = act(x + b) in place
    gx = activation_backward(gy, y, "tanh", bias_grad=gb)   # and gb = gx summed over rows
    sgd_update(...), adam_update(...)      # optimizer steps over one flat buffer, in place
    gather_rows(x, idx, scale, out)        # batch gather + uint8 -> float conversion
    gemm(a, b, out, alpha, beta)           # out = alpha a @ b + beta out (BLAS), in place

Each op has named twins with one contract: ``reference`` (plain ``xp``, the specification
and the fallback), ``numba`` (``numba.njit`` on NumPy arrays), ``numba-cuda`` (numba-cuda
kernels on CuPy arrays) and ``cupy`` (CuPy RawKernel/ElementwiseKernel twins, for the GPU
measurement that picks the default). ``set_mode("fused" | "reference")`` picks the fused
twin or the reference for every device; ``impl=`` picks one twin for a single call. A twin
that cannot be imported or fails to compile is replaced by the reference, with one warning;
an op a twin does not have (the GPU twins have no im2col) runs the reference.
"""

import functools
import importlib
import time
import warnings

import numpy as np

from . import reference
from .reference import column_sum  # the bias-gradient sum (ones @ g), for layers too
from ._checks import layout as blas_layout
from ._checks import (ACTIVATION_KINDS, FLOAT_DTYPES, check_float, check_labels, check_out,
                      check_writeable, get_array_module, is_cupy_array)

OPS = ("softmax_cross_entropy", "bias_activation", "activation_backward", "sgd_update",
       "adam_update", "gather_rows", "gemm", "im2col", "col2im", "maxpool_forward",
       "maxpool_backward")
ACTIVATIONS = tuple(ACTIVATION_KINDS)  # ("sigmoid", "relu", "tanh")
__all__ = [*OPS, "sigmoid_backward", "column_sum", "ACTIVATIONS", "set_mode", "get_mode",
           "set_fused", "implementations", "active_implementation", "has_twin", "describe",
           "prepare", "get_array_module"]

# Fused twin per device. CPU: numba, measured faster than NumPy for every op (README,
# bench/kernels.py). GPU: numba-cuda until a lent GPU measures the alternatives.
FUSED = {"cpu": "numba", "cuda": "numba-cuda"}
_MODULES = {"reference": "kernels.reference", "numba": "kernels.cpu",
            "numba-cuda": "kernels.cuda", "cupy": "kernels.cupy_native"}
_DEVICE_OF = {"reference": None, "numba": "cpu", "numba-cuda": "cuda", "cupy": "cuda"}
_state = {"mode": "fused", "broken": {}, "compile_seconds": {}}
_resolved = {}  # (name, op) -> callable, so a hot-path call costs one dict lookup
_active = {}  # (device, mode) -> twin name
_host = {}  # (impl, op) -> the twin's function in the current mode, for the NumPy fast paths
_has = {}  # (twin, op) -> whether the twin has op (has_twin)
_exact_bwd = {}  # impl -> activation_backward's exact-typed entry in this mode (_exact_fn)
_ndarray, _SIGMOID = np.ndarray, ACTIVATION_KINDS["sigmoid"]


def set_mode(mode):
    """Use the fused kernels (``"fused"``) or the plain-xp reference (``"reference"``)."""
    if mode not in ("fused", "reference"):
        raise ValueError(f"kernels mode must be 'fused' or 'reference', got {mode!r}")
    if mode != _state["mode"]:
        _state["mode"] = mode
        _host.clear()  # both hold the twins of the mode they were resolved in
        _exact_bwd.clear()


def get_mode():
    return _state["mode"]


def set_fused(device, name):
    """Choose which twin ``"fused"`` means on ``device`` (used by the GPU measurement)."""
    if _DEVICE_OF.get(name) != device:
        raise ValueError(f"{name!r} is not a {device} implementation; choose from "
                         f"{[n for n, d in _DEVICE_OF.items() if d == device]}")
    FUSED[device] = name
    _active.clear()
    _host.clear()
    _exact_bwd.clear()


def implementations(device):
    """Names of the twins that can run on ``device`` ('cpu' or 'cuda') here."""
    names = ["reference"]
    for name, dev in _DEVICE_OF.items():
        if dev == device and name not in _state["broken"] and _load(name) is not None:
            names.append(name)
    return names


def active_implementation(device):
    """The twin the dispatcher uses on ``device`` in the current mode."""
    name = FUSED[device] if _state["mode"] == "fused" else "reference"
    if name in _state["broken"] or _load(name) is None:
        return "reference"
    return name


def prepare(device):
    """Compile the active twin's kernels now (outside any timed region); return seconds."""
    name = active_implementation(device)
    if name == "numba" and "numba" not in _state["compile_seconds"]:
        try:
            _state["compile_seconds"]["numba"] = _load("numba").compile_all()
        except Exception as exc:  # noqa: BLE001 - any compile failure means: use the reference
            _mark_broken("numba", f"{type(exc).__name__}: {exc}")
    return _state["compile_seconds"].get(name, 0.0)


def has_twin(op, like):
    """True when the twin active for ``like``'s device (NumPy: cpu, CuPy: cuda) has a kernel
    of its own for ``op``, not the reference it falls back to (e.g. ``gemm`` where NumPy's
    BLAS was not found)."""
    name = _resolve(None, like)
    found = _has.get((name, op))
    if found is None:
        found = _has[(name, op)] = hasattr(_twin(name), op)
    return found


def describe(device="cpu"):
    """Active twin, fallback reasons and compile seconds, for ``xptrain info``."""
    prepare(device)
    name = active_implementation(device)
    return {"mode": _state["mode"], "device": device, "implementation": name,
            "kernels": list(OPS),
            "compile_seconds": _state["compile_seconds"].get(name),
            "unavailable": dict(_state["broken"])}


def _load(name):
    """Import a twin's module; None (with one warning) when it cannot be imported."""
    try:
        return importlib.import_module(_MODULES[name])
    except ImportError as exc:
        _mark_broken(name, f"cannot import: {exc}")
        return None


def _twin(name):
    """The module of twin ``name``; None for the reference, a twin marked broken or one
    that cannot be imported (their calls run the reference)."""
    return None if name == "reference" or name in _state["broken"] else _load(name)


def _mark_broken(name, reason):
    if name not in _state["broken"]:
        _state["broken"][name] = reason
        _resolved.clear()
        _active.clear()
        _host.clear()
        _exact_bwd.clear()
        _has.clear()
        warnings.warn(f"kernels: {name} unavailable ({reason}); using the reference",
                      RuntimeWarning, stacklevel=3)


def _resolve(impl, like):
    device = "cuda" if is_cupy_array(like) else "cpu"
    if impl is None:
        key = (device, _state["mode"])
        name = _active.get(key)
        if name is None:
            name = _active[key] = active_implementation(device)
        return name
    name = impl
    if name not in _MODULES:
        raise ValueError(f"unknown kernel implementation {name!r}; "
                         f"choose from {sorted(_MODULES)}")
    if _DEVICE_OF[name] not in (None, device) and not _simulated(name):
        raise TypeError(f"implementation {name!r} cannot run on {device} arrays")
    return name


def _simulated(name):
    module = _load(name) if name == "numba-cuda" else None
    return module is not None and module.simulator_enabled()


def _call(name, op, *args):
    """Run ``op`` of twin ``name``; a twin that fails to compile falls back to the reference."""
    fn = _resolved.get((name, op))
    if fn is None:
        module = _twin(name)
        if module is not None and not hasattr(module, op):
            module = None  # this twin has no kernel for op (e.g. no GPU im2col): reference
        fn = _resolved[(name, op)] = getattr(module or reference, op)
        if module is not None:
            return _first_call(name, op, fn, args)
    return fn(*args)


def _call_host(impl, op, *args):
    """:func:`_call` for NumPy arguments already checked by a fast path that found nothing
    in ``_host`` (see :func:`_host_fn`); caches the twin's function for ``(impl, op)`` in
    this mode once it has run (compiled)."""
    name = _resolve(impl, args[0])
    result = _call(name, op, *args)
    fn = _resolved.get((name, op))
    if fn is not None:
        _host[(impl, op)] = fn
    return result


def _host_fn(impl, op):
    """What a NumPy fast path calls on a cache miss. The fast paths write
    ``fn = _host.get((impl, op)) or _host_fn(impl, op)``, so a hit calls the twin with no
    frame in between (0.1 us of a 2.4 us sigmoid backward at batch 128, measured)."""
    return functools.partial(_call_host, impl, op)


def _exact_fn(impl, like):
    """What the activation backward's first route calls on a miss in ``_exact_bwd``: the
    active twin's exact-typed entry (see :func:`kernels.cpu.exact_entry`), or, where it has
    none (the reference, a broken twin, a failed compile, which warned), :func:`_not_run`.
    Keyed by ``impl`` alone, not ``(impl, op)`` as ``_host``: building that tuple cost
    0.05 us of a 2.1 us sigmoid backward (measured); cleared with ``_host``."""
    module = _twin(_resolve(impl, like))
    fn = module.exact_entry("activation_backward") if hasattr(module, "exact_entry") else None
    fn = _exact_bwd[impl] = fn or _not_run
    return fn


def _not_run(*args):
    return False


def _first_call(name, op, fn, args):
    start = time.perf_counter()
    try:
        result = fn(*args)
    except (TypeError, ValueError):
        _resolved.pop((name, op), None)
        raise
    except Exception as exc:  # noqa: BLE001 - a compile or launch failure: use the reference
        try:
            result = getattr(reference, op)(*args)
        except Exception:
            # The reference fails on these arguments too: the caller's error (the boundary
            # checks missed it), not a broken twin. Raise it; keep the twin.
            _resolved.pop((name, op), None)
            raise
        _mark_broken(name, f"{type(exc).__name__}: {exc}")
        return result
    _state["compile_seconds"].setdefault(f"{name}:{op}", time.perf_counter() - start)
    return result


def softmax_cross_entropy(logits, labels, out=None, row_loss=None, impl=None, check=True):
    """Mean softmax cross-entropy and its gradient with respect to the logits, in one pass.

    logits: (N, C) float32/float64; labels: (N,) integers in [0, C).
    Returns ``(loss, dlogits)``: ``loss`` a 0-d array of the logits' dtype on their device,
    ``dlogits = (softmax(logits) - onehot(labels)) / N`` (N, C). ``out`` (N, C) and ``row_loss``
    (N,) are optional buffers written in place; the inputs are never modified.
    ``check=False`` skips the label range check (a device sync on CuPy) for labels validated
    at load time; a bad label then yields a NaN loss, never an out-of-bounds write.
    """
    if (not check and type(logits) is np.ndarray and type(labels) is np.ndarray
            and type(out) is np.ndarray and type(row_loss) is np.ndarray and logits.ndim == 2
            and logits.dtype in FLOAT_DTYPES and logits.shape[1] and out.dtype is logits.dtype
            and row_loss.dtype is logits.dtype and labels.dtype.kind in "iu"
            and out.shape == logits.shape and labels.shape == row_loss.shape == logits.shape[:1]
            and logits.flags.c_contiguous and labels.flags.c_contiguous
            and out.flags.carray and row_loss.flags.carray):  # carray: C-contiguous, writeable
        # the training step's call (buffers given, labels checked at load): attribute reads
        # instead of the checks below (5.4 -> 4.7 us at batch 128, of which 2.7 the twin)
        op = "softmax_cross_entropy_rows"
        fn = _host.get((impl, op)) or _host_fn(impl, op)
        total = fn(logits, labels, row_loss, out)
        return _mean_loss(np, total, row_loss, logits.dtype), out
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
    total = _call(_resolve(impl, logits), "softmax_cross_entropy_rows", logits, labels, rows, gx)
    return _mean_loss(xp, total, rows, logits.dtype), gx


def _mean_loss(xp, total, rows, dtype):
    """The mean row loss as a 0-d array of ``dtype``: from ``total`` where the twin summed
    the rows itself (the CPU twins, in float64), else summed here."""
    n = max(rows.shape[0], 1)
    if total is not None:
        return xp.array(total / n, dtype)
    loss = rows.sum(keepdims=True).reshape(())
    loss *= dtype.type(1.0 / n)  # in place: stays a 0-d array
    return loss


def _rows_by_features(name, a):
    """``a`` viewed as 2-D (rows, last axis); it must be C-contiguous (written in place)."""
    if check_float(name, a) is not a or a.ndim == 0:
        raise ValueError(f"{name} must be a C-contiguous array of at least 1 dimension "
                         f"(it is written in place), got shape {tuple(a.shape)}")
    check_writeable(name, a)
    return a if a.ndim == 2 else a.reshape(-1, a.shape[-1])


def _check_activation(activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, "
                         f"got {activation!r}")


def bias_activation(x, b, activation, impl=None):
    """``x = act(x + b)`` in place, one pass; ``b`` (F,) over x's last axis, or None.

    ``activation``: "sigmoid", "relu" or "tanh". Returns ``x``.
    """
    if (type(x) is np.ndarray and x.ndim == 2 and x.dtype in FLOAT_DTYPES
            and x.flags.c_contiguous and x.flags.writeable and activation in ACTIVATIONS
            and (b is None or (type(b) is np.ndarray and b.dtype is x.dtype
                               and b.shape == (x.shape[1],) and b.flags.c_contiguous))):
        fn = _host.get((impl, "bias_activation")) or _host_fn(impl, "bias_activation")
        fn(x, b, activation)
        return x  # the training step's call, checked in a few attribute reads
    get_array_module(x, b)
    _check_activation(activation)
    x2 = _rows_by_features("x", x)
    if b is not None:
        _check_shape("b", b, (x2.shape[1],), x2.dtype)
    _call(_resolve(impl, x), "bias_activation", x2, b, activation)
    return x


def activation_backward(gy, y, activation, out=None, bias_grad=None, impl=None):
    """``gx = gy * act'(x)`` from the forward output ``y`` (sigmoid: ``y (1 - y)``; relu:
    ``y > 0``; tanh: ``1 - y^2``); ``bias_grad`` (F,), if given, gets ``gx`` summed over every
    axis but the last, in the same pass. ``out`` may be ``gy`` (in place); the inputs are
    otherwise never modified.
    """
    if out is gy and type(gy) is _ndarray and activation in ACTIVATIONS:
        fn = _exact_bwd.get(impl) or _exact_fn(impl, gy)
        try:
            if fn(gy, y, bias_grad, ACTIVATION_KINDS[activation]):
                return gy
        except TypeError:
            pass  # not the training step's types: the checked routes below
    if _host_activation_backward(gy, y, activation, out, bias_grad, impl):
        return gy
    return _checked_activation_backward(gy, y, activation, out, bias_grad, impl)


def _checked_activation_backward(gy, y, activation, out, bias_grad, impl):
    """:func:`activation_backward` for the calls its two fast routes do not take: every
    argument checked; any layout, any number of dimensions, a separate ``out``."""
    get_array_module(gy, y, out, bias_grad)
    _check_activation(activation)
    y = check_float("y", y)
    gy = check_float("gy", gy)
    if gy.shape != y.shape or gy.dtype != y.dtype or y.ndim == 0:
        raise ValueError(f"gy must match y (at least 1-D): got {tuple(gy.shape)} {gy.dtype} "
                         f"and {tuple(y.shape)} {y.dtype}")
    # The twins take C-contiguous arrays: a strided out or bias_grad is computed in a
    # contiguous buffer and copied into place afterwards.
    target = gb_target = None
    if out is not gy:
        out = check_out("out", out, y.shape, y.dtype, y, contiguous=False)
        if out is not None and not out.flags.c_contiguous:
            target, out = out, None
        out = get_array_module(y).empty_like(y) if out is None else out
        out[...] = gy
    else:  # in place: check_out did not see it
        check_writeable("out", out)
    g2 = out.reshape(-1, y.shape[-1])
    if bias_grad is not None:
        _check_shape("bias_grad", bias_grad, (g2.shape[1],), y.dtype, contiguous=False)
        check_writeable("bias_grad", bias_grad)
        if not bias_grad.flags.c_contiguous:
            gb_target, bias_grad = bias_grad, get_array_module(y).empty_like(bias_grad)
    _call(_resolve(impl, y), "activation_backward", g2, y.reshape(g2.shape), activation,
          bias_grad)
    if gb_target is not None:
        gb_target[...] = bias_grad
    if target is not None:
        target[...] = out
        return target
    return out


def _host_activation_backward(gy, y, activation, out, gb, impl):
    """Run the training step's call, in place on 2-D C-contiguous NumPy arrays of one float
    dtype, checked in a few attribute reads (the full route cost ~1 us of a 3 us sigmoid
    backward at batch 128); False, having done nothing, for any other call."""
    if not (out is gy and type(gy) is np.ndarray and type(y) is np.ndarray
            and gy.ndim == 2 and gy.shape == y.shape and gy.dtype is y.dtype
            and y.dtype in FLOAT_DTYPES and activation in ACTIVATIONS
            and gy.flags.carray and y.flags.c_contiguous  # carray: C-contiguous, writeable
            and (gb is None or (type(gb) is np.ndarray and gb.dtype is y.dtype
                                and gb.shape == (y.shape[1],) and gb.flags.carray))):
        return False
    fn = _host.get((impl, "activation_backward")) or _host_fn(impl, "activation_backward")
    fn(gy, y, activation, gb)
    return True


def sigmoid_backward(gy, y, out=None, bias_grad=None, impl=None):
    """gx = gy * y * (1 - y), with ``y`` the sigmoid's output; same shape and dtype as ``y``.

    ``out`` is an optional buffer written in place (it may be ``gy``); inputs are otherwise
    never modified. ``bias_grad``: see :func:`activation_backward`.
    """
    if out is gy and type(gy) is _ndarray:  # activation_backward's first route, inline
        fn = _exact_bwd.get(impl) or _exact_fn(impl, gy)
        try:
            if fn(gy, y, bias_grad, _SIGMOID):
                return gy
        except TypeError:
            pass
    if _host_activation_backward(gy, y, "sigmoid", out, bias_grad, impl):
        return gy
    return _checked_activation_backward(gy, y, "sigmoid", out, bias_grad, impl)


def _flat_buffers(names, arrays, written):
    """Check flat optimizer buffers: 1-D, C-contiguous, one float dtype and size, one device;
    the names in ``written`` writeable."""
    get_array_module(*arrays)
    for name, a in zip(names, arrays):
        if name in written:
            check_writeable(name, a)
    p = check_float(names[0], arrays[0], ndim=1)
    for name, a in zip(names[1:], arrays[1:]):
        if a.shape != p.shape or a.dtype != p.dtype or not a.flags.c_contiguous:
            raise ValueError(f"{name} must be a contiguous {p.dtype} array of shape "
                             f"{p.shape}, got {a.dtype} {tuple(a.shape)}")
    if p is not arrays[0]:
        raise ValueError(f"{names[0]} must be C-contiguous (it is updated in place)")
    return p.dtype.type


_NO_VELOCITY = {dtype: np.empty(0, dtype) for dtype in FLOAT_DTYPES}  # v without momentum


def sgd_update(p, g, v, lr, momentum=0.0, nesterov=False, weight_decay=0.0, n_decay=None,
               impl=None):
    """One SGD step in place on the flat parameters ``p`` from gradients ``g``.

    ``v`` is the momentum buffer (updated in place; ignored when momentum is 0); weight decay
    applies to ``p[:n_decay]`` (all of ``p`` by default). PyTorch's SGD formula.
    """
    if (type(p) is np.ndarray and type(g) is np.ndarray and p.ndim == 1
            and p.dtype in FLOAT_DTYPES and g.dtype is p.dtype and g.shape == p.shape
            and p.flags.carray and g.flags.c_contiguous
            and (not momentum or (type(v) is np.ndarray and v.dtype is p.dtype
                                  and v.shape == p.shape and v.flags.carray))):
        t = p.dtype.type  # the training step's call, checked in attribute reads
        fn = _host.get((impl, "sgd_update")) or _host_fn(impl, "sgd_update")
        fn(p, g, v if momentum else _NO_VELOCITY[p.dtype], t(lr),
           t(momentum), bool(nesterov), t(weight_decay),
           p.size if n_decay is None else int(n_decay))
        return
    arrays = (p, g) + ((v,) if momentum else ())
    t = _flat_buffers(("p", "g", "v")[:len(arrays)], arrays, ("p", "v"))
    v = v if momentum else p[:0]
    n_decay = p.size if n_decay is None else int(n_decay)
    _call(_resolve(impl, p), "sgd_update", p, g, v, t(lr), t(momentum), bool(nesterov),
          t(weight_decay), n_decay)


def adam_update(p, g, m, v, lr, step, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                decoupled=False, n_decay=None, impl=None):
    """One Adam (``decoupled=True``: AdamW) step in place; ``step`` is the 1-based count.

    ``m`` and ``v`` are the moment buffers (updated in place); weight decay applies to
    ``p[:n_decay]`` (all of ``p`` by default), as an L2 term (Adam) or decoupled (AdamW).
    """
    t = _flat_buffers(("p", "g", "m", "v"), (p, g, m, v), ("p", "m", "v"))
    n_decay = p.size if n_decay is None else int(n_decay)
    l2 = 0.0 if decoupled else weight_decay
    decay = 1.0 - lr * weight_decay if decoupled else 1.0
    bias2 = 1.0 - beta2 ** step
    _call(_resolve(impl, p), "adam_update", p, g, m, v, t(lr / (1.0 - beta1 ** step)),
          t(beta1), t(beta2), t(eps), t(bias2 ** -0.5), t(l2), t(decay), n_decay)


def gather_rows(x, idx, scale=1.0, out=None, dtype=None, impl=None):
    """``out[r] = x[idx[r]] * scale``: a batch gathered and converted in one pass.

    x: (N, F) uint8 or float; idx: (B,) integers. ``out`` (B, F) float32/float64 (a new
    float32 array by default). Out-of-range indices give NaN rows, never an out-of-bounds read.
    """
    if (type(out) is np.ndarray and type(x) is np.ndarray and type(idx) is np.ndarray
            and x.ndim == 2 and idx.ndim == 1 and idx.dtype.kind in "iu"
            and out.dtype in FLOAT_DTYPES and out.shape == (idx.shape[0], x.shape[1])
            and x.flags.c_contiguous and out.flags.carray):
        # the training step's call (its reusable batch buffer), checked in attribute reads
        fn = _host.get((impl, "gather_rows")) or _host_fn(impl, "gather_rows")
        fn(x, idx, out.dtype.type(scale), out)
        return out
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
    _call(_resolve(impl, x), "gather_rows", x, idx, out.dtype.type(scale), out)
    return out


def gemm(a, b, out, alpha=1.0, beta=0.0, impl=None):
    """``out = alpha * a @ b + beta * out`` in place (a BLAS GEMM); returns ``out``.

    a (M, K), b (K, N), out (M, N): one float dtype, one device. ``a`` and ``b`` are read as
    they are when BLAS can (:func:`_blas_ok`: C-contiguous, the transpose of one, or a window
    of whole columns of one, ``x[:, lo:hi]``, and its transpose), else copied; ``out`` must be
    C-contiguous, writeable and share no memory with ``a`` or ``b``. With ``beta = 0`` out is
    only written. Unlike ``matmul``, ``beta`` lets a product update ``out``: a Linear layer's
    SGD step rides in its weight-gradient product (``W = W - lr x.T gy``).
    """
    if (type(out) is np.ndarray and type(a) is np.ndarray and type(b) is np.ndarray
            and a.ndim == 2 and b.ndim == 2 and a.dtype is out.dtype and b.dtype is out.dtype
            and out.dtype in FLOAT_DTYPES and a.shape[1] == b.shape[0] and a.shape[1]
            and out.shape == (a.shape[0], b.shape[1]) and out.size and out.flags.carray
            and _blas_ok(a) and _blas_ok(b)
            and not np.may_share_memory(out, a) and not np.may_share_memory(out, b)):
        # the training step's call, checked in attribute reads; scalars stay Python floats
        # (the Numba twin casts them; a NumPy scalar built per call cost 0.25 us each)
        fn = _host.get((impl, "gemm")) or _host_fn(impl, "gemm")
        fn(a, b, out, alpha, beta)
        return out
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
    name = "reference" if 0 in (*a.shape, b.shape[1]) else _resolve(impl, out)
    _call(name, "gemm", a, b, out, t(alpha), t(beta))
    return out


def _operand(name, a):
    """A 2-D float operand of :func:`gemm`: as it is where BLAS reads it so (any layout
    :func:`_blas_ok` takes on the host, C or F order on a GPU), else a C-contiguous copy."""
    if getattr(a, "ndim", None) == 2 and a.dtype in FLOAT_DTYPES and (
            a.flags.f_contiguous or (type(a) is np.ndarray and _blas_ok(a))):
        return a
    return check_float(name, a, ndim=2)


def _blas_ok(a):
    """True for a 2-D array BLAS reads as it is (:func:`kernels._checks.layout`): C or F order,
    or whole columns of a C array, ``x[:, lo:hi]``, and its transpose."""
    flags = a.flags
    return flags.c_contiguous or flags.f_contiguous or blas_layout(
        *a.shape, *a.strides, a.itemsize)[0] != 0


def _windows(h, w, k, stride, pad, what):
    """(OH, OW) of k x k windows over an h x w image; an error unless at least one fits."""
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    if min(k, stride) < 1 or pad < 0 or min(oh, ow) < 1:
        raise ValueError(f"{what}: k={k}, stride={stride}, pad={pad} do not fit {h}x{w}")
    return oh, ow


def _check_shape(name, a, shape, dtype, contiguous=True):
    """The twins index by these shapes and check no bounds: a mismatch must stop here."""
    if (tuple(a.shape) != tuple(shape) or a.dtype != dtype
            or (contiguous and not a.flags.c_contiguous)):
        raise ValueError(f"{name} must be a C-contiguous {np.dtype(dtype)} array of shape "
                         f"{tuple(shape)}, got {a.dtype} {tuple(a.shape)}")


def im2col(x, k, stride, pad, out=None, impl=None):
    """Columns of every k x k window of channels-last ``x`` (N, H, W, C), zero-padded by
    ``pad``: returns (N, OH, OW, k, k, C), ``out`` if given."""
    xp = get_array_module(x, out)
    x = check_float("x", x, ndim=4)
    n, h, w, c = x.shape
    oh, ow = _windows(h, w, k, stride, pad, "im2col")
    shape = (n, oh, ow, k, k, c)
    out = xp.empty(shape, x.dtype) if out is None else check_out("out", out, shape, x.dtype, x)
    _call(_resolve(impl, x), "im2col", x, k, stride, pad, out)
    return out


def col2im(gcols, k, stride, pad, out):
    """The adjoint of :func:`im2col`: sums (N, OH, OW, k, k, C) columns back into ``out``
    (N, H, W, C), which is overwritten."""
    get_array_module(gcols, out)
    gcols = check_float("gcols", gcols, ndim=6)
    if out.ndim != 4:
        raise ValueError(f"out must be 4-D (N, H, W, C), got shape {tuple(out.shape)}")
    n, h, w, c = out.shape
    _check_shape("gcols", gcols, (n, *_windows(h, w, k, stride, pad, "col2im"), k, k, c),
                 gcols.dtype)
    check_out("out", out, out.shape, gcols.dtype, gcols)
    _call(_resolve(None, gcols), "col2im", gcols, k, stride, pad, out)
    return out


def maxpool_forward(x, k, stride, y, arg):
    """Max pooling of (N, H, W, C) into ``y`` (N, OH, OW, C); ``arg`` (uint8, same shape)
    gets the window position i*k + j of the first maximum."""
    get_array_module(x, y, arg)
    x = check_float("x", x, ndim=4)
    if k * k > 255:
        raise ValueError(f"max pool window {k}x{k} is too large (at most 15x15)")
    n, h, w, c = x.shape
    shape = (n, *_windows(h, w, k, stride, 0, "max pool"), c)
    _check_shape("y", y, shape, x.dtype)
    _check_shape("arg", arg, shape, np.uint8)
    check_writeable("y", y)
    check_writeable("arg", arg)
    _call(_resolve(None, x), "maxpool_forward", x, k, stride, y, arg)
    return y


def maxpool_backward(gy, arg, k, stride, gx):
    """Route ``gy`` (N, OH, OW, C) to each window's maximum in ``gx`` (N, H, W, C)."""
    get_array_module(gy, arg, gx)
    gy = check_float("gy", gy, ndim=4)
    if gx.ndim != 4:
        raise ValueError(f"gx must be 4-D (N, H, W, C), got shape {tuple(gx.shape)}")
    n, h, w, c = gx.shape
    _check_shape("gy", gy, (n, *_windows(h, w, k, stride, 0, "max pool"), c), gx.dtype)
    _check_shape("arg", arg, gy.shape, np.uint8)
    check_writeable("gx", gx)
    _call(_resolve(None, gy), "maxpool_backward", gy, arg, k, stride, gx)
    return gx
