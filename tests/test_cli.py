"""The command line: a JSON summary, evaluate, info, and one clear line per user error."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from xptrain import checkpoint
from xptrain.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--epochs", "2", "--batch-size", "32", "--hidden", "24", "--device", "cpu"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_json_then_evaluate(capsys, tiny_dir, tmp_path):
    out_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", *TINY, "--data-dir", str(tiny_dir),
                             "--out", str(out_dir), "--json")
    assert code == 0, err
    summary = json.loads(out)  # stdout holds exactly one JSON object
    assert summary["epochs"] == len(summary["history"]) == 2 and summary["device"] == "cpu"
    assert summary["test_accuracy"] == summary["history"][-1]["test_accuracy"]
    assert summary["test_accuracy"] > 0.5  # synthetic digits: learnable in two epochs
    assert summary["samples_per_second"] == pytest.approx(
        2 * 300 / summary["seconds"], rel=1e-6)
    assert summary["checkpoint"] == str(out_dir / "checkpoint.npz")
    assert len(summary["per_class_accuracy"]) == 10
    assert "class  samples  correct  accuracy" in err  # the per-class table, on stderr
    code, out, err = run_cli(capsys, "evaluate", str(out_dir / "checkpoint.npz"),
                             "--data-dir", str(tiny_dir), "--device", "cpu", "--json")
    assert code == 0, err
    evaluated = json.loads(out)
    assert evaluated["test_accuracy"] == summary["test_accuracy"]
    assert evaluated["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-5)
    assert evaluated["n_samples"] == 100 and evaluated["epoch"] == 2


def test_resume_extends_with_epochs_and_refuses_other_flags(capsys, tiny_dir, tmp_path):
    out_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", *TINY, "--data-dir", str(tiny_dir), "--out",
                           str(out_dir))
    assert code == 0, err
    ckpt = str(out_dir / "checkpoint.npz")
    code, out, err = run_cli(capsys, "train", "--device", "cpu", "--data-dir", str(tiny_dir),
                             "--resume", ckpt, "--epochs", "3", "--json")
    assert code == 0, err
    assert json.loads(out)["epochs"] == 3 and checkpoint.load(ckpt)[2]["epoch"] == 3
    assert "resuming" in err and "to epoch 3" in err
    code, _, err = run_cli(capsys, "train", "--device", "cpu", "--data-dir", str(tiny_dir),
                           "--resume", ckpt, "--lr", "0.5", "--batch-size", "32")
    assert code == 2 and "cannot change --lr 0.5 (the checkpoint's: 0.002)" in err
    assert "--batch-size" not in err  # the same value as the checkpoint's: not a change
    assert checkpoint.load(ckpt)[2]["epoch"] == 3  # nothing was trained


def test_a_bug_is_not_reported_as_a_user_error(capsys, tiny_dir, monkeypatch):
    """Only validated user errors exit 2 with one line; a bug keeps its traceback."""
    from xptrain import train

    def bug(self):
        raise ValueError("an internal inconsistency")

    monkeypatch.setattr(train.Trainer, "fit", bug)
    with pytest.raises(ValueError, match="an internal inconsistency"):
        main(["train", *TINY, "--data-dir", str(tiny_dir), "--out", str(tiny_dir / "r")])


def test_tf32_on_the_cpu_is_refused(capsys, tiny_dir):
    code, _, err = run_cli(capsys, "train", *TINY, "--data-dir", str(tiny_dir), "--tf32")
    assert code == 2 and "--tf32 needs a CUDA GPU" in err


def test_train_prints_per_epoch_lines_and_table(capsys, tiny_dir, tmp_path):
    code, out, _ = run_cli(capsys, "train", *TINY, "--data-dir", str(tiny_dir),
                           "--out", str(tmp_path / "r"))
    assert code == 0
    lines = out.splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"]
    history = json.loads((tmp_path / "r" / "history.json").read_text())
    assert f"test_acc {history[-1]['test_accuracy'] * 100:.2f}%" in epochs[-1]
    assert lines[-1].startswith(f"test accuracy {history[-1]['test_accuracy'] * 100:.2f}%")
    assert "unverified IDX data set" in out and "kernels numba" in out


def test_info(capsys):
    code, out, _ = run_cli(capsys, "info")
    assert code == 0
    fields = dict(line.split(":", 1) for line in out.splitlines() if not line.startswith(" "))
    assert fields["numpy"].strip() == np.__version__
    assert fields["kernels (cpu)"].strip().startswith("numba for ")
    assert fields["auto device"].strip() in ("cpu", "cuda")
    from xptrain.kernels import blas

    gemm = next(line for line in out.splitlines() if line.startswith("gemm (cpu):"))
    assert (blas.REASON if blas.FOUND is None else os.path.basename(blas.FOUND.path)) in gemm


@pytest.mark.parametrize("argv,message", [
    (["train", "--lr", "-1"], "argument --lr: expected a number > 0"),
    (["train", "--hidden", "12,x"], "argument --hidden: expected comma-separated"),
    (["train", "--batch-size", "0"], "argument --batch-size: expected a positive integer"),
    (["train", "--optimizer", "rms"], "argument --optimizer: invalid choice"),
    (["train", "--dropout", "1"], "argument --dropout: expected a number >= 0 and < 1"),
])
def test_bad_options(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_user_errors_are_one_line(capsys, tmp_path, tiny_dir, monkeypatch):
    cases = [
        (["train", "--device", "cpu", "--data-dir", str(tmp_path / "none")],
         "is not a directory"),
        (["evaluate", str(tmp_path / "missing.npz"), "--device", "cpu"],
         "no such checkpoint file"),
        (["train", "--device", "cpu", "--data-dir", str(tiny_dir), "--warmup", "99"],
         "warmup_epochs must be between 0 and epochs"),
        (["train", "--device", "cpu", "--data-dir", str(tiny_dir), "--resume",
          str(tmp_path / "bad.npz")], "bad.npz: not an xptrain checkpoint"),
    ]
    (tmp_path / "bad.npz").write_text("garbage")
    for argv, message in cases:
        code, out, err = run_cli(capsys, *argv)
        assert code == 2, (argv, err)
        assert err.startswith("xptrain: error: ") and message in err
        assert "Traceback" not in err and err.count("\n") == 1


def test_cuda_unavailable_is_a_clear_error(capsys, monkeypatch, tiny_dir):
    from xptrain import backend

    monkeypatch.setattr(backend, "_probe_cache", {})
    monkeypatch.setitem(sys.modules, "cupy", None)
    code, _, err = run_cli(capsys, "train", "--device", "cuda", "--data-dir", str(tiny_dir))
    assert code == 2 and 'pip install "xptrain[cuda12]"' in err


def test_corrupt_data_is_a_clear_error(capsys, tiny_dir):
    (tiny_dir / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b broken")
    code, _, err = run_cli(capsys, "train", *TINY, "--data-dir", str(tiny_dir))
    assert code == 2 and "train-labels-idx1-ubyte.gz: corrupt gzip data" in err


def test_divergence_exit_code(capsys, tiny_dir, tmp_path):
    code, _, err = run_cli(capsys, "train", *TINY, "--data-dir", str(tiny_dir), "--lr", "1e30",
                           "--optimizer", "sgd", "--out", str(tmp_path / "r"))
    assert code == 3 and "lower the learning rate" in err


def test_console_entry_point_in_subprocess(tiny_dir, tmp_path):
    """`python -m engine` exits non-zero with one message, never a traceback."""
    proc = subprocess.run([sys.executable, "-m", "xptrain", "evaluate", str(tiny_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("xptrain: error:") and "Traceback" not in proc.stderr
    ckpt = tmp_path / "c.npz"
    checkpoint.save(ckpt, {"0.W": np.ones((2, 2))}, {}, {"model": {"n_in": 3, "layers": []}})
    proc = subprocess.run([sys.executable, "-m", "xptrain", "evaluate", str(ckpt),
                           "--device", "cpu", "--data-dir", str(tiny_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "inconsistent checkpoint" in proc.stderr


def test_unwritable_output_is_reported_before_training(capsys, tiny_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out, err = run_cli(capsys, "train", *TINY, "--data-dir", str(tiny_dir), "--out",
                             str(blocker / "run"))
    assert code == 2 and err.startswith("xptrain: error:") and "epoch" not in out
