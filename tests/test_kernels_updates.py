"""The optimizer-update and batch-gather twins against the reference, and their argument
errors."""

import numpy as np
import pytest
from kernel_cases import TOL, case_seed
from xptrain import kernels

CPU_IMPLS = kernels.available("cpu")


def _opt_buffers(dtype, n, seed):
    rng = np.random.default_rng(seed)
    p, g, m = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    v = rng.random(n).astype(dtype)
    return p, g, m, v


@pytest.mark.parametrize("impl", CPU_IMPLS[1:])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,n_decay", [(1, 0), (1, 1), (1000, 337), (4097, 4097)])
@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 1e-2),
                                                  (0.9, True, 1e-3)])
def test_sgd_update_twin(impl, dtype, n, n_decay, momentum, nesterov, wd):
    a = _opt_buffers(dtype, n, n + n_decay)
    b = tuple(x.copy() for x in a)
    kernels.sgd_update(a[0], a[1], a[2], 0.1, momentum, nesterov, wd, n_decay, impl=impl)
    kernels.sgd_update(b[0], b[1], b[2], 0.1, momentum, nesterov, wd, n_decay,
                       impl="reference")
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, **TOL[dtype])


@pytest.mark.parametrize("impl", CPU_IMPLS[1:])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,n_decay", [(1, 1), (1000, 337)])
@pytest.mark.parametrize("decoupled,wd,step", [(False, 0.0, 1), (False, 1e-2, 7),
                                               (True, 5e-2, 1000)])
def test_adam_update_twin(impl, dtype, n, n_decay, decoupled, wd, step):
    a = _opt_buffers(dtype, n, n)
    b = tuple(x.copy() for x in a)
    for bufs, name in ((a, impl), (b, "reference")):
        kernels.adam_update(*bufs, 1e-3, step, weight_decay=wd, decoupled=decoupled,
                            n_decay=n_decay, impl=name)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, **TOL[dtype])


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("src", [np.uint8, np.float32])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gather_rows_twin(impl, src, dtype):
    rng = np.random.default_rng(case_seed(impl, str(src), str(dtype)))
    x = (rng.random((50, 13)) * 255).astype(src)
    idx = rng.integers(0, 50, 17)
    out = kernels.gather_rows(x, idx, 1 / 255, dtype=dtype, impl=impl)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, x[idx].astype(np.float64) / 255, **TOL[np.float32])
    bad = np.array([3, 50, -1])
    out = kernels.gather_rows(x, bad, 1.0, impl=impl)
    np.testing.assert_array_equal(out[0], x[3])
    assert np.isnan(out[1:]).all()
    # the training call (a reusable buffer, int32 or strided indices): the same rows
    buf = np.full((17, 13), 7.0, dtype)
    for ix in (idx.astype(np.int32), np.repeat(idx, 2)[::2]):
        assert kernels.gather_rows(x, ix, 1 / 255, out=buf, impl=impl) is buf
        np.testing.assert_allclose(buf, x[idx].astype(np.float64) / 255, **TOL[np.float32])


def test_optimizer_buffer_errors():
    p = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="g must be a contiguous float32 array of shape"):
        kernels.sgd_update(p, np.zeros(3, np.float32), None, 0.1)
    with pytest.raises(ValueError, match="p must be C-contiguous"):
        kernels.sgd_update(np.zeros(8, np.float32)[::2], p, None, 0.1)
    with pytest.raises(ValueError, match="1-D"):
        kernels.adam_update(*(np.zeros((2, 2), np.float32),) * 4, 1e-3, 1)
