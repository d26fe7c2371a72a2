"""The installed distribution: one import package, ``xptrain``, and no test files."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel built from a copy of the source tree, offline (no build isolation)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("engine", "kernels", "bench", "tests"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "--no-index", "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (path,) = out.glob("xptrain-*.whl")
    return path


def test_wheel_holds_xptrain_alone(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        top_level = z.read(next(n for n in names if n.endswith(".dist-info/top_level.txt")))
    packages = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert packages == {"xptrain"}
    assert top_level.decode().split() == ["xptrain"]
    assert {"xptrain/__init__.py", "xptrain/kernels/__init__.py", "xptrain/bench/__init__.py",
            "xptrain/__main__.py", "xptrain/kernels/cpu.py", "xptrain/static/index.html"} <= set(
        names)
    tests = [n for n in names if Path(n).name.startswith(("test_", "conftest"))]
    assert tests == []


def test_console_script_points_into_the_package(wheel):
    with zipfile.ZipFile(wheel) as z:
        entry = z.read(next(n for n in z.namelist() if n.endswith("entry_points.txt")))
    assert "xptrain = xptrain.cli:main" in entry.decode()


def test_public_api_and_module_entry_point():
    import xptrain
    from xptrain import TrainConfig, Trainer, kernels, load_mnist, select_backend  # noqa: F401

    assert kernels.__name__ == "xptrain.kernels" and callable(kernels.resolve)
    proc = subprocess.run([sys.executable, "-m", "xptrain", "--version"], capture_output=True,
                          text=True, timeout=120)
    assert proc.stdout.strip() == f"xptrain {xptrain.__version__}"


def test_the_library_does_not_import_the_benchmarks(tmp_path):
    """Only ``xptrain bench`` loads xptrain.bench (it imports PyTorch and scikit-learn)."""
    code = ("import sys, xptrain, xptrain.cli, xptrain.evaluate, xptrain.predict; "
            "print([m for m in sys.modules if m.startswith('xptrain.bench')])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
