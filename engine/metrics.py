"""Accuracy, per-class accuracy and the confusion matrix.

The confusion matrix is counted on the device (one ``bincount``) and read to the host once.
"""

import numpy as np


def confusion_counts(xp, y_true, y_pred, n_classes):
    """(n_classes, n_classes) device counts: rows are true classes, columns predictions."""
    flat = y_true * n_classes + y_pred
    return xp.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def softmax(logits):
    """Row-wise softmax of host logits (max-subtracted)."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def accuracy(confusion):
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else float("nan")


def per_class_accuracy(confusion):
    """Recall per true class; NaN for a class with no samples."""
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diag(confusion) / support


def format_per_class(confusion, labels=None):
    """A per-class table: class, samples, correct, accuracy, most frequent confusion."""
    n = confusion.shape[0]
    labels = labels or [str(i) for i in range(n)]
    acc = per_class_accuracy(confusion)
    lines = ["class  samples  correct  accuracy  most confused with"]
    for i in range(n):
        off = confusion[i].copy()
        off[i] = 0
        worst = f"{labels[int(off.argmax())]} ({int(off.max())})" if off.max() else "-"
        lines.append(f"{labels[i]:>5}  {int(confusion[i].sum()):7d}  {int(confusion[i, i]):7d}"
                     f"  {acc[i] * 100:7.2f}%  {worst}")
    return "\n".join(lines)
