"""GEMM with ``alpha`` and ``beta``, called from Numba code in the BLAS that NumPy loaded.

Why: ``np.matmul`` has no ``beta``, so ``W -= lr * (x.T @ gy)`` costs the product, a write of
the gradient and one more pass over parameters and gradient. With ``beta`` the SGD update rides
in the product (``alpha = -lr, beta = 1``): 784-128-10 at batch 128 went from 425 to 396 us a
step (blocks of 500 steps, the 2-core EPYC). ``ctypes`` costs about 7 us for a call of 14
arguments; a Numba function calling the same symbol about 0.7 us.

The library must be the one NumPy loaded, with its thread pool and thread settings: calling a
second OpenBLAS (SciPy's) alongside NumPy's set two spinning pools against each other on two
cores (a 25x slower product, measured). It is found among the shared objects of this process
(``/proc/self/maps``), else beside NumPy's package; the CBLAS symbols of the scipy-openblas
builds NumPy's wheels ship (``scipy_cblas_sgemm64_``, 64-bit integers) and of plain OpenBLAS
builds are tried in turn, and a small product checks the result against ``np.matmul`` before
it is used. Not found (MKL, Accelerate, a BLAS without CBLAS symbols): :data:`FOUND` is None,
:data:`REASON` says why, and the op runs its reference.
"""

import ctypes
import glob
import os
from collections import namedtuple

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ._checks import NO_TRANS, TRANS  # CBLAS enums, kept beside the layout rule

ROW_MAJOR = 101
Blas = namedtuple("Blas", "sgemm dgemm ilp64 path")  # addresses, 64-bit integers, library
# (sgemm, dgemm, 64-bit integers): scipy-openblas (NumPy >= 2 wheels), then OpenBLAS's own.
SYMBOLS = (("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", True),
           ("cblas_sgemm64_", "cblas_dgemm64_", True),
           ("scipy_cblas_sgemm", "scipy_cblas_dgemm", False),
           ("cblas_sgemm", "cblas_dgemm", False))


def _candidates():
    """Paths of BLAS libraries NumPy loaded (this process's maps), then ones in its wheel.

    Only NumPy's own folders count: SciPy's BLAS (``scipy/linalg/cython_blas``, the
    ``scipy.libs`` OpenBLAS) may be loaded first, by scikit-learn say, and a product through
    it beside NumPy's pool ran ~18x slower (an MNIST epoch 4.9 s against 0.27 s, measured)."""
    numpy_dir = os.path.dirname(np.__file__)
    site = os.path.dirname(numpy_dir)
    own = tuple(os.path.join(d, "") for d in (numpy_dir, os.path.join(site, "numpy.libs")))
    paths = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split(None, 5)[-1].strip()
                if "blas" in os.path.basename(path) and path.startswith(own):
                    paths.append(path)
    except OSError:  # not Linux
        pass
    for pattern in ("numpy.libs/*blas*", "numpy/.dylibs/*blas*"):
        paths += sorted(glob.glob(os.path.join(site, pattern)))
    return list(dict.fromkeys(paths))


def _self_test(address, ilp64, dtype):
    """Run a small transposed product through the ``?gemm`` at ``address`` with ctypes (for
    ``dtype``: float32 sgemm, float64 dgemm); True if it is right."""
    i = ctypes.c_int64 if ilp64 else ctypes.c_int32
    real = ctypes.c_float if dtype == np.float32 else ctypes.c_double
    fn = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int, ctypes.c_int, i, i, i, real,
                          ctypes.c_void_p, i, ctypes.c_void_p, i, real, ctypes.c_void_p,
                          i)(address)
    rng = np.random.default_rng(0)
    a, b, out = (rng.random(shape).astype(dtype) for shape in ((3, 2), (3, 4), (2, 4)))
    expected = 0.5 * out.astype(np.float64) - 2.0 * (a.T.astype(np.float64) @ b)
    # out (2 x 4) = -2 a.T b + 0.5 out, with a (3 x 2) read transposed: lda 2
    fn(ROW_MAJOR, TRANS, NO_TRANS, 2, 4, 3, -2.0, a.ctypes.data, 2, b.ctypes.data, 4, 0.5,
       out.ctypes.data, 4)
    return bool(np.allclose(out, expected, rtol=1e-5, atol=1e-6))


def find():
    """``(Blas, None)``, or ``(None, reason)`` when no usable library was found."""
    tried = []
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            tried.append(f"{os.path.basename(path)}: {exc}")
            continue
        for s_name, d_name, ilp64 in SYMBOLS:
            s, d = getattr(lib, s_name, None), getattr(lib, d_name, None)
            if s is None or d is None:
                continue
            s_addr = ctypes.cast(s, ctypes.c_void_p).value
            d_addr = ctypes.cast(d, ctypes.c_void_p).value
            if not (_self_test(s_addr, ilp64, np.float32)
                    and _self_test(d_addr, ilp64, np.float64)):
                tried.append(f"{os.path.basename(path)}: {s_name} gave a wrong product")
                continue
            return Blas(s_addr, d_addr, ilp64, path), None
        tried.append(f"{os.path.basename(path)}: no CBLAS gemm symbols")
    return None, ("no CBLAS sgemm/dgemm in the BLAS NumPy loaded"
                  + (f" ({'; '.join(tried)})" if tried else " (none found)"))


FOUND, REASON = find()


def _make_gemm_call(int_bits):
    """An intrinsic calling ``cblas_?gemm(RowMajor, ...)`` at a run-time address (so the
    Numba functions using it stay cacheable) with ``int_bits``-wide integers."""

    @intrinsic
    def call(typingctx, fn, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        # alpha and beta (any float type) are cast to c's dtype, which picks s- or dgemm's ABI
        if not (isinstance(c, types.Array) and isinstance(c.dtype, types.Float)
                and isinstance(alpha, types.Float) and isinstance(beta, types.Float)):
            return None
        real = ir.FloatType() if c.dtype.bitwidth == 32 else ir.DoubleType()
        iN, i32, ptr = ir.IntType(int_bits), ir.IntType(32), ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, iN, iN, iN, real, ptr, iN, ptr,
                                               iN, real, ptr, iN])
        sig = types.void(fn, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

        def codegen(context, builder, signature, args):
            def data(i):
                ary = context.make_array(signature.args[i])(context, builder, args[i])
                return builder.bitcast(ary.data, ptr)

            def integer(i, width):
                value = context.cast(builder, args[i], signature.args[i], types.int64)
                return builder.trunc(value, width) if width.width < 64 else value

            def scalar(i):
                return context.cast(builder, args[i], signature.args[i], c.dtype)

            target = builder.inttoptr(integer(0, ir.IntType(64)), fnty.as_pointer())
            builder.call(target, [i32(ROW_MAJOR), integer(1, i32), integer(2, i32),
                                  integer(3, iN), integer(4, iN), integer(5, iN), scalar(6),
                                  data(7), integer(8, iN), data(9), integer(10, iN), scalar(11),
                                  data(12), integer(13, iN)])
            return context.get_dummy_value()
        return sig, codegen
    return call


gemm_call_64 = _make_gemm_call(64)
gemm_call_32 = _make_gemm_call(32)


def set_threads(n):
    """Set the thread count of the BLAS NumPy loaded (OpenBLAS), even after it started:
    environment variables only count before it is loaded. True if it was set."""
    if FOUND is None:
        return False
    lib = ctypes.CDLL(FOUND.path)
    for name in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                 "openblas_set_num_threads64_", "openblas_set_num_threads"):
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.argtypes = [ctypes.c_int]
            fn(int(n))
            return True
    return False
