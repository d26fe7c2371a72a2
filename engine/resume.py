"""What a checkpoint records about its run, and the checks before a run is continued.

A resumed run continues the checkpoint's run: the same data, model and hyperparameters.
Overrides may only extend it (``epochs``, at least the epochs already done; the schedule is
then laid over the new length) or change how the same steps are computed
(:data:`~xptrain.config.EXECUTION_FIELDS`); any other change is refused with a
:class:`ConfigError` naming it. Dropout masks come from per-step seeds, so a run continued
mid-epoch draws what the uninterrupted run would have drawn.
"""

import platform
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from . import checkpoint
from .builders import from_spec
from .config import EXECUTION_FIELDS, TrainConfig
from .errors import ConfigError


def metadata(trainer, opt_meta=None):
    """The JSON-able record of ``trainer``'s run saved with each checkpoint."""
    d = trainer.dataset
    return {"model": trainer.model.spec(), "config": _jsonable(asdict(trainer.config)),
            "epoch": trainer.epoch, "step_in_epoch": trainer.step_in_epoch,
            "partial_loss": trainer.partial_loss, "optimizer": opt_meta or {},
            "history": trainer.history, "n_classes": d.n_classes,
            "image_shape": list(d.image_shape), "data": d.describe(),
            "data_sha256": d.fingerprint(), "versions": versions(),
            "device": trainer.backend.name, "kernels": trainer.ops.name}


def resume(cls, path, dataset, backend, out_dir=None, overrides=None, **kwargs):
    """A ``cls`` (a Trainer) that continues the run saved at ``path`` on ``dataset``.

    ``overrides``: config fields the caller set explicitly (see the module docstring).
    """
    params, optim, meta = checkpoint.load(path)
    config = apply_overrides(path, TrainConfig.from_dict(meta["config"]), overrides or {},
                             meta["epoch"])
    check_data(path, meta, dataset)
    trainer = cls(config, dataset, backend, out_dir or Path(path).parent, **kwargs)
    try:
        expected = from_spec(meta["model"], np).spec()
    except (KeyError, TypeError, ValueError) as exc:
        raise checkpoint.CheckpointError(f"{path}: unreadable model spec ({exc})") from None
    if expected != trainer.model.spec():
        raise checkpoint.CheckpointError(f"{path}: its model does not match its config")
    try:
        trainer.model.load_state_dict(params)
        trainer.optimizer.load_state_dict(optim, meta["optimizer"])
        trainer.epoch, trainer.step_in_epoch = int(meta["epoch"]), int(meta["step_in_epoch"])
        trainer.partial_loss, trainer.history = float(meta["partial_loss"]), meta["history"]
    except (KeyError, TypeError, ValueError) as exc:
        raise checkpoint.CheckpointError(f"{path}: inconsistent checkpoint ({exc})") from None
    return trainer


def apply_overrides(path, config, overrides, epochs_done):
    """``config`` with ``overrides`` applied where a resumed run allows them."""
    known = {f.name for f in fields(TrainConfig)}
    refused = []
    for name, value in overrides.items():
        if name not in known:
            raise ConfigError(f"unknown training option {name!r}")
        if isinstance(getattr(config, name), tuple):
            value = tuple(value)
        if name == "epochs":
            if value < epochs_done:
                raise ConfigError(f"--epochs {value} with --resume {path}: the checkpoint "
                                  f"has already trained {epochs_done} epochs")
        elif name not in EXECUTION_FIELDS and value != getattr(config, name):
            refused.append(f"--{name.replace('_', '-')} {_show(value)} (the checkpoint's: "
                           f"{_show(getattr(config, name))})")
            continue
        setattr(config, name, value)
    if refused:
        free = ", ".join("--" + f.replace("_", "-") for f in EXECUTION_FIELDS)
        raise ConfigError(f"--resume {path} continues that run as it was configured; it "
                          f"cannot change {', '.join(refused)}. Only --epochs (to extend the "
                          f"run) and {free} may differ; start a new run for other settings")
    return config.validate()


def check_data(path, meta, dataset):
    """Refuse a data set other than the checkpoint's (its SHA-256 over pixels and labels)."""
    saved = meta.get("data_sha256")
    if saved is None:
        raise checkpoint.CheckpointError(f"{path}: records no data checksum, so it cannot "
                                         "be resumed safely (written by an older xptrain)")
    if saved != dataset.fingerprint():
        raise checkpoint.CheckpointError(
            f"{path}: was trained on other data ({meta.get('data', 'unknown')}, SHA-256 "
            f"{saved[:12]}...) than {dataset.describe()} (SHA-256 "
            f"{dataset.fingerprint()[:12]}...); pass the same --data-dir")


def _show(value):
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _jsonable(d):
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def versions():
    import numba

    from . import __version__

    return {"xptrain": __version__, "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__}
