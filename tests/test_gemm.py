"""kernels.gemm: every CPU twin against a float64 product, over dtypes x shapes x layouts x
(alpha, beta); its argument errors; and the BLAS it calls being NumPy's own."""

import subprocess
import sys

import numpy as np
import pytest
from kernel_cases import arrange, case_seed
from xptrain import kernels
from xptrain.kernels import blas
from xptrain.kernels._checks import blas_readable

CPU_IMPLS = kernels.available("cpu")
SHAPES = [(1, 1, 1), (3, 1, 4), (1, 7, 1), (5, 7, 3), (33, 129, 17), (128, 784, 128)]
SCALARS = [(1.0, 0.0), (-0.1, 1.0), (2.5, 0.5), (-1.0, 0.0)]


def _operand(rng, shape, dtype, layout):
    """``shape`` random values in a kernel_cases layout: "c"; "fortran", the transpose of a
    C array (as ``x.T``), and "window" / "window_t", a slice of whole columns of a wider C
    array and its transpose (a Linear layer's input columns ``x[:, lo:hi]``), all read by
    BLAS as they are; "strided", none of these, so gemm copies it."""
    return arrange(rng.standard_normal(shape).astype(dtype), layout)


def test_numba_twin_is_numpys_blas():
    """NumPy's wheels ship OpenBLAS with CBLAS symbols: the twin must find it, in this
    process (the library NumPy loaded, so one thread pool), and name where."""
    blas_name = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    if "openblas" not in blas_name:
        pytest.skip(f"NumPy is built with {blas_name}, not OpenBLAS")
    assert blas.FOUND is not None, blas.REASON
    with open("/proc/self/maps") as maps:
        assert blas.FOUND.path in maps.read()
    assert "numba" in CPU_IMPLS


def test_blas_search_says_why_it_found_nothing(monkeypatch):
    monkeypatch.setattr(blas, "_candidates", lambda: [])
    assert blas.find() == (None, "no CBLAS sgemm/dgemm in the BLAS NumPy loaded (none found)")
    monkeypatch.setattr(blas, "_candidates", lambda: ["libm.so.6", "/nonexistent/libblas.so"])
    found, reason = blas.find()
    assert found is None
    assert "libm.so.6: no CBLAS gemm symbols" in reason and "libblas.so: " in reason


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layouts", [("c", "c"), ("c", "fortran"), ("fortran", "c"),
                                     ("fortran", "fortran"), ("strided", "c"),
                                     ("window_t", "c"), ("window", "window_t"),
                                     ("c", "window")])
@pytest.mark.parametrize("alpha,beta", SCALARS)
def test_gemm_matrix(impl, dtype, shape, layouts, alpha, beta):
    m, k, n = shape
    rng = np.random.default_rng(case_seed(impl, dtype, shape, layouts, alpha, beta))
    a, b = _operand(rng, (m, k), dtype, layouts[0]), _operand(rng, (k, n), dtype, layouts[1])
    out = rng.standard_normal((m, n)).astype(dtype)
    a0, b0 = a.copy(), b.copy()
    a64, b64, out64 = a.astype(np.float64), b.astype(np.float64), out.astype(np.float64)
    expected = alpha * (a64 @ b64) + beta * out64
    # the classic bound of a k-term dot product in precision eps, plus the final roundings
    eps = np.finfo(dtype).eps
    bound = (k + 2) * eps * (abs(alpha) * (abs(a64) @ abs(b64)) + abs(beta * out64))
    assert kernels.gemm(a, b, out, alpha, beta, impl=impl) is out
    assert out.dtype == dtype
    excess = abs(out - expected) - bound
    assert excess.max() <= 0, f"worst element off by {excess.max():.3g} beyond the bound"
    np.testing.assert_array_equal(a, a0)  # inputs untouched
    np.testing.assert_array_equal(b, b0)


@pytest.mark.parametrize("layout,in_place", [("c", True), ("fortran", True), ("window", True),
                                             ("window_t", True), ("strided", False)])
def test_operands_blas_reads_in_place_are_not_copied(layout, in_place):
    x = arrange(np.arange(12, dtype=np.float32).reshape(3, 4), layout)
    assert blas_readable(x) is in_place
    assert (kernels._operand("a", x) is x) is in_place
    for rows, cols in ((1, 4), (3, 1), (1, 1)):  # one row or column: any stride will do
        assert blas_readable(arrange(np.ones((rows, cols), np.float32), layout))


def test_operands_blas_cannot_read_are_refused():
    x = np.ones((3, 4), np.float32)
    assert not blas_readable(x[:, ::-1])  # a negative stride
    assert not blas_readable(np.broadcast_to(x[:1], (3, 4)))  # a zero stride
    overlapping = np.lib.stride_tricks.as_strided(x, (3, 3), (4, 4))
    assert not blas_readable(overlapping)  # rows overlap: no leading size fits


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_beta_zero_does_not_read_out(impl):
    """As in BLAS: with beta = 0 the old out is not read, so a NaN there is overwritten."""
    a, b = np.ones((3, 2), np.float32), np.ones((2, 4), np.float32)
    out = np.full((3, 4), np.nan, np.float32)
    kernels.gemm(a, b, out, 0.5, 0.0, impl=impl)
    np.testing.assert_array_equal(out, np.ones((3, 4)))


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_zero_inner_size_scales_out(impl):
    out = np.full((2, 3), 4.0)
    kernels.gemm(np.zeros((2, 0)), np.zeros((0, 3)), out, 1.0, 0.5, impl=impl)
    np.testing.assert_array_equal(out, np.full((2, 3), 2.0))


def test_gemm_argument_errors():
    a, b = np.ones((3, 2), np.float32), np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"out must have shape \(3, 4\) and dtype float32"):
        kernels.gemm(a, b, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="must share a dtype and the inner size"):
        kernels.gemm(a, np.ones((3, 4), np.float32), np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="must share a dtype"):
        kernels.gemm(a, b.astype(np.float64), np.zeros((3, 4), np.float32))
    with pytest.raises(TypeError, match="a must be float32 or float64"):
        kernels.gemm(a.astype(np.int64), b, np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="out must be C-contiguous"):
        kernels.gemm(a, b, np.zeros((4, 3), np.float32).T)
    with pytest.raises(ValueError, match="out is read-only"):
        out = np.zeros((3, 4), np.float32)
        out.flags.writeable = False
        kernels.gemm(a, b, out)
    with pytest.raises(TypeError, match="out is required"):
        kernels.gemm(a, b, None)
    square = np.ones((3, 3), np.float32)
    with pytest.raises(ValueError, match="out must not share memory with a or b"):
        kernels.gemm(square, square.T, square)
    flat = np.zeros(30, np.float32)  # b and out: overlapping views of one buffer
    with pytest.raises(ValueError, match="out must not share memory"):
        kernels.gemm(square, flat[:12].reshape(3, 4), flat[9:21].reshape(3, 4))


def test_numpys_own_blas_even_when_scipys_is_loaded_first():
    """SciPy's BLAS loaded first (scikit-learn does) must not be taken for NumPy's: a product
    through a second OpenBLAS pool beside NumPy's ran ~18x slower."""
    pytest.importorskip("scipy.linalg")
    code = ("import scipy.linalg, numpy, os; from xptrain.kernels import blas; "
            "print(blas.FOUND is None or os.path.dirname(numpy.__file__) in blas.FOUND.path "
            "or 'numpy.libs' in blas.FOUND.path)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.strip() == "True", proc.stderr
