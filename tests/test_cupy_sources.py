"""The CUDA C that the CuPy twin (kernels.cupy_native) hands to CuPy, checked without a GPU.

A recording stand-in for CuPy collects every RawKernel source and ElementwiseKernel body the
twin builds for each dtype, activation and optimizer variant. A lint runs everywhere (CI
too). Where NVRTC is installed (``pip install ".[cudasrc]"``, or a CUDA toolkit),
every source is also compiled as CUDA C++; elsewhere that part skips, naming the library.
An error in these strings would otherwise first show on a GPU, where the twin's first
call would fail and that op fall back to the reference.
"""

import ctypes
import ctypes.util
import glob
import os
import re
import sys
import types

import numpy as np
import pytest
from xptrain.kernels import cupy_native

F32, F64 = np.float32, np.float64
_C_TYPES = {"float32": "float", "float64": "double", "int64": "long long", "int32": "int",
            "bool": "bool", "uint8": "unsigned char"}


def _collect_sources():
    """[(name, kind, payload)] for every kernel the twin builds, kind "raw" (payload: the
    source) or "elementwise" (payload: (in_params, out_params, body)), with the dtype the
    call used."""
    found = []

    def raw_kernel(code, name):
        found.append((name, "raw", code))
        return lambda *args: None

    def elementwise_kernel(in_params, out_params, body, name):
        found.append((name, "elementwise", (in_params, out_params, body)))
        return lambda *args: None

    fake = types.SimpleNamespace(RawKernel=raw_kernel, ElementwiseKernel=elementwise_kernel)
    saved_cache, saved_cupy = dict(cupy_native._cache), cupy_native._cupy
    cupy_native._cache.clear()
    cupy_native._cupy = lambda: fake
    try:
        for dtype in (F32, F64):
            x = np.zeros((3, 4), dtype)
            for label_dtype in cupy_native._LABEL_TYPES:
                cupy_native.softmax_cross_entropy_rows(x, np.zeros(3, label_dtype),
                                                       np.zeros(3, dtype), x.copy())
            for kind in cupy_native._FWD:
                cupy_native.bias_activation(x, None, kind)
                cupy_native.activation_backward(x, x.copy(), kind, None)
            p = np.zeros(5, dtype)
            for momentum in (0.0, 0.9):
                cupy_native.sgd_update(p, p, p, dtype(0.1), dtype(momentum), False,
                                       dtype(0), 2)
            cupy_native.adam_update(p, p, p, p, *(dtype(0.1),) * 7, 2)
            cupy_native.gather_rows(np.zeros((3, 4), np.uint8), np.zeros(2, np.int64),
                                    dtype(0.5), np.zeros((2, 4), dtype))
    finally:
        cupy_native._cache.clear()
        cupy_native._cache.update(saved_cache)
        cupy_native._cupy = saved_cupy
    return found


SOURCES = _collect_sources()


def _code(kind, payload):
    return payload if kind == "raw" else payload[2]


def test_every_op_of_the_twin_is_collected():
    names = {name for name, _, _ in SOURCES}
    assert any(n.startswith("softmax_ce_float64_uint8") for n in names)
    for expected in ("xptrain_bias_sigmoid_fwd", "xptrain_tanh_bwd", "xptrain_sgd_plain",
                     "xptrain_sgd_momentum", "xptrain_adam", "xptrain_gather"):
        assert expected in names


def _strip_strings(code):
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', code)


@pytest.mark.parametrize("name,kind,payload", SOURCES, ids=[s[0] for s in SOURCES])
def test_sources_lint(name, kind, payload):
    """Balanced brackets, and no math call left without its argument (a Python string
    joined across a quote once turned nan("") into nan())."""
    code = _strip_strings(_code(kind, payload))
    for open_, close in ("()", "[]", "{}"):
        depth = 0
        for ch in code:
            depth += (ch == open_) - (ch == close)
            assert depth >= 0, f"{name}: unbalanced {open_}{close}"
        assert depth == 0, f"{name}: unbalanced {open_}{close}"
    empty = re.findall(r"\b(nan|exp|log|sqrt|tanh|fabs)\(\s*\)", code)
    assert not empty, f"{name}: {empty} called without an argument"


