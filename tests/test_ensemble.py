"""Ensembles in evaluate and predict, and the recipe and augmentation options of train."""

import json

import numpy as np
import pytest
from datasets import make_digits, write_dataset
from xptrain import checkpoint
from xptrain.backend import select_backend
from xptrain.cli import main
from xptrain.data import write_idx
from xptrain.ensemble import load_ensemble
from xptrain.evaluate import load_model, predict_logits
from xptrain.metrics import softmax

TINY = ["--epochs", "2", "--batch-size", "32", "--device", "cpu"]


def _train(capsys, data, out, *extra):
    code = main(["train", *TINY, "--data-dir", str(data), "--out", str(out), "--quiet", *extra])
    err = capsys.readouterr().err
    assert code == 0, err
    return out / "checkpoint.npz"


@pytest.fixture
def members(capsys, tiny_dir, tmp_path):
    return [_train(capsys, tiny_dir, tmp_path / f"m{i}", "--seed", str(i), *spec)
            for i, spec in enumerate((["--hidden", "24"], ["--hidden", "16"],
                                      ["--model", "conv4-pool-fc8"]))]


def test_evaluate_averages_the_members_probabilities(capsys, tiny_dir, members):
    code = main(["evaluate", *map(str, members), "--data-dir", str(tiny_dir), "--device",
                 "cpu", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    cpu = select_backend("cpu")
    x_test, y_test = _test_split(tiny_dir)
    probs = np.mean([softmax(predict_logits(load_model(p, cpu)[0], x_test).astype(np.float64))
                     for p in members], axis=0)
    assert result["test_accuracy"] == pytest.approx(float((probs.argmax(1) == y_test).mean()))
    assert result["test_loss"] == pytest.approx(
        -np.log(probs[np.arange(len(y_test)), y_test]).mean(), rel=1e-9)
    assert [m["checkpoint"] for m in result["members"]] == list(map(str, members))
    alone = [json.loads(_evaluate(capsys, tiny_dir, p))["test_accuracy"] for p in members]
    assert [m["test_accuracy"] for m in result["members"]] == alone
    assert result["checkpoint"] == list(map(str, members))


def _evaluate(capsys, data, *paths):
    assert main(["evaluate", *map(str, paths), "--data-dir", str(data), "--device", "cpu",
                 "--json"]) == 0
    return capsys.readouterr().out


def _test_split(folder):
    from xptrain.data import load_idx_folder

    d = load_idx_folder(folder)
    return d.x_test, d.y_test


def test_evaluate_prints_members_then_the_ensemble(capsys, tiny_dir, members):
    assert main(["evaluate", *map(str, members[:2]), "--data-dir", str(tiny_dir),
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ensemble of 2 on cpu (mean probability):")
    assert f"  {members[0]}: test accuracy " in out and "test accuracy" in out.splitlines()[-1]


def test_predict_with_an_ensemble(capsys, tiny_dir, members, tmp_path):
    images, _ = make_digits(3, seed=9)
    write_idx(tmp_path / "three.idx", images)
    code = main(["predict", str(members[0]), "--ensemble", str(members[1]), "--ensemble",
                 str(members[2]), str(tmp_path / "three.idx"), "--device", "cpu", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    got = json.loads(out)
    ens = load_ensemble(members, select_backend("cpu"))
    probs = ens.probabilities(images.reshape(3, -1))
    for row, p in zip(got, probs):
        assert row["top"][0]["class"] == int(p.argmax())
        assert row["top"][0]["probability"] == pytest.approx(float(p.max()), rel=1e-9)


def test_members_must_agree_on_inputs_and_classes(capsys, tiny_dir, members, tmp_path):
    small = write_dataset(tmp_path / "small", size=20)
    other = _train(capsys, small, tmp_path / "other", "--hidden", "8")
    code = main(["evaluate", str(members[0]), str(other), "--data-dir", str(tiny_dir),
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert (f"xptrain: error: {other} cannot join an ensemble with {members[0]}: it takes "
            "400 inputs (20x20 images) and 10 classes where the first takes 784 inputs "
            "(28x28 images) and 10 classes") in err
    params, opt, meta = checkpoint.load(members[1])
    meta["n_classes"] = 7
    checkpoint.save(tmp_path / "seven.npz", params, opt, meta)
    assert main(["predict", str(members[0]), "--ensemble", str(tmp_path / "seven.npz"),
                 str(tmp_path), "--device", "cpu"]) == 2
    assert "and 7 classes where the first takes" in capsys.readouterr().err


def test_a_recipe_sets_values_and_flags_override_it(capsys, tiny_dir, tmp_path):
    path = _train(capsys, tiny_dir, tmp_path / "r", "--recipe", "mlp-best", "--hidden", "16",
                  "--rotate", "4")
    config = checkpoint.load(path)[2]["config"]
    assert config["recipe"] == "mlp-best" and config["augment"] is True
    assert config["hidden"] == [16] and config["rotate"] == 4.0  # the flags win
    assert config["epochs"] == 2 and config["dropout"] == 0.2  # the recipe's, else
    code = main(["train", "--resume", str(path), "--recipe", "cnn-best", "--quiet",
                 "--data-dir", str(tiny_dir), "--device", "cpu"])
    assert code == 2 and "--recipe cnn-best (the checkpoint's: mlp-best)" in \
        capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--rotate", "5"], "--rotate set the augmentation's strength, but it is off: add "
                        "--augment"),
    (["--recipe", "best"], "argument --recipe: invalid choice: 'best'"),
    (["--augment", "--shear", "75"], "argument --shear: expected a number >= 0 and < 60"),
])
def test_bad_recipe_and_augmentation_options(capsys, tiny_dir, tmp_path, argv, message):
    argv = ["train", *TINY, "--data-dir", str(tiny_dir), "--out", str(tmp_path / "x"), *argv]
    if "argument" in message:  # refused by the parser
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    else:
        assert main(argv) == 2
    assert message in capsys.readouterr().err
