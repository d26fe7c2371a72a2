"""The kernel test matrix, shared by the NumPy, CuPy and CUDA-simulator test files.

Cases: dtype x shape x value regime x layout, each compared with the plain-xp reference.
"""

import zlib

import numpy as np
from xptrain.kernels import reference

TOL = {np.float32: dict(rtol=2e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}
SHAPES = [(1, 10), (3, 1), (7, 3), (33, 10), (129, 17), (257, 10)]
REGIMES = ["normal", "huge", "equal", "nan_row"]
LAYOUTS = ["c", "fortran", "strided"]


def case_seed(*parts):
    """A seed for one test case from its parameters: the same on every run (unlike hash(),
    which PYTHONHASHSEED changes), different across cases."""
    return zlib.crc32(repr(parts).encode())


def make_logits(shape, dtype, regime, layout, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 3
    if regime == "huge":
        x = rng.choice([-1e4, 1e4], size=shape) + rng.standard_normal(shape)
    elif regime == "equal":
        x = np.full(shape, 7.5)
    elif regime == "nan_row":
        x[shape[0] // 2, shape[1] // 2] = np.nan
    return arrange(x.astype(dtype), layout)


def arrange(x, layout):
    """2-D ``x`` (same values) laid out as: "c"; "fortran"; "strided", every other column
    of a wider array (no unit stride along the rows); "window", a slice of whole columns of
    a wider C array (``wide[:, lo:hi]``); "window_t", the transpose of such a slice."""
    if layout == "fortran":
        return np.asfortranarray(x)
    if layout == "strided":
        wide = np.zeros((x.shape[0], 2 * x.shape[1]), x.dtype)
        wide[:, ::2] = x
        return wide[:, ::2]
    if layout in ("window", "window_t"):
        rows, cols = x.shape if layout == "window" else x.shape[::-1]
        wide = np.full((rows, cols + 5), np.nan, x.dtype)  # read outside: NaN in the result
        wide[:, 3:3 + cols] = x if layout == "window" else x.T
        view = wide[:, 3:3 + cols]
        return view if layout == "window" else view.T
    return x


def make_labels(n, c, seed, dtype=np.int64):
    return np.random.default_rng(seed + 1).integers(0, c, n).astype(dtype)


def spy_activation_backward(monkeypatch, module):
    """Replace ``module.activation_backward`` (a twin's or the reference's) with one that
    records each call's activation and runs the reference; return the record."""
    calls, run = [], reference.activation_backward

    def spy(g, y, activation, gb):
        calls.append(activation)
        return run(g, y, activation, gb)

    monkeypatch.setattr(module, "activation_backward", spy)
    return calls
