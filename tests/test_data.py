"""The IDX reader on generated files, the search order, and the verified download."""

import functools
import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
from datasets import write_dataset
from xptrain import data
from xptrain.data import FILES, DataError, load_idx_folder, parse_idx, read_idx, write_idx


def idx_bytes(array, code=0x08):
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.tobytes()


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32,
                                   np.float64])
@pytest.mark.parametrize("gz", [False, True])
def test_round_trip(tmp_path, dtype, gz):
    a = (np.arange(2 * 3 * 5) % 100).astype(dtype).reshape(2, 3, 5)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, a)
    b = read_idx(path)
    np.testing.assert_array_equal(a, b)
    assert b.dtype == a.dtype and b.dtype.isnative


def test_reads_big_endian_values():
    raw = bytes([0, 0, 0x0B, 1, 0, 0, 0, 2]) + bytes([0x01, 0x02, 0xFF, 0xFE])
    np.testing.assert_array_equal(parse_idx(raw), [258, -2])


@pytest.mark.parametrize("raw,message", [
    (b"\x00\x00", "too short for an IDX header"),
    (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "bad magic number 0x01000801"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unknown IDX dtype code 0x07"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x01", "declares 3 dimensions"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x03\x05", r"needs 3 data bytes, found 1 \(truncated"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x01\x05\x06", "needs 1 data bytes, found 2"),
])
def test_header_errors(tmp_path, raw, message):
    path = tmp_path / "bad-idx"
    path.write_bytes(raw)
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_and_fake_gzip(tmp_path):
    good = gzip.compress(idx_bytes(np.zeros((4, 2, 2), np.uint8)))
    (tmp_path / "cut.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="cut.gz: corrupt gzip data"):
        read_idx(tmp_path / "cut.gz")
    (tmp_path / "plain.gz").write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(DataError, match="plain.gz: named .gz but is not gzip-compressed"):
        read_idx(tmp_path / "plain.gz")
    with pytest.raises(DataError, match="missing.*cannot read"):
        read_idx(tmp_path / "missing")


def test_folder_loads_unverified_synthetic_set(tiny_dir):
    d = load_idx_folder(tiny_dir)
    assert d.x_train.shape == (300, 784) and d.x_train.dtype == np.uint8
    assert d.y_test.shape == (100,) and d.y_test.dtype == np.int64
    assert not d.verified and "unverified" in d.describe()


def test_raw_files_load_too(tmp_path):
    folder = write_dataset(tmp_path / "raw", gz=False, size=12)
    d = load_idx_folder(folder)
    assert d.image_shape == (12, 12) and d.x_train.shape[1] == 144


def _replace(folder, key, array):
    path = folder / (FILES[key] + ".gz")
    write_idx(path, array)
    return path


def test_count_mismatch_named(tiny_dir):
    _replace(tiny_dir, "train_labels", np.zeros(299, np.uint8))
    with pytest.raises(DataError, match="has 300 images but train-labels-idx1-ubyte has 299"):
        load_idx_folder(tiny_dir)


def test_labels_out_of_range_named(tiny_dir):
    labels = np.zeros(100, np.uint8)
    labels[3] = 10
    _replace(tiny_dir, "test_labels", labels)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: labels must lie in \[0, 10\)"):
        load_idx_folder(tiny_dir)


def test_wrong_image_dtype_and_shape(tiny_dir):
    _replace(tiny_dir, "train_images", np.zeros((300, 28, 28), np.float32))
    with pytest.raises(DataError, match="expected uint8 images"):
        load_idx_folder(tiny_dir)


def test_missing_file_named(tiny_dir):
    (tiny_dir / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing t10k-images-idx3-ubyte"):
        load_idx_folder(tiny_dir)


def test_real_mnist_is_verified(mnist):
    assert mnist.verified and mnist.x_train.shape == (60000, 784)
    assert mnist.x_test.shape == (10000, 784)
    assert np.bincount(mnist.y_train).tolist()[:2] == [5923, 6742]


def test_search_order(tmp_path, monkeypatch, tiny_dir):
    other = write_dataset(tmp_path / "env", seed=5)
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("XPTRAIN_DATA", str(other))
    assert data.locate(tiny_dir) == tiny_dir  # explicit beats the environment
    assert data.locate() == other  # then XPTRAIN_DATA
    monkeypatch.delenv("XPTRAIN_DATA")
    cached = write_dataset(cache / "xptrain" / "mnist", seed=6)
    assert data.locate(download=False) == cached  # then the cache
    (cached / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="no data: pass --data-dir"):
        data.locate(download=False)


def test_explicit_folder_errors(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="from --data-dir.*is not a directory"):
        data.locate(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("XPTRAIN_DATA", str(tmp_path / "empty"))
    with pytest.raises(DataError, match="from XPTRAIN_DATA.*lacks train-images"):
        data.locate()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path):
    """Two local HTTP 'mirrors': the first is broken (404), the second serves gz files."""
    root = tmp_path / "www"
    good = write_dataset(root / "good", seed=9)
    (root / "empty").mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/"
    sums = {stem: hashlib.sha256(gzip.decompress((good / f"{stem}.gz").read_bytes()))
            .hexdigest() for stem in FILES.values()}
    yield (base + "empty/", base + "good/"), sums
    server.shutdown()


def test_download_verifies_and_falls_back(tmp_path, mirror):
    mirrors, sums = mirror
    target = tmp_path / "dl"
    data.download_mnist(target, mirrors, sums, progress=False)
    assert not data.missing_files(target)
    assert not list(target.glob(".*part"))
    assert load_idx_folder(target).x_train.shape == (300, 784)


def test_download_bad_checksum_leaves_nothing(tmp_path, mirror):
    mirrors, sums = mirror
    sums = dict(sums, **{"t10k-labels-idx1-ubyte": "0" * 64})
    target = tmp_path / "dl"
    with pytest.raises(DataError, match="could not download t10k-labels.*SHA-256"):
        data.download_mnist(target, mirrors, sums, progress=False)
    assert sorted(p.name for p in target.iterdir()) == sorted(
        f"{s}.gz" for s in FILES.values() if s != "t10k-labels-idx1-ubyte")


def test_load_mnist_downloads_into_cache(tmp_path, monkeypatch, mirror):
    mirrors, sums = mirror
    monkeypatch.delenv("XPTRAIN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    monkeypatch.setattr(data, "MIRRORS", mirrors)
    monkeypatch.setattr(data, "MNIST_SHA256", sums)
    monkeypatch.setattr(data.download_mnist, "__defaults__", (mirrors, sums, True))
    d = data.load_mnist(progress=False)
    assert d.verified  # the served files match the (patched) canonical sums
    assert Path(d.source) == tmp_path / "c" / "xptrain" / "mnist"


def test_validation_split_is_seeded_and_disjoint():
    x = np.arange(100).reshape(100, 1)
    y = np.arange(100)
    a = data.split_validation(x, y, 0.2, seed=3)
    b = data.split_validation(x, y, 0.2, seed=3)
    assert len(a[3]) == 20 and len(a[1]) == 80
    assert not set(a[1]) & set(a[3])
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    with pytest.raises(ValueError, match="validation fraction must be in"):
        data.split_validation(x, y, 1.5, 0)
