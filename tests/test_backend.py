"""Device selection with CuPy absent, failing or without devices; no GPU import on CPU."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from xptrain import backend
from xptrain.backend import BackendError, select_backend

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
    with pytest.raises(BackendError, match="device must be one of auto, cpu, cuda, got 'gpu'"):
        select_backend("gpu")


def test_cpu_path_imports_no_gpu_module(tmp_path):
    """Train on the CPU in a fresh interpreter outside MPI; neither CuPy, numba.cuda nor
    mpi4py loads."""
    code = f"""
import json, sys
sys.path.insert(0, {str(ROOT / "tests")!r})
from datasets import write_dataset
from xptrain import TrainConfig, Trainer, load_idx_folder, select_backend
d = load_idx_folder(write_dataset({str(tmp_path / 'd')!r}, n_train=64, n_test=16))
Trainer(TrainConfig(epochs=1, batch_size=32, hidden=(8,), activation="sigmoid"), d,
        select_backend("cpu"), log=lambda s: None).fit()
gpu = [m for m in sys.modules if m.split(".")[0] in ("cupy", "cupyx", "numba_cuda", "mpi4py")
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
    from xptrain.backend import DeviceMemoryError
    from xptrain.train import TrainConfig, Trainer

    t = Trainer(TrainConfig(epochs=1, batch_size=64, hidden=(8,)), tiny_data, cpu,
                log=lambda s: None)

    def boom(*args, **kwargs):
        raise OutOfMemoryError("Out of memory allocating 1,073,741,824 bytes "
                               "(allocated so far: 2,048 bytes).")

    monkeypatch.setattr(t, "step", boom)
    with pytest.raises(DeviceMemoryError, match=r"at batch size 64: asked for 1,024.0 MiB"):
        t.fit()


def _gpu_backend(monkeypatch, compute_capability="90"):
    """A stand-in CUDA backend (no GPU needed) with a device of ``compute_capability``."""
    cp = types.ModuleType("cupy")
    cp.cuda = types.SimpleNamespace(
        Device=lambda *a: types.SimpleNamespace(compute_capability=compute_capability))
    fake = backend.Backend("cuda", cp, "CuPy and a working GPU found", "Test GPU")
    monkeypatch.setattr(backend, "_cuda_or_cpu", lambda device: fake)
    return fake


def test_tf32_takes_effect_or_refuses(monkeypatch):
    monkeypatch.delenv("CUPY_TF32", raising=False)
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    with pytest.raises(BackendError, match="--tf32 needs a CUDA GPU, but this run is on the "
                                           "CPU"):
        select_backend("cpu", tf32=True)
    monkeypatch.delenv("CUPY_TF32", raising=False)
    assert "TF32" not in select_backend("cpu").reason and "CUPY_TF32" not in os.environ
    _gpu_backend(monkeypatch)
    b = select_backend("cuda", tf32=True)  # CuPy not imported yet: the variable is set first
    assert os.environ["CUPY_TF32"] == "1" and "TF32 matrix products on" in b.reason
    _gpu_backend(monkeypatch, compute_capability="75")
    with pytest.raises(BackendError, match="compute capability >= 8.0; Test GPU has 7.x"):
        select_backend("cuda", tf32=True)


def test_tf32_after_cupy_was_imported_is_refused(monkeypatch):
    monkeypatch.delenv("CUPY_TF32", raising=False)
    monkeypatch.setitem(sys.modules, "cupy", types.ModuleType("cupy"))  # imported without it
    _gpu_backend(monkeypatch)
    with pytest.raises(BackendError, match="CuPy was imported before TF32 was asked for"):
        select_backend("cuda", tf32=True)
