"""ONNX export: the file passes onnx.checker, and onnxruntime reads every real test image
as xptrain does (the same argmax, probabilities within 1e-5)."""

import numpy as np
import pytest
from xptrain.evaluate import load_model, predict_logits
from xptrain.export import INPUT, OPSET, OUTPUT, export_checkpoint
from xptrain.metrics import softmax

ort = pytest.importorskip("onnxruntime", reason='needs onnxruntime: pip install ".[onnx]"')
onnx = pytest.importorskip("onnx")


@pytest.mark.parametrize("name", ["mlp", "dropout", "cnn"])
def test_onnxruntime_agrees_on_the_whole_test_set(name, trained, mnist, cpu, tmp_path):
    path = tmp_path / f"{name}.onnx"
    info = export_checkpoint(trained(name), path)
    model_proto = onnx.load(str(path))
    onnx.checker.check_model(model_proto, full_check=True)
    assert model_proto.opset_import[0].version == info["opset"] == OPSET
    assert [i.name for i in model_proto.graph.input] == [INPUT]
    assert [o.name for o in model_proto.graph.output] == [OUTPUT]
    x = mnist.x_test.astype(np.float32) / np.float32(255)
    if name == "cnn":
        assert info["input_shape"] == ["N", 1, 28, 28]
        x = x.reshape(-1, 1, 28, 28)
    else:
        assert info["input_shape"] == ["N", 784]
    onnx_logits = ort.InferenceSession(str(path)).run([OUTPUT], {INPUT: x})[0]
    model, _ = load_model(trained(name), cpu)
    ours = predict_logits(model, mnist.x_test)
    assert onnx_logits.shape == ours.shape == (10000, 10)
    np.testing.assert_array_equal(onnx_logits.argmax(axis=1), ours.argmax(axis=1))
    np.testing.assert_allclose(softmax(onnx_logits.astype(np.float64)),
                               softmax(ours.astype(np.float64)), rtol=0, atol=1e-5)
    assert (ours.argmax(axis=1) == mnist.y_test).mean() > 0.8  # a trained model


def test_export_cli_and_errors(trained, tmp_path, capsys):
    from xptrain.cli import main

    out = tmp_path / "m.onnx"
    assert main(["export", str(trained("mlp")), str(out)]) == 0
    assert "opset 17, input 'pixels' float32 (Nx784" in capsys.readouterr().out
    assert out.stat().st_size > 100_000  # the 784 x 128 weight alone is 401 kB
    assert main(["export", str(tmp_path / "missing.npz"), str(out)]) == 2
    assert "no such checkpoint file" in capsys.readouterr().err
