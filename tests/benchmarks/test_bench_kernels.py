"""Each kernel, reference vs fused, batch 32 to 8192, as training calls it (the resolved
ops). Before timing, each fused call is checked against the reference on the same inputs.

``pytest tests/benchmarks --benchmark-enable`` times them; the unit suite runs each once.
"""

import numpy as np
import pytest
from xptrain import kernels
from xptrain.bench.kernels import BATCHES, _cases, _update_cases

KERNELS = ["softmax_cross_entropy (Bx10)", "sigmoid_backward (Bx128)",
           "sigmoid_backward + bias grad", "bias + sigmoid (Bx128)", "bias + relu (Bx128)",
           "gather_rows (Bx784 uint8)", "gemm W -= lr x.T gy (784x128)",
           "column_window (Bx784)", "affine_warp (Bx28x28)"]


def _ops(backend, which):
    ops = kernels.resolve(backend.name, which)
    ops.compile()
    return ops


def _run(benchmark, backend, fn):
    fn()  # compile / warm outside the timing
    benchmark(lambda: (fn(), backend.synchronize()))


@pytest.mark.parametrize("which", ["reference", "fused"])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel(benchmark, backend, kernel, batch, which):
    ops, ref = _ops(backend, which), _ops(backend, "reference")
    fn, restore = _cases(backend.xp, batch, np.random.default_rng(batch))[kernel]
    reset, written = _cases.last
    reset()
    expected = fn(ref), [backend.to_host(a) for a in written[kernel]]
    reset()
    got = fn(ops), [backend.to_host(a) for a in written[kernel]]
    if kernel.startswith("column_window"):
        assert got[0] == expected[0]
    for a, b in zip(got[1], expected[1]):
        # float32 sums over up to 8192 rows (the bias gradient) in another order
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * batch)
    benchmark.group = f"{kernel} batch {batch}"
    if restore is None:
        _run(benchmark, backend, lambda: fn(ops))
    else:  # in-place kernels: the input is copied back first (timed too, alike for both)
        _run(benchmark, backend, lambda: (restore(), fn(ops)))


@pytest.mark.parametrize("which", ["reference", "fused"])
@pytest.mark.parametrize("kernel", ["sgd_update (momentum, 101,770)", "adam_update (101,770)"])
def test_update(benchmark, backend, kernel, which):
    results = []
    for name in ("reference", which):  # one step each from the same buffers
        rng = np.random.default_rng(0)
        fn, _ = _update_cases(backend.xp, rng)[kernel]
        p = _update_cases.last
        fn(_ops(backend, name))
        results.append(backend.to_host(p))
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5, atol=1e-7)
    benchmark.group = kernel
    _run(benchmark, backend, lambda: fn(_ops(backend, which)))
