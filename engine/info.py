"""``xptrain info``: versions, devices, and why CUDA is or is not used."""

import os
import platform
from importlib import metadata

import numpy as np


def _dist_version(*names):
    for name in names:
        try:
            return f"{metadata.version(name)} ({name})"
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def collect():
    import numba

    from . import __version__, kernels
    from .backend import probe_cuda

    info = {"xptrain": __version__, "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__,
            "cupy": _dist_version("cupy-cuda12x", "cupy-cuda13x", "cupy"),
            "numba-cuda": _dist_version("numba-cuda"),
            "cpu": f"{platform.machine()}, {os.cpu_count()} logical cores"}
    cupy, name, why = probe_cuda()
    info["cuda"] = f"usable: {name}" if cupy is not None else f"not used: {why}"
    info["auto device"] = "cuda" if cupy is not None else "cpu"
    for device in ("cpu", "cuda") if cupy is not None else ("cpu",):
        d = kernels.describe(device)
        compile_s = d["compile_seconds"]
        info[f"kernels ({device})"] = (
            f"{d['implementation']} for {', '.join(d['own']) or 'none'} (the reference for the "
            f"rest; JIT "
            + (f"warm-up {compile_s:.2f}s)" if compile_s else "nothing to compile)"))
        for name_, reason in d["unavailable"].items():
            info[f"  {name_}"] = f"unavailable: {reason}"
    info["gemm (cpu)"] = _gemm_line()
    return info


def _gemm_line():
    """Where the CPU twin's GEMM (alpha/beta: the folded SGD step) goes, or why not."""
    from .kernels import blas

    if blas.FOUND is None:
        return f"reference (np.matmul and a pass for alpha/beta): {blas.REASON}"
    return (f"NumPy's BLAS from Numba, {'64' if blas.FOUND.ilp64 else '32'}-bit integers: "
            f"{os.path.basename(blas.FOUND.path)}")
