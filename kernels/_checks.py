"""Validation at the kernels' boundary: the kernels themselves validate nothing.

Also home of :func:`get_array_module`, which decides NumPy or CuPy from the arrays
themselves without importing CuPy (it looks in ``sys.modules``).
"""

import sys

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# The activations by name, and the code every twin's kernels branch on (kind == 0 ...).
ACTIVATION_KINDS = {"sigmoid": 0, "relu": 1, "tanh": 2}


def is_cupy_array(a):
    """True when ``a`` is a CuPy array; never imports CuPy."""
    cp = sys.modules.get("cupy")
    return cp is not None and isinstance(a, cp.ndarray)


def get_array_module(*arrays):
    """Return ``numpy`` or ``cupy`` for ``arrays``; a mix of both is a ``TypeError``."""
    cp = sys.modules.get("cupy")
    if cp is None:  # no CuPy array can exist: the common CPU case, kept cheap
        return np
    kinds = {isinstance(a, cp.ndarray) for a in arrays if a is not None}
    if len(kinds) > 1:
        names = ", ".join(f"{type(a).__module__}.{type(a).__name__}" for a in arrays)
        raise TypeError(f"arrays are on different devices (got {names}); "
                        "move them to one device first")
    if kinds == {True}:
        return sys.modules["cupy"]
    return np


def check_float(name, a, ndim=None):
    """Check ``a`` is a float32/float64 array (of ``ndim`` dims); return it C-contiguous."""
    if not hasattr(a, "dtype") or not hasattr(a, "shape"):
        raise TypeError(f"{name} must be a NumPy or CuPy array, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(a.shape)}")
    if not a.flags.c_contiguous:
        a = get_array_module(a).ascontiguousarray(a)
    return a


def check_labels(labels, n_samples, n_classes, check_range=True):
    """Check integer labels of shape (n_samples,) in [0, n_classes); return them contiguous.

    The range check reads every label (a device sync on CuPy); callers that validated the
    labels once at load time pass ``check_range=False``. The kernels never write out of
    bounds even then: a row with a bad label gets a NaN loss.
    """
    if not hasattr(labels, "dtype") or labels.dtype.kind not in "iu":
        got = getattr(labels, "dtype", type(labels).__name__)
        raise TypeError(f"labels must be an integer array, got {got}")
    if labels.shape != (n_samples,):
        raise ValueError(f"labels must have shape ({n_samples},) to match logits, "
                         f"got {tuple(labels.shape)}")
    if check_range and n_samples:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= n_classes:
            raise ValueError(f"labels must lie in [0, {n_classes}), got values in [{lo}, {hi}]")
    if not labels.flags.c_contiguous:
        labels = get_array_module(labels).ascontiguousarray(labels)
    return labels


def check_writeable(name, a):
    """A read-only NumPy array written by a kernel is the caller's error: say so here (a
    Numba twin would fail to compile for it, which must not read as a broken twin)."""
    if not getattr(a.flags, "writeable", True):  # CuPy arrays have no such flag
        raise ValueError(f"{name} is read-only, but it is written in place; pass a "
                         "writeable array")
    return a


def check_out(name, out, shape, dtype, like, contiguous=True):
    """Check an ``out=`` buffer: right shape and dtype, C-contiguous (unless ``contiguous`` is
    False), writeable, same device as ``like``."""
    if out is None:
        return None
    if type(out) is not type(like):
        get_array_module(out, like)  # raises the device-mix TypeError
        raise TypeError(f"{name} must be an array of the same kind as the inputs")
    if out.shape != tuple(shape) or out.dtype != dtype:
        raise ValueError(f"{name} must have shape {tuple(shape)} and dtype {dtype}, "
                         f"got {tuple(out.shape)} {out.dtype}")
    if contiguous and not out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    return check_writeable(name, out)


NO_TRANS, TRANS = 111, 112  # CBLAS_TRANSPOSE


def layout(m, k, s0, s1, item):
    """How BLAS reads an (m, k) operand with byte strides (s0, s1) and element size ``item``:
    ``(NO_TRANS, lda)`` row by row (C order, or whole columns of a C array, ``x[:, lo:hi]``),
    ``(TRANS, lda)`` as the transpose of such an array, or ``(0, 0)`` when neither fits (no
    unit stride, a negative or overlapping one). A stride along a dimension of 1 is never
    used. Plain Python, also compiled into the Numba GEMM: one rule for the check and the
    call (a tuple either way, so Numba types no optional)."""
    if (k == 1 or s1 == item) and (m == 1 or (s0 % item == 0 and s0 >= k * item)):
        return NO_TRANS, (max(k, 1) if m == 1 else s0 // item)
    if (m == 1 or s0 == item) and (k == 1 or (s1 % item == 0 and s1 >= m * item)):
        return TRANS, (max(m, 1) if k == 1 else s1 // item)
    return 0, 0


def blas_readable(a):
    """True for a 2-D array BLAS reads as it is (:func:`layout`): C or F order, or whole
    columns of a C array, ``x[:, lo:hi]``, and its transpose."""
    flags = a.flags
    return flags.c_contiguous or flags.f_contiguous or layout(
        *a.shape, *a.strides, a.itemsize)[0] != 0


def check_shape(name, a, shape, dtype, contiguous=True):
    """The twins index by these shapes and check no bounds: a mismatch must stop here."""
    if (tuple(a.shape) != tuple(shape) or a.dtype != dtype
            or (contiguous and not a.flags.c_contiguous)):
        raise ValueError(f"{name} must be a C-contiguous {np.dtype(dtype)} array of shape "
                         f"{tuple(shape)}, got {a.dtype} {tuple(a.shape)}")


def rows_by_features(name, a):
    """``a`` viewed as 2-D (rows, last axis); it must be C-contiguous (written in place)."""
    if check_float(name, a) is not a or a.ndim == 0:
        raise ValueError(f"{name} must be a C-contiguous array of at least 1 dimension "
                         f"(it is written in place), got shape {tuple(a.shape)}")
    check_writeable(name, a)
    return a if a.ndim == 2 else a.reshape(-1, a.shape[-1])


def windows(h, w, k, stride, pad, what):
    """(OH, OW) of k x k windows over an h x w image; an error unless at least one fits."""
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    if min(k, stride) < 1 or pad < 0 or min(oh, ow) < 1:
        raise ValueError(f"{what}: k={k}, stride={stride}, pad={pad} do not fit {h}x{w}")
    return oh, ow
