"""Each kernel, reference vs fused, batch 32 to 8192 (compile time excluded: warmed first)."""

import pytest

import kernels
from bench.kernels import BATCHES, _cases, _update_cases

IMPLS = ("reference", "fused")


def _impl(backend, which):
    kernels.prepare(backend.name)
    return "reference" if which == "reference" else kernels.FUSED[backend.name]


def _run(benchmark, backend, fn):
    fn()  # compile / warm outside the timing
    benchmark(lambda: (fn(), backend.synchronize()))


@pytest.mark.parametrize("which", IMPLS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("kernel", ["softmax_cross_entropy (Bx10)", "sigmoid_backward (Bx128)",
                                    "sigmoid_backward + bias grad", "bias + sigmoid (Bx128)",
                                    "bias + relu (Bx128)", "gather_rows (Bx784 uint8)",
                                    "gemm W -= lr x.T gy (784x128)"])
def test_kernel(benchmark, backend, kernel, batch, which):
    import numpy as np

    impl = _impl(backend, which)
    fn, restore = _cases(backend.xp, batch, np.random.default_rng(0))[kernel]
    benchmark.group = f"{kernel} batch {batch}"
    if restore is None:
        _run(benchmark, backend, lambda: fn(impl))
    else:  # in-place kernels: the input is copied back first (timed too, alike for both)
        _run(benchmark, backend, lambda: (restore(), fn(impl)))


@pytest.mark.parametrize("which", IMPLS)
@pytest.mark.parametrize("kernel", ["sgd_update (momentum, 101,770)", "adam_update (101,770)"])
def test_update(benchmark, backend, kernel, which):
    import numpy as np

    impl = _impl(backend, which)
    fn, _ = _update_cases(backend.xp, np.random.default_rng(0))[kernel]
    benchmark.group = kernel
    _run(benchmark, backend, lambda: fn(impl))
