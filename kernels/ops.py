"""Kernel ops resolved once per (device, twin): the object the engine holds beside ``xp``.

``resolve("cpu", "fused")`` returns an :class:`Ops` whose attributes are the twin's kernels
with the raw contracts of :mod:`xptrain.kernels.reference` (buffers validated by the caller,
where it allocated them; nothing is checked per call). There is no process-wide mode: two
trainers holding different ``Ops`` never see each other's choice.

Per op, the reference stands in where the twin has no kernel (the GPU twins have no im2col)
or where the op's first call failed for a reason other than its arguments (a compile
error): that op alone, with one warning; the twin's other ops keep running. An out-of-memory
error is the caller's resource problem, never a broken kernel: it is raised as it is.
"""

import importlib
import time
import warnings

from . import reference

# Every op an Ops object has; the twin modules implement what they can of it.
OPS = ("softmax_cross_entropy_rows", "bias_activation", "activation_backward", "column_sum",
       "column_window", "sgd_update", "adam_update", "gather_rows", "gemm", "im2col",
       "col2im", "maxpool_forward", "maxpool_backward", "affine_warp", "winograd_input",
       "winograd_output", "winograd_output_adjoint", "winograd_input_adjoint",
       "winograd_output_pool", "winograd_output_pool_adjoint")
# twin name -> (module in this package, the device it runs on; None: any)
TWINS = {"reference": ("reference", None), "numba": ("cpu", "cpu"),
         "numba-cuda": ("cuda", "cuda"), "cupy": ("cupy_native", "cuda")}
# What "fused" means per device. CPU: numba, measured faster than NumPy for every op
# (docs/kernels.md). GPU: numba-cuda until a GPU measurement picks per op.
FUSED = {"cpu": "numba", "cuda": "numba-cuda"}
MODES = ("fused", "reference")
DEVICES = ("cpu", "cuda")


def twin_name(device, mode):
    """The twin that ``mode`` ("fused", "reference" or a twin's own name) means on
    ``device``; a ``ValueError`` naming the choices otherwise."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    name = FUSED[device] if mode == "fused" else mode
    if name not in TWINS:
        raise ValueError(f"kernels must be one of {', '.join(MODES + tuple(TWINS))}, "
                         f"got {mode!r}")
    runs_on = TWINS[name][1]
    if runs_on not in (None, device) and not _simulated(name):
        raise ValueError(f"kernels {name!r} run on {runs_on}, not on {device}")
    return name


def _simulated(name):
    """numba-cuda under the CUDA simulator runs on NumPy arrays (the CPU)."""
    if name != "numba-cuda":
        return False
    module, _ = _import(name)
    return module is not None and module.simulator_enabled()


_modules = {}


def _import(name):
    """``(module, None)`` or ``(None, why)`` for twin ``name``; imported once."""
    if name not in _modules:
        try:
            _modules[name] = importlib.import_module(f".{TWINS[name][0]}", __package__), None
        except ImportError as exc:
            _modules[name] = None, f"cannot import: {exc}"
    return _modules[name]


class Ops:
    """One twin's kernels on one device, as attributes named by :data:`OPS`.

    ``own``: the ops the twin runs itself (the rest run the reference); ``fallbacks``: op ->
    why the reference runs it instead; ``compile_seconds``: measured first calls and the
    warm-up of :meth:`compile`.
    """

    def __init__(self, device, name):
        self.device, self.name = device, name
        self.fallbacks, self.compile_seconds, self.own = {}, {}, set()
        module, why = _import(name) if name != "reference" else (None, None)
        if why:
            warnings.warn(f"kernels: {name} unavailable ({why}); using the reference",
                          RuntimeWarning, stacklevel=3)
        self._module = module
        for op in OPS:
            fn = getattr(module, op, None) if module is not None else None
            if fn is None:
                setattr(self, op, getattr(reference, op))
                if why:
                    self.fallbacks[op] = why
            else:
                self.own.add(op)
                setattr(self, op, _FirstCall(self, op, fn))

    def __repr__(self):
        return f"Ops({self.device!r}, {self.name!r})"

    def compile(self):
        """Compile the twin's kernels now, outside any timed region; return the seconds (0
        when it has nothing to warm up). A failure warns and leaves each op to its first
        call."""
        warm = getattr(self._module, "compile_all", None)
        if warm is None or "all" in self.compile_seconds:
            return self.compile_seconds.get("all", 0.0)
        try:
            self.compile_seconds["all"] = warm()
        except Exception as exc:  # noqa: BLE001 - each op then falls back on its own
            self.compile_seconds["all"] = 0.0
            warnings.warn(f"kernels: warming up {self.name} failed ({type(exc).__name__}: "
                          f"{exc}); each op falls back on its first call", RuntimeWarning)
        return self.compile_seconds["all"]

    def fall_back(self, op, reason):
        """Run ``op`` with the reference from now on (one warning)."""
        setattr(self, op, getattr(reference, op))
        self.own.discard(op)
        self.fallbacks[op] = reason
        warnings.warn(f"kernels: {self.name} {op} failed ({reason}); that op uses the "
                      "reference from now on", RuntimeWarning, stacklevel=4)


class _FirstCall:
    """An op's first call: run the twin, and on success put the twin's function itself in
    the op's place (later calls cost one attribute lookup). A failure that the reference
    does not share is the twin's: this op falls back. Argument errors, out-of-memory errors
    and failures the reference shares are the caller's: raised, the twin kept."""

    def __init__(self, ops, op, fn):
        self.ops, self.op, self.fn = ops, op, fn

    def __call__(self, *args):
        start = time.perf_counter()
        try:
            result = self.fn(*args)
        except (TypeError, ValueError):
            raise
        except Exception as exc:  # noqa: BLE001 - a compile or launch failure
            if is_out_of_memory(exc):
                raise
            result = getattr(reference, self.op)(*args)  # raises if the caller is wrong
            self.ops.fall_back(self.op, f"{type(exc).__name__}: {exc}")
            return result
        self.ops.compile_seconds[self.op] = time.perf_counter() - start
        setattr(self.ops, self.op, self.fn)
        return result


def is_out_of_memory(exc):
    """True for CuPy's (or a CUDA library's) out-of-memory errors, without importing CuPy."""
    name = type(exc).__name__
    return name == "OutOfMemoryError" or (name == "CUDARuntimeError"
                                          and "out of memory" in str(exc).lower())


_resolved = {}


def resolve(device, mode="fused"):
    """The :class:`Ops` of ``mode`` ("fused", "reference" or a twin name) on ``device``
    ("cpu" or "cuda"); one object per (device, twin), shared by whoever asks."""
    name = twin_name(device, mode)
    key = (device, name)
    if key not in _resolved:
        _resolved[key] = Ops(device, name)
    return _resolved[key]


def for_array(impl, like):
    """The :class:`Ops` of ``impl`` (None: "fused") on the device of the array ``like``."""
    from ._checks import is_cupy_array

    return resolve("cuda" if is_cupy_array(like) else "cpu", impl or "fused")


def available(device):
    """Names of the twins that import and can run on ``device`` here."""
    return [name for name, (_, runs_on) in TWINS.items()
            if runs_on in (None, device) and (name == "reference" or _import(name)[0])]
