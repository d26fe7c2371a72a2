"""Pictures of a run: learning curves, confusion matrix, sample predictions, the most
confident mistakes and the first-layer weights, as PNG files (needs the ``plot`` extra)."""

from pathlib import Path

import numpy as np

from .errors import UserError

INSTALL = 'plots need matplotlib and Pillow: pip install "xptrain[plot]"'


class PlotUnavailable(UserError, RuntimeError):
    """matplotlib or Pillow is missing; the message says what to install."""


def pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable(INSTALL) from None
    return plt


def _save(fig, path):
    from .checkpoint import atomic_write

    plt = pyplot()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=fig.dpi))
    plt.close(fig)
    return Path(path)


def learning_curves(history, path):
    """Loss and accuracy per epoch, train and test (or validation)."""
    plt = pyplot()
    split = "val" if history and "val_loss" in history[0] else "test"
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=80)
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax1.plot(epochs, [h[f"{split}_loss"] for h in history], "o-", label=split)
    ax1.set(xlabel="epoch", ylabel="cross-entropy", title="loss", yscale="log")
    if "train_accuracy" in history[0]:
        ax2.plot(epochs, [100 * h["train_accuracy"] for h in history], "o-", label="train")
    ax2.plot(epochs, [100 * h[f"{split}_accuracy"] for h in history], "o-", label=split)
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def confusion_matrix(conf, path, labels=None):
    """The confusion matrix as an annotated heatmap (rows: true class, columns: predicted)."""
    plt = pyplot()
    n = conf.shape[0]
    labels = labels or [str(i) for i in range(n)]
    fig, ax = plt.subplots(figsize=(6, 5.4), dpi=80)
    shown = np.log1p(conf)
    ax.imshow(shown, cmap="Blues")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(int(conf[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if shown[i, j] > shown.max() * 0.6 else "black")
    ax.set(xticks=range(n), yticks=range(n), xticklabels=labels, yticklabels=labels,
           xlabel="predicted", ylabel="true",
           title=f"confusion matrix ({np.trace(conf) / conf.sum():.2%} correct)")
    fig.tight_layout()
    return _save(fig, path)


def _digit_grid(images, titles, wrong, path, suptitle, cols=8):
    plt = pyplot()
    rows = max(1, int(np.ceil(len(images) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.7), dpi=80)
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, img, title, bad in zip(np.ravel(axes), images, titles, wrong):
        ax.imshow(img, cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(title, fontsize=8, color="red" if bad else "black")
        if bad:
            for spine in ax.spines.values():
                spine.set(visible=True, color="red", linewidth=2)
            ax.axis("on")
            ax.set(xticks=[], yticks=[])
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def prediction_grid(images, labels, probs, path, n=32, seed=0):
    """Random test digits with predicted label and confidence; wrong ones in red."""
    pick = np.random.default_rng(seed).choice(len(labels), size=min(n, len(labels)),
                                              replace=False)
    pred = probs[pick].argmax(axis=1)
    titles = [f"{p} ({probs[i, p]:.0%})" + ("" if p == labels[i] else f" true {labels[i]}")
              for i, p in zip(pick, pred)]
    return _digit_grid(images[pick], titles, pred != labels[pick], path,
                       "random test digits: prediction (confidence)")


def confident_mistakes(images, labels, probs, path, n=16):
    """The wrong predictions the model was surest of."""
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != labels)
    order = wrong[np.argsort(-probs[wrong, pred[wrong]])][:n]
    titles = [f"{pred[i]} ({probs[i, pred[i]]:.0%}) true {labels[i]}" for i in order]
    return _digit_grid(images[order], titles, [True] * len(order), path,
                       f"most confident mistakes ({len(wrong)} wrong in all)")


def first_layer_weights(w, image_shape, path, n=32):
    """Each first-layer unit's incoming weights as an image tile (blue -, red +)."""
    plt = pyplot()
    n = min(n, w.shape[1])
    cols = 8
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9 + 0.3), dpi=80)
    for k, ax in enumerate(np.ravel(axes)):
        ax.axis("off")
        if k < n:
            tile = w[:, k].reshape(image_shape)
            lim = np.abs(tile).max() or 1.0
            ax.imshow(tile, cmap="bwr", vmin=-lim, vmax=lim, interpolation="nearest")
    fig.suptitle(f"first-layer weights of {n} units", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def write_all(out_dir, history, model_state, data, logits):
    """Every picture of a finished run into ``out_dir``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from .metrics import confusion_counts, softmax

    probs = softmax(logits.astype(np.float64))
    labels = data.y_test
    images = data.x_test.reshape(-1, *data.image_shape) / 255.0
    conf = confusion_counts(np, labels, probs.argmax(axis=1), probs.shape[1])
    return [learning_curves(history, out / "curves.png"),
            confusion_matrix(conf, out / "confusion.png"),
            prediction_grid(images, labels, probs, out / "predictions.png"),
            confident_mistakes(images, labels, probs, out / "mistakes.png"),
            first_layer_weights(model_state["0.W"], data.image_shape, out / "weights.png")]
