"""Ensembles: several checkpoints whose class probabilities are averaged.

``xptrain evaluate A.npz B.npz C.npz`` and ``xptrain predict A.npz --ensemble B.npz
--ensemble C.npz FILE...`` use one. Members must take the same input (features and image
shape) and predict the same classes; each may be any architecture. The average is taken
in probability space, in float64 on the host, as log-probabilities (log-mean-exp of the
members' log-softmax), so a confident member's tiny probabilities do not underflow.
"""

import numpy as np

from .checkpoint import CheckpointError


class Ensemble:
    """Models (from :func:`xptrain.evaluate.load_model`) and their checkpoint paths."""

    def __init__(self, models, metas, paths):
        if not models:
            raise ValueError("an ensemble needs at least one checkpoint")
        self.models, self.metas, self.paths = list(models), list(metas), [str(p) for p in paths]
        first = self._signature(0)
        for i in range(1, len(self.models)):
            if self._signature(i) != first:
                raise CheckpointError(
                    f"{self.paths[i]} cannot join an ensemble with {self.paths[0]}: it takes "
                    f"{_show(self._signature(i))} where the first takes {_show(first)}; "
                    "members must agree on input shape and classes")
        self.n_in, self.image_shape, self.n_classes = first

    def _signature(self, i):
        meta, model = self.metas[i], self.models[i]
        classes = meta.get("n_classes", getattr(model.layers[-1], "n_out", None))
        return model.n_in, tuple(meta.get("image_shape", (28, 28))), classes

    def __len__(self):
        return len(self.models)

    def member_log_probs(self, x):
        """(members, N, C) float64 log-softmax of each member on uint8 or float images x."""
        from .evaluate import predict_logits

        return np.stack([log_softmax(predict_logits(m, x).astype(np.float64))
                         for m in self.models])

    def log_probs(self, x, members=None):
        """(N, C) float64 log of the members' mean probability (``members``: their
        log-probabilities, if already computed)."""
        lp = self.member_log_probs(x) if members is None else members
        top = lp.max(axis=0)
        return top + np.log(np.exp(lp - top).mean(axis=0))

    def probabilities(self, x):
        return np.exp(self.log_probs(x))


def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def load_ensemble(paths, backend):
    """An :class:`Ensemble` of the checkpoints ``paths`` on ``backend``."""
    from .evaluate import load_model

    loaded = [load_model(p, backend) for p in paths]
    return Ensemble([m for m, _ in loaded], [meta for _, meta in loaded], paths)


def _show(signature):
    n_in, shape, classes = signature
    return f"{n_in} inputs ({'x'.join(map(str, shape))} images) and {classes} classes"
