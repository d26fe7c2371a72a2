"""One training step and one epoch per backend and kernel mode (784-128-10 sigmoid, SGD).

``pytest tests/benchmarks --benchmark-enable`` times them; the unit suite runs each once
and checks that the timed work trains: the parameters move and stay finite, an epoch
lowers the loss.
"""

import math

import numpy as np
import pytest
from xptrain.bench.training import EngineRunner

MODES = ("reference", "fused")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch", [128, 1024])
def test_training_step(benchmark, data, backend, mode, batch):
    runner = EngineRunner(data, backend, mode, batch_size=batch)
    runner.train_steps(3)
    before = backend.to_host(runner.trainer.model.params)
    benchmark.group = f"training step batch {batch}"
    benchmark(runner.train_steps, 1)
    after = backend.to_host(runner.trainer.model.params)
    assert np.isfinite(after).all() and not np.array_equal(before, after)


@pytest.mark.parametrize("mode", MODES)
def test_epoch(benchmark, data, backend, mode):
    runner = EngineRunner(data, backend, mode)
    losses = []
    benchmark.group = "one epoch of 60,000 (batch 128)"
    benchmark.pedantic(lambda: losses.append(runner.trainer.train_epoch(0)[0]), rounds=3,
                       warmup_rounds=1)
    assert all(math.isfinite(v) for v in losses) and losses[-1] < math.log(10)
