"""Fused elementwise kernels with one dispatcher.

Public ops (NumPy or CuPy in, the same kind out; a mix is a ``TypeError``)::

    loss, dlogits = softmax_cross_entropy(logits, labels)
    gx = sigmoid_backward(gy, y)

Each op has named twins with one contract: ``reference`` (plain ``xp``, the specification
and the fallback), ``numba`` (``numba.njit`` on NumPy arrays) and ``numba-cuda`` (numba-cuda
kernels on CuPy arrays). ``set_mode("fused" | "reference")`` picks the fused twin or the
reference for every device; ``impl=`` picks one twin for a single call.
"""

import importlib
import time
import warnings

from . import reference
from ._checks import check_float, check_labels, check_out, get_array_module, is_cupy_array

__all__ = ["softmax_cross_entropy", "sigmoid_backward", "set_mode", "get_mode",
           "implementations", "active_implementation", "describe", "get_array_module"]

# Fused twin per device. CPU: measured 5x+ faster than NumPy at batch 128 (see README).
# GPU: numba-cuda until a lent GPU measures the alternatives (bench/gpu_check.py).
FUSED = {"cpu": "numba", "cuda": "numba-cuda"}
_MODULES = {"reference": "kernels.reference", "numba": "kernels.cpu",
            "numba-cuda": "kernels.cuda"}
_DEVICE_OF = {"reference": None, "numba": "cpu", "numba-cuda": "cuda"}
_state = {"mode": "fused", "broken": {}, "compile_seconds": {}}


def set_mode(mode):
    """Use the fused kernels (``"fused"``) or the plain-xp reference (``"reference"``)."""
    if mode not in ("fused", "reference"):
        raise ValueError(f"kernels mode must be 'fused' or 'reference', got {mode!r}")
    _state["mode"] = mode


def get_mode():
    return _state["mode"]


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


def describe(device="cpu"):
    """Active twin, fallback reason and compile seconds per kernel, for ``xptrain info``."""
    name = active_implementation(device)
    if name == "numba" and "numba" not in _state["compile_seconds"]:
        _state["compile_seconds"]["numba"] = _load("numba").compile_all()
    return {"mode": _state["mode"], "device": device, "implementation": name,
            "kernels": ["softmax_cross_entropy", "sigmoid_backward"],
            "compile_seconds": _state["compile_seconds"].get(name),
            "unavailable": dict(_state["broken"])}


def _load(name):
    """Import a twin's module; None (with one warning) when it cannot be imported."""
    try:
        return importlib.import_module(_MODULES[name])
    except ImportError as exc:
        _mark_broken(name, f"cannot import: {exc}")
        return None


def _mark_broken(name, reason):
    if name not in _state["broken"]:
        _state["broken"][name] = reason
        warnings.warn(f"kernels: {name} unavailable ({reason}); using the reference",
                      RuntimeWarning, stacklevel=3)


def _resolve(impl, like):
    device = "cuda" if is_cupy_array(like) else "cpu"
    name = impl or active_implementation(device)
    if name not in _MODULES:
        raise ValueError(f"unknown kernel implementation {name!r}; "
                         f"choose from {sorted(_MODULES)}")
    if _DEVICE_OF[name] not in (None, device) and not _simulated(name):
        raise TypeError(f"implementation {name!r} cannot run on {device} arrays")
    return name


def _simulated(name):
    return name == "numba-cuda" and _load(name) is not None and _load(name).simulator_enabled()


def _call(name, op, *args):
    """Run ``op`` of twin ``name``; a twin that fails to compile falls back to the reference."""
    module = _load(name) if name not in _state["broken"] else None
    if module is None:
        return getattr(reference, op)(*args)
    start = time.perf_counter()
    try:
        getattr(module, op)(*args)
    except (TypeError, ValueError):
        raise
    except Exception as exc:  # a compile or launch failure: keep training on the reference
        if name == "reference":
            raise
        _mark_broken(name, f"{type(exc).__name__}: {exc}")
        getattr(reference, op)(*args)
    else:
        _state["compile_seconds"].setdefault(name, time.perf_counter() - start)


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
    _call(_resolve(impl, logits), "softmax_cross_entropy_rows", logits, labels, rows, gx)
    # One reduction call for every twin, so their losses differ by rounding only.
    loss = rows.mean(keepdims=True).reshape(()) if n else xp.zeros((), logits.dtype)
    return loss, gx


def sigmoid_backward(gy, y, out=None, impl=None):
    """gx = gy * y * (1 - y), with ``y`` the sigmoid's output; same shape and dtype as ``y``.

    ``out`` is an optional buffer written in place; the inputs are never modified.
    """
    get_array_module(gy, y, out)
    y = check_float("y", y)
    gy = check_float("gy", gy)
    if gy.shape != y.shape or gy.dtype != y.dtype:
        raise ValueError(f"gy must match y: got {tuple(gy.shape)} {gy.dtype} "
                         f"and {tuple(y.shape)} {y.dtype}")
    out = check_out("out", out, y.shape, y.dtype, y)
    gx = get_array_module(y).empty_like(y) if out is None else out
    _call(_resolve(impl, y), "sigmoid_backward", gy, y, gx)
    return gx
