"""The numba-cuda kernels (kernels.cuda) compiled to PTX without a GPU.

The simulator (tests/cudasim) runs the kernels as Python, so it never types or lowers them
for a device. Here every kernel goes through Numba's real CUDA pipeline, with the argument
types its wrapper launches it with. That needs NVVM (``pip install ".[cudasrc]"``, or a CUDA
toolkit), not a GPU, and skips naming it where NVVM is missing (CI). The float32 kernels
must not compute in float64, which a GPU runs many times slower.
"""

import os
import re

import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("the CUDA simulator is on: no PTX to compile", allow_module_level=True)


def _nvvm_missing():
    try:
        from numba.cuda.cudadrv import nvvm

        nvvm.NVVM()
    except Exception as exc:  # noqa: BLE001 - any failure: no NVVM to compile with
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


WHY = _nvvm_missing()
if WHY:
    pytest.skip(f"NVVM not usable ({WHY}); pip install '.[cudasrc]' or a CUDA toolkit "
                "to compile the numba-cuda kernels without a GPU", allow_module_level=True)

from numba import cuda, types  # noqa: E402 - only once NVVM is known to be there
from xptrain.kernels import cuda as twin  # noqa: E402


def _c(dtype, ndim):
    return types.Array(dtype, ndim, "C")


def _signatures(f):
    """Kernel name -> argument types, as the wrappers in kernels.cuda launch them."""
    return {
        "softmax_ce": [(_c(f, 2), _c(label, 1), _c(f, 1), _c(f, 2), f)
                       for label in (types.int64, types.int32, types.uint8)],
        "bias_act": [(_c(f, 2), _c(f, 1), types.int32, f)],
        "act_bwd": [(_c(f, 1), _c(f, 1), types.int32, f)],
        "column_sum": [(_c(f, 2), _c(f, 1), f)],
        "sgd": [(_c(f, 1), _c(f, 1), _c(f, 1), f, f, types.boolean, f, types.int64)],
        "adam": [(*(_c(f, 1),) * 4, *(f,) * 9, types.int64)],
        "gather": [(_c(src, 2), _c(types.int64, 1), f, _c(f, 2))
                   for src in (types.uint8, f)],
        "warp": [(_c(f, 2), _c(f, 2), _c(f, 3), types.boolean, _c(f, 1), _c(f, 1), f, f, f,
                  types.int64, types.int64, _c(f, 2))],
    }


CASES = [(name, dtype, sig) for dtype in (types.float32, types.float64)
         for name, sigs in _signatures(dtype).items() for sig in sigs]


def test_every_kernel_has_a_signature():
    built = {k for k in twin._build() if k != "cuda"}
    assert built == {name for name, _, _ in CASES}


@pytest.mark.parametrize("name,dtype,sig", CASES,
                         ids=[f"{n}-{d}-{i}" for i, (n, d, _) in enumerate(CASES)])
def test_kernel_compiles_to_ptx(name, dtype, sig):
    ptx, restype = cuda.compile_ptx(twin._build()[name].py_func, sig, cc=(8, 0))
    assert restype == types.void and ".entry" in ptx
    if dtype == types.float32:
        f64 = _f64_lines(ptx)
        assert not f64, f"{name} computes in float64: {f64[:3]}"


def _f64_lines(ptx):
    return [line.strip() for line in ptx.splitlines()
            if re.search(r"\.f64\b", line) and not line.strip().startswith("//")]


def test_the_float64_check_sees_a_promotion():
    def halve(x):
        x[0] = x[0] * 0.1  # a Python float: float64 math on a float32 array

    ptx, _ = cuda.compile_ptx(halve, (_c(types.float32, 1),), cc=(8, 0))
    assert _f64_lines(ptx)
