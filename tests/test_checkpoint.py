"""Checkpoint round trip, refusal of foreign or corrupt files, resume equivalence."""

import json
import os
import signal
import zipfile

import numpy as np
import pytest
from xptrain import checkpoint
from xptrain.checkpoint import CheckpointError
from xptrain.evaluate import load_model, predict_logits
from xptrain.train import TrainConfig, Trainer, TrainingDiverged, TrainingInterrupted

SMALL = dict(batch_size=32, hidden=(16, 12), activation="sigmoid", lr=0.01)


def make(tiny_data, cpu, out, **kw):
    config = TrainConfig(**{**SMALL, "epochs": 3, **kw})
    return Trainer(config, tiny_data, cpu, out, log=lambda s: None)


def test_round_trip(tiny_data, cpu, tmp_path):
    t = make(tiny_data, cpu, tmp_path / "run", epochs=1)
    t.fit()
    model, meta = load_model(t.checkpoint_path, cpu)
    np.testing.assert_array_equal(model.params, t.model.params)
    np.testing.assert_array_equal(predict_logits(model, tiny_data.x_test),
                                  predict_logits(t.model, tiny_data.x_test))
    assert meta["epoch"] == 1 and meta["config"]["hidden"] == [16, 12]
    assert meta["versions"]["numpy"] == np.__version__
    with np.load(t.checkpoint_path, allow_pickle=False) as z:
        assert z["param/0.W"].shape == (784, 16) and z["param/0.W"].dtype == np.float32
        assert {"optim/m", "optim/v", "meta"} <= set(z.files)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history == t.history


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"0.W": np.ones(2)}, {}, {"x": 1})

    def explode(f):
        f.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        checkpoint.atomic_write(path, explode)
    assert checkpoint.load(path)[2]["x"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600


@pytest.mark.parametrize("kind", ["text", "zip", "no_meta", "foreign_meta", "version",
                                  "truncated", "pickle", "missing"])
def test_refuses_foreign_or_corrupt(tmp_path, kind):
    path = tmp_path / "x.npz"
    if kind == "text":
        path.write_text("hello")
    elif kind == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("readme.txt", "not numpy")
    elif kind == "no_meta":
        np.savez(path, w=np.ones(3))
    elif kind == "foreign_meta":
        np.savez(path, meta=np.frombuffer(b'{"format": "other"}', np.uint8))
    elif kind == "version":
        checkpoint.save(path, {}, {}, {})
        _rewrite_meta(path, version=99)
    elif kind == "truncated":
        checkpoint.save(path, {"0.W": np.ones((50, 50))}, {}, {})
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "pickle":
        np.savez(path, meta=np.array([{"format": checkpoint.FORMAT}], dtype=object))
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path)
    assert str(path) in str(info.value)


def _rewrite_meta(path, **changes):
    params, optim, meta = checkpoint.load(path)
    meta.update(changes)
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    np.savez(path, **arrays)


def _interrupt_after(trainer, n_steps, real_signal=False):
    """Request a stop (as Ctrl-C does) once ``n_steps`` optimizer steps have run."""
    step = trainer.optimizer.backward_step
    count = [0]

    def counting(gy, lr):
        step(gy, lr)
        count[0] += 1
        if count[0] == n_steps:
            if real_signal:
                os.kill(os.getpid(), signal.SIGINT)
            else:
                trainer._stop_requested = True

    trainer.optimizer.backward_step = counting


@pytest.mark.parametrize("dropout,stop_at", [(0.0, 14), (0.3, 17), (0.3, 20)])
def test_resume_ends_where_uninterrupted_run_ends(tiny_data, cpu, tmp_path, dropout, stop_at):
    full = make(tiny_data, cpu, tmp_path / "full", dropout=dropout)
    full.fit()
    part = make(tiny_data, cpu, tmp_path / "part", dropout=dropout)
    _interrupt_after(part, stop_at, real_signal=dropout > 0)  # 10 steps per epoch
    with pytest.raises(TrainingInterrupted, match="checkpoint saved to .*--resume") as info:
        part.fit()
    assert info.value.path == part.checkpoint_path
    resumed = Trainer.resume(info.value.path, tiny_data, cpu, log=lambda s: None)
    assert (resumed.epoch, resumed.step_in_epoch) == divmod(stop_at, 10)
    resumed.fit()
    np.testing.assert_array_equal(resumed.model.params, full.model.params)
    np.testing.assert_array_equal(resumed.optimizer.state["m"], full.optimizer.state["m"])
    assert [r["train_loss"] for r in resumed.history] == pytest.approx(
        [r["train_loss"] for r in full.history], rel=1e-9)
    assert resumed.optimizer.t == full.optimizer.t


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tiny_data, cpu, tmp_path):
    t = make(tiny_data, cpu, tmp_path / "run")
    epoch_fn = t.train_epoch

    def poisoned(epoch, bar=None):
        if epoch == 1:
            t.model.params[:5] = np.inf
        return epoch_fn(epoch, bar)

    t.train_epoch = poisoned
    with pytest.raises(TrainingDiverged, match=r"lower the learning rate \(--lr, now 0.01\)"
                       r".*last good checkpoint: .*checkpoint.npz"):
        t.fit()
    model, meta = load_model(t.checkpoint_path, cpu)
    assert meta["epoch"] == 1 and np.isfinite(model.params).all()


