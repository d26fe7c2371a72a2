"""Small synthetic MNIST-format data sets for the tests (seeded, learnable)."""

from pathlib import Path

import numpy as np
from xptrain.data import FILES, write_idx


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
