"""Predict digits from image files (PNG/JPEG of any size) or IDX files with a checkpoint.

Images are turned into MNIST-style inputs: grayscale, inverted when the digit is dark on a
light background, the ink's bounding box scaled to fit 20x20 (aspect kept), then placed in
a 28x28 frame so that its centre of mass sits at the centre, as MNIST was made.
"""

from pathlib import Path

import numpy as np

from .data import DataError, read_idx, to_pixels
from .errors import UserError

IDX_MAGIC = b"\x00\x00"


class ImageError(UserError, ValueError):
    """A file that cannot be read as an image or IDX digits; names the file."""


def load_image(path, size=28, box=20):
    """One image file -> (size, size) float32 in [0, 1], white digit on black."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ImageError('reading images needs Pillow: pip install "xptrain[plot]"') from None
    try:
        with Image.open(path) as img:
            gray = np.asarray(img.convert("L"), np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageError(f"{path}: not a readable PNG/JPEG image ({exc})") from None
    return mnist_style(gray, size, box)


def mnist_style(gray, size=28, box=20):
    """Centre a grayscale digit MNIST-style (see the module docstring)."""
    from PIL import Image

    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    if background > 0.5:  # dark ink on a light background: invert
        gray, background = 1.0 - gray, 1.0 - background
    gray = np.clip(gray - background, 0, None)
    if gray.max() <= 0:
        return np.zeros((size, size), np.float32)
    gray = gray / gray.max()
    rows, cols = np.flatnonzero(gray.max(axis=1) > 0.05), np.flatnonzero(gray.max(axis=0) > 0.05)
    crop = gray[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    scale = box / max(crop.shape)
    h, w = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    small = np.asarray(Image.fromarray((crop * 255).astype(np.uint8)).resize(
        (w, h), Image.LANCZOS), np.float32) / 255.0
    frame = np.zeros((size, size), np.float32)
    cy, cx = _centre_of_mass(small)
    top = int(round(size / 2 - cy))
    left = int(round(size / 2 - cx))
    top, left = min(max(top, 0), size - h), min(max(left, 0), size - w)
    frame[top:top + h, left:left + w] = small
    return frame


def _centre_of_mass(img):
    total = img.sum()
    ys, xs = np.indices(img.shape)
    return (ys * img).sum() / total, (xs * img).sum() / total


def load_inputs(path, image_shape=(28, 28)):
    """A file -> (names, images (N, H, W) float32 in [0, 1]). IDX or PNG/JPEG by content."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)  # sniff the format without reading the file twice
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if head[:2] == IDX_MAGIC or head[:2] == b"\x1f\x8b":
        try:
            array = read_idx(path)
        except DataError as exc:
            raise ImageError(str(exc)) from None
        if array.ndim == 2:
            array = array[None]
        if array.ndim != 3 or tuple(array.shape[1:]) != tuple(image_shape):
            raise ImageError(f"{path}: IDX images must be (N, {image_shape[0]}, "
                             f"{image_shape[1]}), got {array.shape}")
        return [f"{path}[{i}]" for i in range(len(array))], to_pixels(array)
    return [str(path)], load_image(path, image_shape[0])[None]


def top_k(probs, k=3):
    """[(class, probability)] of the k most likely classes, most likely first."""
    order = np.argsort(-probs)[:k]
    return [(int(c), float(probs[c])) for c in order]


def predict_files(model, paths, image_shape=(28, 28), k=3):
    """Yield (file name, top-k list or None, error or None) for every input in ``paths``;
    ``model``: a model or an :class:`~xptrain.ensemble.Ensemble`."""
    from .ensemble import Ensemble

    if not isinstance(model, Ensemble):
        model = Ensemble([model], [{"image_shape": image_shape}], ["model"])
    for path in paths:
        try:
            names, images = load_inputs(path, image_shape)
        except ImageError as exc:
            yield str(path), None, str(exc)
            continue
        probs = model.probabilities(images.reshape(len(images), -1))
        for name, p in zip(names, probs):
            yield name, top_k(p, k), None
