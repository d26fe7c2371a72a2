"""The resolved kernel ops: one object per (device, twin), no process-wide mode, and a failed
first call that costs one op its twin, never the whole twin."""

import warnings

import numpy as np
import pytest
from xptrain import kernels
from xptrain.kernels import cpu as cpu_twin
from xptrain.kernels import reference
from xptrain.kernels.ops import Ops, twin_name


def test_resolved_once_per_device_and_mode():
    fused, ref = kernels.resolve("cpu", "fused"), kernels.resolve("cpu", "reference")
    assert fused is kernels.resolve("cpu") is kernels.resolve("cpu", "numba")
    assert (fused.name, ref.name) == ("numba", "reference") and fused is not ref
    assert ref.own == set() and "activation_backward" in fused.own
    assert ref.activation_backward is reference.activation_backward


def test_unknown_modes_and_devices_are_named():
    with pytest.raises(ValueError, match="kernels must be one of fused, reference.*'fast'"):
        twin_name("cpu", "fast")
    with pytest.raises(ValueError, match="run on cuda, not on cpu"):
        twin_name("cpu", "cupy")
    with pytest.raises(ValueError, match="device must be one of cpu, cuda"):
        twin_name("tpu", "fused")


def test_after_its_first_call_an_op_is_the_twins_own_function():
    ops = Ops("cpu", "numba")
    x = np.zeros((2, 3), np.float32)
    assert ops.bias_activation is not cpu_twin.bias_activation  # the first-call guard
    ops.bias_activation(x, None, "sigmoid")
    assert ops.bias_activation is cpu_twin.bias_activation
    np.testing.assert_array_equal(x, 0.5)
    assert "bias_activation" in ops.compile_seconds


def test_two_trainers_with_different_modes_do_not_interfere(tiny_data, cpu, monkeypatch):
    """Two trainers in one process, steps interleaved: each runs its own kernels, and both
    follow the same trajectory (the twins compute one formula)."""
    from xptrain.train import TrainConfig, Trainer

    calls = []
    real = reference.activation_backward

    def spy(*args):
        calls.append(args[2])
        return real(*args)

    monkeypatch.setattr(reference, "activation_backward", spy)
    config = dict(epochs=1, batch_size=32, hidden=(16,), activation="tanh")
    fused = Trainer(TrainConfig(kernels="fused", **config), tiny_data, cpu, log=lambda s: None)
    ref = Trainer(TrainConfig(kernels="reference", **config), tiny_data, cpu,
                  log=lambda s: None)
    monkeypatch.setattr(ref.ops, "activation_backward", spy)  # what those ops resolved
    assert (fused.ops.name, ref.ops.name) == ("numba", "reference")
    steps = [list(t.batches.epoch(0)) for t in (fused, ref)]
    for (s, idx_f, lab_f), (_, idx_r, lab_r) in zip(*steps):
        n = len(calls)
        fused.step(idx_f, lab_f, 1e-3, fused.batches.step_key(0, s))
        assert len(calls) == n  # the fused trainer never reaches the reference
        ref.step(idx_r, lab_r, 1e-3, ref.batches.step_key(0, s))
        assert calls[n:] == ["tanh"]
    assert fused.ops.activation_backward is cpu_twin.activation_backward
    np.testing.assert_allclose(fused.model.params, ref.model.params, rtol=1e-4, atol=1e-6)


def _failing(exc):
    def fn(*args):
        raise exc
    return fn


def test_a_failed_first_call_costs_that_op_only(monkeypatch):
    monkeypatch.setattr(cpu_twin, "bias_activation", _failing(RuntimeError("simulated compile")))
    ops = Ops("cpu", "numba")
    x = np.zeros((2, 3), np.float32)
    with pytest.warns(RuntimeWarning, match="numba bias_activation failed.*simulated compile"):
        ops.bias_activation(x, None, "sigmoid")
    np.testing.assert_array_equal(x, 0.5)  # the reference ran it
    assert ops.bias_activation is reference.bias_activation
    assert set(ops.fallbacks) == {"bias_activation"} and "bias_activation" not in ops.own
    g, y = np.ones((2, 3), np.float32), np.full((2, 3), 0.5, np.float32)
    ops.activation_backward(g, y, "sigmoid", None)  # another op keeps its twin
    assert ops.activation_backward is cpu_twin.activation_backward
    np.testing.assert_array_equal(g, 0.25)


@pytest.mark.parametrize("error", [MemoryError, "OutOfMemoryError", ValueError, TypeError])
def test_resource_and_argument_errors_keep_the_twin(monkeypatch, error):
    """Out of memory (CuPy's OutOfMemoryError, by name) and argument errors are the
    caller's: raised as they are, the op keeps its twin for the next call."""
    if error == "OutOfMemoryError":
        error = type("OutOfMemoryError", (RuntimeError,), {})
    monkeypatch.setattr(cpu_twin, "gather_rows", _failing(error("simulated")))
    ops = Ops("cpu", "numba")
    x, idx, out = np.zeros((4, 3), np.uint8), np.arange(2), np.empty((2, 3), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if error is MemoryError:  # not CUDA's: the reference runs it, the op falls back
            with pytest.warns(RuntimeWarning):
                ops.gather_rows(x, idx, np.float32(1), out)
            assert ops.fallbacks
            return
        with pytest.raises(error, match="simulated"):
            ops.gather_rows(x, idx, np.float32(1), out)
    assert ops.fallbacks == {} and "gather_rows" in ops.own


def test_a_failure_the_reference_shares_is_the_callers(monkeypatch):
    monkeypatch.setattr(cpu_twin, "bias_activation", _failing(RuntimeError("simulated typing")))
    monkeypatch.setattr(reference, "bias_activation", _failing(ValueError("bad argument")))
    ops = Ops("cpu", "numba")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="bad argument"):
            ops.bias_activation(np.zeros((2, 3), np.float32), None, "relu")
    assert ops.fallbacks == {} and "bias_activation" in ops.own


def test_a_twin_that_cannot_be_imported_runs_the_reference(monkeypatch):
    from xptrain.kernels import ops as ops_module

    monkeypatch.setitem(ops_module._modules, "cupy", (None, "cannot import: no cupy"))
    monkeypatch.setattr(ops_module, "_simulated", lambda name: True)
    with pytest.warns(RuntimeWarning, match="cupy unavailable.*no cupy"):
        ops = Ops("cpu", "cupy")
    assert ops.own == set() and ops.fallbacks["gemm"] == "cannot import: no cupy"
    assert ops.softmax_cross_entropy_rows is reference.softmax_cross_entropy_rows
