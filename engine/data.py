"""MNIST-format (IDX) data: a validating reader, the search order, and a verified download.

Search order: explicit ``data_dir``, env ``XPTRAIN_DATA``, the user cache
(``~/.cache/xptrain/mnist``), then a download from public mirrors into that cache. Any folder
holding the four MNIST file names (raw or ``.gz``) loads; it is reported as verified MNIST only
when the uncompressed files match the canonical SHA-256 values.
"""

import gzip
import hashlib
import os
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# SHA-256 of the uncompressed canonical MNIST files.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
# IDX type code -> big-endian dtype.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


PIXEL_SCALE = np.float32(1 / 255)


def to_pixels(x):
    """uint8 images (NumPy or CuPy) -> float32 in [0, 1] on the same device; other float
    arrays are taken as already scaled and only cast to float32."""
    out = x.astype(np.float32)
    if x.dtype == np.uint8:
        out *= PIXEL_SCALE
    return out


class DataError(UserError, ValueError):
    """Missing, corrupt or inconsistent data; the message names the file and the problem."""


@dataclass
class Dataset:
    """Images as uint8 (N, H*W), labels as int64 (N,), on the host."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    verified: bool
    n_classes: int = 10
    image_shape: tuple = (28, 28)

    def fingerprint(self):
        """SHA-256 (hex) over the shapes, pixels and labels of both splits; computed once."""
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            h = hashlib.sha256()
            for a in (self.x_train, self.y_train, self.x_test, self.y_test):
                a = np.ascontiguousarray(a)
                h.update(f"{a.dtype.str}{a.shape}".encode())
                h.update(a.tobytes())
            cached = self.__dict__["_fingerprint"] = h.hexdigest()
        return cached

    def describe(self):
        tag = "verified MNIST" if self.verified else "unverified IDX data set"
        return (f"{tag} from {self.source}: {len(self.y_train)} train, "
                f"{len(self.y_test)} test images")


def read_idx_bytes(path):
    """The uncompressed bytes of an IDX file (gzip detected by its magic bytes)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt gzip data ({exc})") from None
    if path.suffix == ".gz":
        raise DataError(f"{path}: named .gz but is not gzip-compressed")
    return raw


def parse_idx(data, name="<bytes>"):
    """Parse IDX bytes into a NumPy array, validating the header against the length."""
    if len(data) < 4:
        raise DataError(f"{name}: {len(data)} bytes is too short for an IDX header")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{name}: bad magic number 0x{data[:4].hex()} "
                        "(IDX files start with two zero bytes)")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise DataError(f"{name}: unknown IDX dtype code 0x{code:02x} "
                        f"(expected one of {', '.join(f'0x{c:02x}' for c in IDX_DTYPES)})")
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{name}: header declares {ndim} dimensions but the file is "
                        f"{len(data)} bytes")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    dtype = np.dtype(IDX_DTYPES[code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(f"{name}: shape {shape} needs {expected} data bytes, found "
                        f"{len(data) - header} (truncated or wrong file)")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path):
    """Read one IDX file (raw or .gz) into a NumPy array."""
    return parse_idx(read_idx_bytes(path), str(path))


def write_idx(path, array):
    """Write ``array`` as an IDX file (gzip-compressed if ``path`` ends in .gz), atomically."""
    from .checkpoint import atomic_write

    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    data = header + array.astype(IDX_DTYPES[code]).tobytes()
    if str(path).endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    atomic_write(path, lambda f: f.write(data))


def _find_file(folder, stem):
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def missing_files(folder):
    """The MNIST file names absent from ``folder`` (raw or .gz)."""
    return [stem for stem in FILES.values() if _find_file(Path(folder), stem) is None]


def load_idx_folder(folder, n_classes=10):
    """Load the four MNIST-named IDX files from ``folder`` into a :class:`Dataset`."""
    folder = Path(folder)
    missing = missing_files(folder)
    if missing:
        raise DataError(f"{folder}: missing {', '.join(missing)} (raw or .gz)")
    arrays, verified = {}, True
    for key, stem in FILES.items():
        path = _find_file(folder, stem)
        data = read_idx_bytes(path)
        verified &= hashlib.sha256(data).hexdigest() == MNIST_SHA256[stem]
        arrays[key] = parse_idx(data, str(path))
    for split in ("train", "test"):
        _check_pair(arrays[f"{split}_images"], arrays[f"{split}_labels"], folder, split,
                    n_classes)
    images = arrays["train_images"]
    if arrays["test_images"].shape[1:] != images.shape[1:]:
        raise DataError(f"{folder}: train images are {images.shape[1:]} but test images are "
                        f"{arrays['test_images'].shape[1:]}")
    flat = images.shape[1] * images.shape[2]
    return Dataset(images.reshape(-1, flat), arrays["train_labels"].astype(np.int64),
                   arrays["test_images"].reshape(-1, flat),
                   arrays["test_labels"].astype(np.int64),
                   str(folder), verified, n_classes, tuple(images.shape[1:]))


def _check_pair(images, labels, folder, split, n_classes):
    names = FILES[f"{split}_images"], FILES[f"{split}_labels"]
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{folder / names[0]}: expected uint8 images of shape (N, rows, cols), "
                        f"got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{folder / names[1]}: expected 1-D integer labels, got "
                        f"{labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{folder}: {names[0]} has {len(images)} images but {names[1]} has "
                        f"{len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"{folder / names[1]}: labels must lie in [0, {n_classes}), found "
                        f"values in [{labels.min()}, {labels.max()}]")


