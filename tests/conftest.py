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


@pytest.fixture(scope="session")
def cpu():
    from xptrain.backend import select_backend

    return select_backend("cpu")


@pytest.fixture(scope="session")
def trained(mnist, tmp_path_factory):
    """Checkpoints trained on the real MNIST (briefly), by name: "mlp", "dropout", "cnn"."""
    from xptrain.backend import select_backend
    from xptrain.data import Dataset
    from xptrain.train import TrainConfig, Trainer

    runs = {"mlp": (dict(epochs=2, hidden=(128,)), 60000),
            "dropout": (dict(epochs=1, hidden=(128, 64), dropout=0.3), 60000),
            "cnn": (dict(epochs=1, model="conv8-pool-conv16s2p1-fc32"), 12000)}
    cache, paths = tmp_path_factory.mktemp("trained"), {}

    def get(name):
        if name not in paths:
            config, n = runs[name]
            d = mnist if n == len(mnist.y_train) else Dataset(
                mnist.x_train[:n], mnist.y_train[:n], mnist.x_test, mnist.y_test,
                mnist.source, False, mnist.n_classes, mnist.image_shape)
            t = Trainer(TrainConfig(**config), d, select_backend("cpu"), cache / name,
                        log=lambda s: None)
            t.fit()
            paths[name] = t.checkpoint_path
        return paths[name]
    return get
