import os
from pathlib import Path

import numpy as np
import pytest

from engine.data import FILES, write_idx

collect_ignore = [] if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else ["cudasim"]


def make_digits(n, seed, size=28, n_classes=10):
    """Learnable synthetic digits: class k lights up a bar at row k plus noise (uint8)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n).astype(np.uint8)
    images = rng.integers(0, 40, (n, size, size)).astype(np.uint8)
    for i, k in enumerate(labels):
        row = 2 + int(k) * (size - 4) // n_classes
        images[i, row:row + 2, 4:size - 4] = 200 + rng.integers(0, 55)
    return images, labels


def write_dataset(folder, n_train=300, n_test=100, gz=True, seed=0, size=28):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = make_digits(n, seed + (split == "test"), size)
        write_idx(folder / (FILES[f"{split}_images"] + suffix), images)
        write_idx(folder / (FILES[f"{split}_labels"] + suffix), labels)
    return folder


@pytest.fixture
def tiny_dir(tmp_path):
    """A small MNIST-format IDX folder of synthetic digits."""
    return write_dataset(tmp_path / "tiny")


@pytest.fixture
def tiny_data(tiny_dir):
    from engine.data import load_idx_folder

    return load_idx_folder(tiny_dir)


@pytest.fixture(scope="session")
def mnist_dir():
    """The real MNIST from XPTRAIN_DATA: required in CI, skipped with a reason elsewhere."""
    folder = os.environ.get("XPTRAIN_DATA")
    if not folder or not Path(folder).is_dir():
        if os.environ.get("CI"):
            pytest.fail("CI must set XPTRAIN_DATA to the MNIST folder; real-data tests "
                        "may not skip in CI")
        pytest.skip("set XPTRAIN_DATA to a folder with the MNIST IDX files to run this test")
    return Path(folder)


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    from engine.data import load_idx_folder

    return load_idx_folder(mnist_dir)


@pytest.fixture
def cpu():
    from engine.backend import select_backend

    return select_backend("cpu")