def cache_dir():
    """The user cache for downloads: ``$XDG_CACHE_HOME/xptrain`` or ``~/.cache/xptrain``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "xptrain"


def locate(data_dir=None, download=True, progress=True):
    """Find the data folder: ``data_dir``, ``XPTRAIN_DATA``, the cache, then a download."""
    for folder, origin in ((data_dir, "--data-dir"), (os.environ.get("XPTRAIN_DATA"),
                                                      "XPTRAIN_DATA")):
        if folder:
            folder = Path(folder).expanduser()
            if not folder.is_dir():
                raise DataError(f"{folder} (from {origin}) is not a directory")
            missing = missing_files(folder)
            if missing:
                raise DataError(f"{folder} (from {origin}) lacks {', '.join(missing)}; "
                                "expected the four MNIST IDX files, raw or .gz")
            return folder
    cached = cache_dir() / "mnist"
    if cached.is_dir() and not missing_files(cached):
        return cached
    if not download:
        raise DataError(f"no data: pass --data-dir, set XPTRAIN_DATA, or allow a download "
                        f"into {cached}")
    download_mnist(cached, progress=progress)
    return cached


def load_mnist(data_dir=None, download=True, progress=True):
    """Locate (downloading if needed) and load MNIST or an MNIST-format data set."""
    return load_idx_folder(locate(data_dir, download, progress))


def download_mnist(folder, mirrors=MIRRORS, checksums=MNIST_SHA256, progress=True):
    """Download the four files into ``folder``, verifying the uncompressed SHA-256.

    Each file is written to a temporary name and renamed only once verified, so an
    interrupted or failed download leaves no partial file behind.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stem in FILES.values():
        if _find_file(folder, stem) is not None:
            continue
        errors = []
        for mirror in mirrors:
            try:
                _download_one(mirror + stem + ".gz", folder / f"{stem}.gz", checksums[stem],
                              progress)
                break
            except (OSError, DataError) as exc:
                errors.append(f"{mirror}: {exc}")
        else:
            raise DataError(f"could not download {stem}: " + "; ".join(errors) +
                            ". Download the MNIST files yourself and pass --data-dir.")


def _download_one(url, target, sha256, progress):
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            bar = _progress_bar(total, target.name, progress)
            while chunk := response.read(1 << 16):
                f.write(chunk)
                bar.update(len(chunk))
            bar.close()
        digest = hashlib.sha256(read_idx_bytes(tmp)).hexdigest()
        if digest != sha256:
            raise DataError(f"{url}: SHA-256 of the content is {digest}, expected {sha256}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _progress_bar(total, name, enabled):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"download {name}", unit="B", unit_scale=True,
                disable=not enabled, leave=False)


def split_validation(x, y, fraction, seed):
    """Carve a seeded random ``fraction`` of (x, y) off as validation; return 4 arrays."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction!r}")
    n_val = int(round(len(y) * fraction))
    if n_val < 1 or n_val >= len(y):
        raise ValueError(f"validation fraction {fraction} leaves no train or no validation "
                         f"samples out of {len(y)}")
    order = np.random.default_rng(seed).permutation(len(y))
    train, val = order[:-n_val], order[-n_val:]
    return x[train], y[train], x[val], y[val]
