"""One training step and one epoch per backend and kernel mode (784-128-10 sigmoid, SGD)."""

import pytest

from bench.training import EngineRunner

MODES = ("reference", "fused")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch", [128, 1024])
def test_training_step(benchmark, data, backend, mode, batch):
    runner = EngineRunner(data, backend, mode, batch_size=batch)
    runner.train_steps(3)
    benchmark.group = f"training step batch {batch}"
    benchmark(runner.train_steps, 1)


@pytest.mark.parametrize("mode", MODES)
def test_epoch(benchmark, data, backend, mode):
    runner = EngineRunner(data, backend, mode)
    benchmark.group = "one epoch of 60,000 (batch 128)"
    benchmark.pedantic(runner.train_epoch, rounds=3, warmup_rounds=1)
