"""The one place that decides the device: ``auto`` | ``cpu`` | ``cuda``.

CuPy is imported only when CUDA is asked for or probed (``auto``), never on ``cpu``. The
reason CUDA is or is not used is kept and said once.
"""

import os
import sys

import numpy as np

from .errors import UserError
from .kernels._checks import get_array_module, is_cupy_array
from .kernels.ops import is_out_of_memory  # noqa: F401 - part of this API

__all__ = ["Backend", "BackendError", "DeviceMemoryError", "select_backend", "probe_cuda",
           "get_array_module", "to_host"]

DEVICES = ("auto", "cpu", "cuda")
INSTALL_HINT = ('install CuPy for your CUDA version: pip install "xptrain[cuda12]" '
                '(or "xptrain[cuda13]" for CUDA 13)')


def to_host(a):
    """A NumPy copy of ``a`` (a NumPy or CuPy array); a device sync on CuPy."""
    return a.get() if is_cupy_array(a) else np.array(a)


class BackendError(UserError, RuntimeError):
    """The requested device cannot be used; the message says why and what to do."""


class Backend:
    """An array namespace (``xp``) with the few device operations the engine needs."""

    def __init__(self, name, xp, reason, device_name):
        self.name, self.xp, self.reason, self.device_name = name, xp, reason, device_name

    def __repr__(self):
        return f"Backend({self.name!r}, {self.device_name!r})"

    def asarray(self, a, dtype=None):
        """Host (NumPy) array -> array on this device."""
        return self.xp.asarray(a, dtype=dtype)

    def to_host(self, a):
        """Array on this device -> NumPy copy (a device sync on CUDA)."""
        return to_host(a)

    def synchronize(self):
        if self.name == "cuda":
            self.xp.cuda.get_current_stream().synchronize()

    def describe(self):
        return f"{self.name} ({self.device_name}): {self.reason}"


_probe_cache = {}


def probe_cuda():
    """Return ``(cupy, device_name, None)`` if a usable GPU is there, else ``(None, None, why)``.

    Usable means: CuPy imports, sees a device, and a smoke test that touches cuBLAS (a small
    matmul), the runtime compiler (an elementwise op) and a synchronize succeeds.
    """
    if "result" in _probe_cache:
        return _probe_cache["result"]
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken install raising anything else
        result = (None, None, f"CuPy is not installed ({type(exc).__name__}: {exc})")
    else:
        result = _smoke_test(cupy)
    _probe_cache["result"] = result
    return result


def _smoke_test(cupy):
    try:
        count = cupy.cuda.runtime.getDeviceCount()
        if count < 1:
            return None, None, "CuPy found no CUDA device"
        a = cupy.arange(12, dtype=cupy.float32).reshape(3, 4)
        b = (a @ a.T) * cupy.float32(0.5) + cupy.float32(1)
        cupy.cuda.get_current_stream().synchronize()
        if float(b[0, 0]) != 8.0:
            return None, None, "the GPU smoke test computed a wrong result"
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return cupy, name, None
    except Exception as exc:  # CUDARuntimeError, CUBLASError, CompileException, ...
        return None, None, f"the GPU smoke test failed ({type(exc).__name__}: {exc})"


class DeviceMemoryError(BackendError):
    """The GPU ran out of memory; the message names the batch size and the bytes asked for."""


def out_of_memory_error(exc, batch_size, what="training"):
    """A :class:`DeviceMemoryError` for ``exc``, naming the batch size and the request."""
    import re

    asked = re.search(r"allocating ([\d,]+) bytes", str(exc))
    amount = f"{int(asked.group(1).replace(',', '')) / 2**20:,.1f} MiB" if asked else "memory"
    return DeviceMemoryError(
        f"CUDA out of memory during {what} at batch size {batch_size}: asked for {amount} "
        f"({exc}); lower --batch-size or --hidden, or free GPU memory")


def _tf32(backend):
    """Turn TF32 on for ``backend`` or refuse: it must be CUDA with compute capability >=
    8.0, and CuPy must read ``CUPY_TF32=1`` when it is imported, which :func:`select_backend`
    arranges when it imports CuPy itself."""
    if backend.name != "cuda":
        raise BackendError(f"--tf32 needs a CUDA GPU, but this run is on the CPU "
                           f"({backend.reason})")
    if os.environ.get("CUPY_TF32") != "1":
        raise BackendError("--tf32: CuPy was imported before TF32 was asked for, so it "
                           "cannot take effect; set CUPY_TF32=1 in the environment instead")
    major = int(backend.xp.cuda.Device().compute_capability) // 10
    if major < 8:
        raise BackendError(f"--tf32 needs compute capability >= 8.0; {backend.device_name} "
                           f"has {major}.x")
    backend.reason += "; TF32 matrix products on"
    return backend


def select_backend(device="auto", tf32=False):
    """Return the :class:`Backend` for ``device``; ``cuda`` unusable is a :class:`BackendError`.

    ``tf32=True``: TF32 matrix products on CUDA (it changes numerics), or a
    :class:`BackendError` saying why it cannot take effect.
    """
    if device not in DEVICES:
        raise BackendError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if tf32 and "cupy" not in sys.modules:
        os.environ["CUPY_TF32"] = "1"  # read by CuPy when it is imported, below
    if device == "cpu":
        backend = Backend("cpu", np, "asked for with --device cpu", "CPU")
    else:
        backend = _cuda_or_cpu(device)
    return _tf32(backend) if tf32 else backend


def _cuda_or_cpu(device):
    cupy, name, why = probe_cuda()
    if cupy is not None:
        return Backend("cuda", cupy, "CuPy and a working GPU found", name)
    if device == "cuda":
        raise BackendError(f"--device cuda cannot be used: {why}; {INSTALL_HINT}")
    return Backend("cpu", np, f"no usable GPU: {why}", "CPU")
