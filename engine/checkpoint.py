"""Checkpoints: a ``.npz`` archive loaded with ``allow_pickle=False``, written atomically.

Layout (documented in the README so other tools can read it):
  ``param/<layer>.<name>``  float32 parameters, e.g. ``param/0.W`` of shape (784, 256)
  ``optim/<name>``          optimizer state buffers over the flat parameter vector
  ``meta``                  UTF-8 JSON as a uint8 array: format, version, model spec, config,
                            epoch, step, optimizer step count, metrics, history, versions
"""

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .errors import UserError

FORMAT = "xptrain-checkpoint"
VERSION = 1


class CheckpointError(UserError, ValueError):
    """An unreadable, corrupt or foreign checkpoint; the message names the file."""


def atomic_write(path, write):
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path, obj):
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2).encode() + b"\n"))


def save(path, params, optim_state, meta):
    """Write ``params`` and ``optim_state`` (name -> host array) and ``meta`` (JSON-able)."""
    arrays = {f"param/{k}": np.asarray(v) for k, v in params.items()}
    arrays.update({f"optim/{k}": np.asarray(v) for k, v in optim_state.items()})
    meta = {"format": FORMAT, "version": VERSION, **meta}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load(path):
    """Return ``(params, optim_state, meta)``; refuse anything that is not our format."""
    path = Path(path)
    if path.is_file() and not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not an xptrain checkpoint (not an .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise CheckpointError(f"{path}: not a readable xptrain checkpoint "
                              f"({type(exc).__name__}: {exc})") from None
    if "meta" not in arrays:
        raise CheckpointError(f"{path}: not an xptrain checkpoint (no 'meta' entry)")
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an xptrain checkpoint (format "
                              f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {meta.get('version')!r} is not "
                              f"supported (this xptrain reads version {VERSION})")
    params = {k[6:]: v for k, v in arrays.items() if k.startswith("param/")}
    optim = {k[6:]: v for k, v in arrays.items() if k.startswith("optim/")}
    return params, optim, meta
