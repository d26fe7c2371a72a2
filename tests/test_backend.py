"""Device selection with CuPy absent, failing or without devices; no GPU import on CPU."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from engine import backend
from engine.backend import BackendError, select_backend

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def fresh_probe(monkeypatch):
    monkeypatch.setattr(backend, "_probe_cache", {})


def fake_cupy(device_count=1, fail=None):
    cp = types.ModuleType("cupy")

    def count():
        if fail:
            raise RuntimeError(fail)
        return device_count

    cp.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=count))
    return cp


def test_cpu_never_probes(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # importing it would raise
    b = select_backend("cpu")
    assert b.name == "cpu" and b.xp is np
    assert "result" not in backend._probe_cache


def test_auto_without_cupy_falls_back_with_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    b = select_backend("auto")
    assert b.name == "cpu" and b.xp is np
    assert "CuPy is not installed" in b.reason


def test_cuda_without_cupy_is_an_error_with_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(BackendError,
                       match=r'CuPy is not installed.*pip install "xptrain\[cuda12\]"'):
        select_backend("cuda")


def test_failing_gpu_falls_back(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(fail="cudaErrorInsufficientDriver"))
    b = select_backend("auto")
    assert b.name == "cpu"
    assert "smoke test failed (RuntimeError: cudaErrorInsufficientDriver)" in b.reason
    with pytest.raises(BackendError, match="cudaErrorInsufficientDriver"):
        select_backend("cuda")


def test_no_device_falls_back(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(device_count=0))
    assert "found no CUDA device" in select_backend("auto").reason


def test_bad_device_name():
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda, got 'gpu'"):
        select_backend("gpu")


def test_cpu_path_imports_no_gpu_module(tmp_path):
    """Train a step on the CPU in a fresh interpreter; neither CuPy nor numba.cuda loads."""
    code = f"""
import json, sys
sys.path.insert(0, {str(ROOT)!r})
from tests.conftest import write_dataset
from engine import TrainConfig, Trainer, load_idx_folder, select_backend
d = load_idx_folder(write_dataset({str(tmp_path / 'd')!r}, n_train=64, n_test=16))
Trainer(TrainConfig(epochs=1, batch_size=32, hidden=(8,), activation="sigmoid"), d,
        select_backend("cpu"), log=lambda s: None).fit()
gpu = [m for m in sys.modules if m.split(".")[0] in ("cupy", "cupyx", "numba_cuda")
       or m.startswith("numba.cuda")]
print(json.dumps(gpu))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


@pytest.mark.gpu
def test_real_gpu_is_selected():
    cupy, name, why = backend.probe_cuda()
    if cupy is None:
        pytest.skip(f"no usable GPU: {why}")
    b = select_backend("auto")
    assert b.name == "cuda" and b.xp is cupy


class OutOfMemoryError(MemoryError):
    """Stands in for cupy.cuda.memory.OutOfMemoryError (matched by name)."""


def test_out_of_memory_names_batch_and_request(tiny_data, cpu, monkeypatch, capsys, tiny_dir):
    from engine.backend import DeviceMemoryError
    from engine.train import TrainConfig, Trainer

    t = Trainer(TrainConfig(epochs=1, batch_size=64, hidden=(8,)), tiny_data, cpu,
                log=lambda s: None)

    def boom(idx, lr, labels=None, cols=None):
        raise OutOfMemoryError("Out of memory allocating 1,073,741,824 bytes "
                               "(allocated so far: 2,048 bytes).")

    monkeypatch.setattr(t, "step", boom)
    with pytest.raises(DeviceMemoryError, match=r"at batch size 64: asked for 1,024.0 MiB"):
        t.fit()


def test_tf32_is_opt_in(monkeypatch):
    monkeypatch.delenv("CUPY_TF32", raising=False)
    backend.enable_tf32(False)
    assert "CUPY_TF32" not in os.environ
    backend.enable_tf32(True)
    assert os.environ["CUPY_TF32"] == "1"
