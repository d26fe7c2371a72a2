import os
from pathlib import Path

import pytest
from datasets import write_dataset

collect_ignore = [] if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else ["cudasim"]


@pytest.fixture
def tiny_dir(tmp_path):
    """A small MNIST-format IDX folder of synthetic digits."""
    return write_dataset(tmp_path / "tiny")


@pytest.fixture
def tiny_data(tiny_dir):
    from xptrain.data import load_idx_folder

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
    from xptrain.data import load_idx_folder

    return load_idx_folder(mnist_dir)


@pytest.fixture
def cpu():
    from xptrain.backend import select_backend

    return select_backend("cpu")