@pytest.mark.parametrize("kw", [dict(model="conv4-pool-drop0.3-fc8-drop0.2", epochs=2),
                                dict(augment=True, elastic=0.5, rotate=5.0)])
def test_resume_with_random_draws(tiny_data, cpu, tmp_path, kw):
    """Dropout masks in a CNN and augmentation warps come from the step key: a run stopped
    mid-epoch and resumed draws the same ones and ends where the uninterrupted run ends."""
    full, resumed = _full_and_resumed(tiny_data, cpu, tmp_path, **kw)
    np.testing.assert_array_equal(resumed.model.params, full.model.params)


def _full_and_resumed(tiny_data, cpu, tmp_path, **kw):
    """A run of ``kw`` trained through, and the same run stopped after 13 steps and
    resumed to its end."""
    full = make(tiny_data, cpu, tmp_path / "full", **kw)
    full.fit()
    part = make(tiny_data, cpu, tmp_path / "part", **kw)
    _interrupt_after(part, 13)
    with pytest.raises(TrainingInterrupted) as info:
        part.fit()
    resumed = Trainer.resume(info.value.path, tiny_data, cpu, log=lambda s: None)
    resumed.fit()
    return full, resumed


def test_resume_with_more_epochs_extends_the_run(tiny_data, cpu, tmp_path):
    """--epochs on resume extends the run: a 2-epoch run resumed to 4 ends where a 4-epoch
    run ends (constant schedule: the schedule does not depend on the length)."""
    kw = dict(schedule="constant", optimizer="sgd", momentum=0.9, lr=0.05)
    full = make(tiny_data, cpu, tmp_path / "full", epochs=4, **kw)
    full.fit()
    short = make(tiny_data, cpu, tmp_path / "short", epochs=2, **kw)
    short.fit()
    resumed = Trainer.resume(short.checkpoint_path, tiny_data, cpu, overrides={"epochs": 4},
                             log=lambda s: None)
    assert resumed.config.epochs == 4 and resumed.epoch == 2
    resumed.fit()
    np.testing.assert_array_equal(resumed.model.params, full.model.params)
    assert len(resumed.history) == 4


@pytest.mark.parametrize("overrides,message", [
    ({"lr": 0.5}, r"cannot change --lr 0.5 \(the checkpoint's: 0.01\)"),
    ({"hidden": (8,), "seed": 3}, r"--hidden 8 \(the checkpoint's: 16,12\), --seed 3"),
    ({"epochs": 1}, "has already trained 3 epochs"),
])
def test_resume_refuses_other_changes(tiny_data, cpu, tmp_path, overrides, message):
    t = make(tiny_data, cpu, tmp_path / "run")
    t.fit()
    with pytest.raises(ValueError, match=message):
        Trainer.resume(t.checkpoint_path, tiny_data, cpu, overrides=overrides,
                       log=lambda s: None)
    same = {"lr": 0.01, "hidden": (16, 12), "kernels": "reference", "zero_columns": "read"}
    resumed = Trainer.resume(t.checkpoint_path, tiny_data, cpu, overrides=same,
                             log=lambda s: None)  # equal values, execution options: fine
    assert resumed.ops.name == "reference"


def test_resume_refuses_other_data(tiny_data, cpu, tmp_path):
    from datasets import write_dataset
    from xptrain.data import load_idx_folder

    t = make(tiny_data, cpu, tmp_path / "run", epochs=1)
    t.fit()
    other = load_idx_folder(write_dataset(tmp_path / "other", seed=5))
    with pytest.raises(CheckpointError, match="was trained on other data"):
        Trainer.resume(t.checkpoint_path, other, cpu, log=lambda s: None)
    params, optim, meta = checkpoint.load(t.checkpoint_path)
    del meta["data_sha256"]
    checkpoint.save(t.checkpoint_path, params, optim, meta)
    with pytest.raises(CheckpointError, match="records no data checksum"):
        Trainer.resume(t.checkpoint_path, tiny_data, cpu, log=lambda s: None)


def test_resume_of_a_folded_momentum_run(tiny_data, cpu, tmp_path):
    """The folded momentum step keeps its velocity in the optimizer state like the separate
    step: a run stopped mid-epoch and resumed ends exactly where the uninterrupted run
    ends (784 x 32 weights: above the size where the step folds)."""
    from xptrain.kernels import blas

    kw = dict(optimizer="sgd", momentum=0.9, weight_decay=1e-3, hidden=(32,), epochs=2)
    full, resumed = _full_and_resumed(tiny_data, cpu, tmp_path, **kw)
    assert (full.optimizer.fold is not None) == (blas.FOUND is not None)
    assert (resumed.optimizer.fold is not None) == (blas.FOUND is not None)
    np.testing.assert_array_equal(resumed.model.params, full.model.params)
    np.testing.assert_array_equal(resumed.optimizer.state["velocity"],
                                  full.optimizer.state["velocity"])
