"""Evaluate a saved checkpoint on a data set's test split."""

import numpy as np

from . import checkpoint, kernels
from .backend import select_backend, to_host
from .builders import from_spec
from .data import load_mnist, to_pixels
from .losses import SoftmaxCrossEntropy
from .metrics import accuracy, confusion_counts, per_class_accuracy, softmax


def load_model(path, backend):
    """Rebuild the model stored in checkpoint ``path`` on ``backend``; return (model, meta)."""
    params, _, meta = checkpoint.load(path)
    try:
        model = from_spec(meta["model"], backend.xp)
        model.load_state_dict(params)
    except (KeyError, TypeError, ValueError) as exc:
        raise checkpoint.CheckpointError(f"{path}: inconsistent checkpoint ({exc})") from None
    return model, meta


def predict_logits(model, x, chunk=None):
    """Logits for uint8 or float images ``x`` (host, (N, features)), as a host array."""
    xp, chunk = model.xp, chunk or model.eval_rows
    out = []
    for s in range(0, len(x), chunk):
        out.append(to_host(model.forward(to_pixels(xp.asarray(x[s:s + chunk])))))
    return np.concatenate(out) if out else np.empty((0, 0), np.float32)


def evaluate_checkpoint(path, device="auto", data_dir=None, download=True):
    """Test loss, accuracy and per-class accuracy of a checkpoint; returns (dict, confusion)."""
    backend = select_backend(device)
    model, meta = load_model(path, backend)
    data = load_mnist(data_dir, download=download, progress=False)
    if data.x_test.shape[1] != model.n_in:
        raise checkpoint.CheckpointError(f"{path}: model takes {model.n_in} inputs but the "
                                         f"data has {data.x_test.shape[1]} pixels per image")
    # The forward runs on the device; the 10,000 x 10 logits come back once and the
    # metrics are computed on the host (no second upload).
    logits, labels = predict_logits(model, data.x_test), data.y_test
    loss_sum = SoftmaxCrossEntropy(np, kernels.resolve("cpu")).summed(logits, labels)
    conf = confusion_counts(np, labels, logits.argmax(axis=1), logits.shape[1])
    result = {"checkpoint": str(path), "device": backend.name, "n_samples": int(len(labels)),
              "confidence_bands": confidence_bands(logits, labels),
              "test_accuracy": accuracy(conf), "test_loss": float(loss_sum) / len(labels),
              "per_class_accuracy": [float(a) for a in per_class_accuracy(conf)],
              "model": describe_model(meta["model"]), "epoch": meta.get("epoch")}
    return result, conf


def describe_model(spec):
    """A one-line model description: "784-512-10 relu" or "cnn conv32k3-pool2-fc128 relu"."""
    layers = spec["layers"]
    acts = sorted({layer["type"].lower() for layer in layers if layer["type"].lower()
                   in ("relu", "sigmoid", "tanh")})
    if any(layer["type"] == "Conv2D" for layer in layers):
        names = {"Conv2D": lambda e: f"conv{e['c_out']}k{e['k']}",
                 "MaxPool2D": lambda e: f"pool{e['k']}", "Linear": lambda e: f"fc{e['n_out']}"}
        text = "cnn " + "-".join(names[e["type"]](e) for e in layers if e["type"] in names)
    else:
        text = "-".join(map(str, [spec["n_in"]] + [e["n_out"] for e in layers
                                                    if e["type"] == "Linear"]))
    return text + (f" {','.join(acts)}" if acts else "")


BANDS = (("> 99%", 0.99, 1.01), ("90-99%", 0.90, 0.99), ("< 90%", 0.0, 0.90))


def confidence_bands(logits, labels):
    """Share of predictions per confidence band and the accuracy inside each band."""
    probs = softmax(np.asarray(logits, np.float64))
    conf, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    rows = []
    for name, low, high in BANDS:
        inside = (conf > low) & (conf <= high) if low else conf <= high
        n = int(inside.sum())
        rows.append({"band": name, "count": n, "share": n / len(labels),
                     "accuracy": float(correct[inside].mean()) if n else None})
    return rows


def format_bands(rows):
    lines = ["confidence  predictions   share  accuracy"]
    for r in rows:
        acc = f"{r['accuracy'] * 100:7.2f}%" if r["accuracy"] is not None else "      -"
        lines.append(f"{r['band']:>10}  {r['count']:11d}  {r['share'] * 100:5.1f}%  {acc}")
    return "\n".join(lines)
