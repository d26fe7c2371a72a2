"""Evaluate a saved checkpoint on a data set's test split."""

import os

import numpy as np

from . import checkpoint
from .backend import select_backend, to_host
from .builders import from_spec
from .data import load_mnist, to_pixels
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


def evaluate_checkpoint(paths, device="auto", data_dir=None, download=True):
    """Test loss, accuracy and per-class accuracy of a checkpoint, or of an ensemble of
    several (their probabilities averaged, :mod:`.ensemble`); returns (dict, confusion)."""
    from .ensemble import load_ensemble

    paths = [str(paths)] if isinstance(paths, (str, os.PathLike)) else [str(p) for p in paths]
    backend = select_backend(device)
    ens = load_ensemble(paths, backend)
    data = load_mnist(data_dir, download=download, progress=False)
    if data.x_test.shape[1] != ens.n_in:
        raise checkpoint.CheckpointError(f"{paths[0]}: model takes {ens.n_in} inputs but the "
                                         f"data has {data.x_test.shape[1]} pixels per image")
    if data.n_classes > ens.n_classes:
        raise checkpoint.CheckpointError(f"{paths[0]}: model predicts {ens.n_classes} classes "
                                         f"but the data has {data.n_classes}")
    # The forwards run on the device; each member's 10,000 x C logits come back once and
    # the metrics are computed on the host in float64.
    labels, members = data.y_test, ens.member_log_probs(data.x_test)
    logp = ens.log_probs(None, members) if len(ens) > 1 else members[0]
    conf, loss = _scores(logp, labels)
    result = {"checkpoint": paths[0] if len(paths) == 1 else paths, "device": backend.name,
              "n_samples": int(len(labels)), "confidence_bands": confidence_bands(logp, labels),
              "test_accuracy": accuracy(conf), "test_loss": loss,
              "per_class_accuracy": [float(a) for a in per_class_accuracy(conf)],
              "model": "; ".join(describe_model(m["model"]) for m in ens.metas),
              "epoch": ens.metas[0].get("epoch")}
    if len(ens) > 1:
        result["members"] = [dict(zip(("test_accuracy", "test_loss"), _member(lp, labels)),
                                  checkpoint=p) for lp, p in zip(members, paths)]
    return result, conf


def _scores(logp, labels):
    """(confusion counts, mean negative log-likelihood) of log-probabilities ``logp``."""
    conf = confusion_counts(np, labels, logp.argmax(axis=1), logp.shape[1])
    return conf, float(-logp[np.arange(len(labels)), labels].mean()) if len(labels) else 0.0


def _member(logp, labels):
    conf, loss = _scores(logp, labels)
    return accuracy(conf), loss


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
    """Share of predictions per confidence band and the accuracy inside each band
    (``logits``: or log-probabilities, whose softmax is the probabilities themselves)."""
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