def test_the_lint_catches_an_argumentless_nan():
    joined = ("out = (row < 0) ? (T)nan("") : x")  # noqa: ISC001 - the bug, on purpose
    assert re.search(r"\bnan\(\s*\)", _strip_strings(joined))


def _nvrtc():
    """libnvrtc as a ctypes library, or None: the pip wheel's copy, a CUDA toolkit's
    (CUDA_HOME, CUDA_PATH, /usr/local/cuda), then the loader's."""
    candidates = glob.glob(os.path.join(sys.prefix, "lib", "python3*", "site-packages",
                                        "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so*"))
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            candidates += glob.glob(os.path.join(home, "lib*", "libnvrtc.so*"))
    found = ctypes.util.find_library("nvrtc")
    for path in [*candidates, *([found] if found else [])]:
        if "builtins" in path or ".alt." in path:
            continue
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


NVRTC = _nvrtc()
needs_nvrtc = pytest.mark.skipif(
    NVRTC is None, reason="NVRTC not found (pip install '.[cudasrc]', or a CUDA "
                          "toolkit): the CuPy twin's sources are only linted here")


def _compile(source):
    """(ok, log) of compiling CUDA C++ ``source`` with NVRTC (compute capability 8.0)."""
    prog = ctypes.c_void_p()
    assert NVRTC.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"k.cu", 0, None,
                                    None) == 0
    opts = (ctypes.c_char_p * 2)(b"--gpu-architecture=compute_80", b"--std=c++14")
    status = NVRTC.nvrtcCompileProgram(prog, 2, opts)
    size = ctypes.c_size_t()
    NVRTC.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    NVRTC.nvrtcGetProgramLog(prog, log)
    NVRTC.nvrtcDestroyProgram(ctypes.byref(prog))
    return status == 0, log.value.decode(errors="replace")


def _param(text):
    raw, ctype, name = re.fullmatch(r"\s*(raw\s+)?(\w+)\s+(\w+)\s*", text).groups()
    return bool(raw), _C_TYPES.get(ctype, ctype), name


def _elementwise_source(in_params, out_params, body, float_type):
    """A stand-in for the kernel CuPy generates around an ElementwiseKernel body: ``i`` the
    element index, in-parameters as values, out-parameters as references, ``raw`` ones as
    pointers; one-letter type names bound as in the twin's calls (T the float type, X the
    uint8 data set, I the int64 indices)."""
    typedefs = {"T": float_type, "X": "unsigned char", "I": "long long"}
    params, binds = [], []
    for text in in_params.split(","):
        raw, ctype, name = _param(text)
        params.append(f"const {ctype}* {name}" if raw else f"{ctype} {name}")
    for text in out_params.split(","):
        _, ctype, name = _param(text)
        params.append(f"{ctype}* _out_{name}")
        binds.append(f"{ctype}& {name} = _out_{name}[i];")
    names = "".join(f"typedef {ctype} {name};\n" for name, ctype in typedefs.items())
    return (names + f'extern "C" __global__ void k({", ".join(params)}, long long _n) {{\n'
            "  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < _n;"
            " i += (long long)blockDim.x * gridDim.x) {\n"
            f"    {' '.join(binds)}\n    {body};\n  }}\n}}\n")


@needs_nvrtc
@pytest.mark.parametrize("name,kind,payload", SOURCES, ids=[s[0] for s in SOURCES])
def test_sources_compile_with_nvrtc(name, kind, payload):
    if kind == "raw":
        sources = [payload]
    else:
        sources = [_elementwise_source(*payload, float_type=t) for t in ("float", "double")]
    for source in sources:
        ok, log = _compile(source)
        assert ok, f"{name} does not compile:\n{log}\n{source}"


@needs_nvrtc
def test_nvrtc_rejects_a_broken_source():
    ok, log = _compile('extern "C" __global__ void k(float* o) { o[0] = (float)nan(); }')
    assert not ok and "too few arguments" in log
