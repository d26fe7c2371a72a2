"""Fixtures for the pytest-benchmark suite: ``pytest tests/benchmarks --benchmark-enable``.

Uses the real MNIST when ``XPTRAIN_DATA`` (or the cache) has it, else random MNIST-shaped
data (the timings do not depend on the pixel values). The unit suite runs it with the
benchmarks disabled (pyproject's ``--benchmark-disable``: each benchmark once, no
statistics), so its checks run and it cannot rot.
"""

import os

import numpy as np
import pytest
from xptrain.backend import probe_cuda, select_backend
from xptrain.data import DataError, Dataset, load_mnist


@pytest.fixture(scope="session")
def data():
    try:
        return load_mnist(os.environ.get("XPTRAIN_DATA"), download=False, progress=False)
    except DataError:
        rng = np.random.default_rng(0)
        return Dataset(rng.integers(0, 256, (60000, 784), dtype=np.uint8),
                       rng.integers(0, 10, 60000), rng.integers(0, 256, (10000, 784),
                                                                 dtype=np.uint8),
                       rng.integers(0, 10, 10000), "random", False)


def _backends():
    out = [pytest.param("cpu", id="numpy")]
    cupy, _, why = probe_cuda()
    out.append(pytest.param("cuda", id="cupy", marks=pytest.mark.skipif(
        cupy is None, reason=f"no usable GPU: {why}")))
    return out


BACKENDS = _backends()


@pytest.fixture(params=BACKENDS)
def backend(request):
    return select_backend(request.param)
