"""Plots, predictions from image and IDX files, confidence bands."""

import json
import sys

import numpy as np
import pytest
from xptrain.cli import main
from xptrain.data import write_idx
from xptrain.train import TrainConfig, Trainer

plt = pytest.importorskip("matplotlib", reason='needs the plot extra: pip install ".[plot]"')
Image = pytest.importorskip("PIL.Image", reason='needs the plot extra: pip install ".[plot]"')


@pytest.fixture(scope="module")
def run_dir(mnist, tmp_path_factory):
    """One quick real-MNIST run with a checkpoint, shared by the tests below."""
    from xptrain.backend import select_backend

    out = tmp_path_factory.mktemp("run")
    t = Trainer(TrainConfig(epochs=2, hidden=(128,)), mnist, select_backend("cpu"), out,
                log=lambda s: None)
    t.fit()
    return out


EXPECTED = {"curves.png": (720, 288), "confusion.png": (480, 432),
            "predictions.png": (832, 544), "mistakes.png": (832, 272),
            "weights.png": (576, 312)}


def test_plot_command_writes_decodable_pngs(run_dir, mnist_dir, capsys):
    assert main(["plot", str(run_dir), "--device", "cpu", "--data-dir", str(mnist_dir)]) == 0
    for name, size in EXPECTED.items():
        path = run_dir / "plots" / name
        with Image.open(path) as img:
            img.load()
            assert img.format == "PNG" and img.size == size, (name, img.size)
            assert np.asarray(img.convert("L")).std() > 5  # not blank
    assert str(run_dir / "plots" / "curves.png") in capsys.readouterr().out


def test_train_plots_flag(tiny_dir, tmp_path, capsys):
    code = main(["train", "--device", "cpu", "--epochs", "1", "--hidden", "16", "--data-dir",
                 str(tiny_dir), "--out", str(tmp_path / "r"), "--plots", str(tmp_path / "p")])
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == sorted(EXPECTED)


def test_plots_say_what_to_install(monkeypatch, tiny_dir, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code = main(["train", "--device", "cpu", "--data-dir", str(tiny_dir), "--plots",
                 str(tmp_path)])
    assert code == 2
    assert 'pip install "xptrain[plot]"' in capsys.readouterr().err


def _digit_png(img28, path, size=(28, 28), dark_on_light=False):
    img = Image.fromarray(img28).resize(size, Image.BILINEAR)
    if dark_on_light:
        img = Image.fromarray(255 - np.asarray(img))
    canvas = Image.new("L", (size[0] + 30, size[1] + 10), 255 if dark_on_light else 0)
    canvas.paste(img, (20, 3))
    canvas.save(path)


def test_predict_images_and_idx(run_dir, mnist, tmp_path, capsys):
    ckpt = str(run_dir / "checkpoint.npz")
    # test digits the model gets right with high confidence in their MNIST form
    assert main(["predict", ckpt, "--device", "cpu", "--json",
                 str(_idx_slice(mnist, tmp_path))]) == 0
    top = json.loads(capsys.readouterr().out)
    sure = [i for i, r in enumerate(top) if r["top"][0]["class"] == mnist.y_test[i]
            and r["top"][0]["probability"] > 0.95][:6]
    assert len(sure) >= 4 and all(len(r["top"]) == 3 for r in top)
    files = []
    for k, i in enumerate(sure):
        img = mnist.x_test[i].reshape(28, 28)
        path = tmp_path / f"d{k}.png"
        _digit_png(img, path, size=(28 * (k % 3 + 1), 28 * (k % 3 + 1) + 7 * k),
                   dark_on_light=k % 2 == 1)
        files.append(str(path))
    (tmp_path / "bad.png").write_text("not an image")
    code = main(["predict", ckpt, "--device", "cpu", "--json", *files, str(tmp_path / "bad.png"),
                 str(tmp_path / "missing.jpg")])
    out, err = capsys.readouterr()
    assert code == 1  # some files failed, the others still ran
    results = json.loads(out)
    assert [r["top"][0]["class"] for r in results[:len(sure)]] == [
        int(mnist.y_test[i]) for i in sure]
    assert "bad.png: not a readable PNG/JPEG image" in err
    assert "missing.jpg: cannot read" in err


def _idx_slice(mnist, tmp_path):
    path = tmp_path / "slice-idx3-ubyte.gz"
    write_idx(path, mnist.x_test[:20].reshape(-1, 28, 28))
    return path


def test_mnist_style_centres_and_inverts():
    from xptrain.predict import mnist_style

    img = np.ones((60, 90), np.float32)  # white page
    img[10:40, 60:70] = 0.0  # a dark vertical bar, off-centre
    out = mnist_style(img)
    assert out.shape == (28, 28) and out.max() == pytest.approx(1.0, abs=0.05)
    ys, xs = np.indices(out.shape)
    cy, cx = (ys * out).sum() / out.sum(), (xs * out).sum() / out.sum()
    assert abs(cy - 14) < 1 and abs(cx - 14) < 1
    assert out[0].max() == 0 and out[:, 0].max() == 0  # background is black


def test_evaluate_confidence_bands(run_dir, mnist_dir, capsys):
    ckpt = str(run_dir / "checkpoint.npz")
    assert main(["evaluate", ckpt, "--device", "cpu", "--data-dir", str(mnist_dir),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    bands = result["confidence_bands"]
    assert [b["band"] for b in bands] == ["> 99%", "90-99%", "< 90%"]
    assert sum(b["count"] for b in bands) == 10000
    assert bands[0]["accuracy"] > bands[2]["accuracy"]
    overall = sum(b["count"] * b["accuracy"] for b in bands if b["count"]) / 10000
    assert overall == pytest.approx(result["test_accuracy"])
    assert len(result["per_class_accuracy"]) == 10
