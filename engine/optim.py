"""Optimizers over the model's flat parameter buffer, and learning-rate schedules.

Each update is one call of a fused kernel over the whole flat buffer (``kernels.sgd_update``,
``kernels.adam_update``; the plain-xp reference in reference mode); weight decay applies to
``params[:n_decay]``, the weights, never the biases. Formulas follow PyTorch's ``SGD``,
``Adam`` and ``AdamW``.
"""

import math

import numpy as np

import kernels

from .backend import to_host

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")


def _check(name, value, low, high=None, low_open=False):
    ok = value > low if low_open else value >= low
    if high is not None:
        ok = ok and value < high
    if not ok or not math.isfinite(value):
        bounds = f"{'>' if low_open else '>='} {low}" + (f" and < {high}" if high else "")
        raise ValueError(f"{name} must be {bounds}, got {value!r}")


class Optimizer:
    state_names = ()

    def __init__(self, model, weight_decay=0.0):
        _check("weight_decay", weight_decay, 0.0)
        self.model, self.xp = model, model.xp
        self.weight_decay = weight_decay
        self.t = 0
        self.state = {name: self.xp.zeros_like(model.params) for name in self.state_names}

    def fold_factors(self, lr):
        """``(alpha, beta)`` for :meth:`Sequential.backward` to do this step's update of the
        weights in their gradient products (``W = beta W + alpha x.T gy``), or None when this
        optimizer, model or kernel mode cannot; then :meth:`step` gets ``folded=True``."""
        return None

    def step(self, lr, folded=False):
        """One update with learning rate ``lr`` (a Python float) from ``model.grads``;
        ``folded``: backward already updated the weights, update only the rest."""
        self.t += 1
        if folded:
            self._update_rest(float(lr))
        else:
            self._update(self.model.params, self.model.grads, float(lr))

    def _update_rest(self, lr):
        raise ValueError(f"{type(self).__name__} cannot fold its update into backward")

    def state_dict(self):
        host = {k: to_host(v) for k, v in self.state.items()}
        return host, {"t": self.t}

    def load_state_dict(self, arrays, meta):
        for name in self.state_names:
            value = np.asarray(arrays[name])
            if value.shape != self.state[name].shape:
                raise ValueError(f"optimizer state {name} has shape {value.shape}, "
                                 f"expected {self.state[name].shape}")
            self.state[name][...] = self.xp.asarray(value)
        self.t = int(meta["t"])


class SGD(Optimizer):
    """v = mu v + (g + wd p); p -= lr (g + wd p + mu v) with Nesterov, else p -= lr v.

    Plain SGD (no momentum) with fused kernels folds the weights' step into backward:
    ``W = (1 - lr wd) W - lr x.T gy`` in one GEMM, the same formula without writing and
    re-reading the weight gradient (784-128-10, batch 128: 396 against 425 us a step).
    ``fold=False`` keeps the separate update.
    """

    state_names = ("velocity",)

    def __init__(self, model, momentum=0.0, nesterov=False, weight_decay=0.0, fold=True):
        _check("momentum", momentum, 0.0, 1.0)
        if nesterov and momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        self.momentum, self.nesterov, self.fold = momentum, nesterov, fold
        if momentum == 0:
            self.state_names = ()
        super().__init__(model, weight_decay)

    def fold_factors(self, lr):
        # Only with a GEMM twin of its own: the reference GEMM with beta costs more passes
        # than the separate update (and in reference mode the step stays the plain spec).
        if (self.momentum or not self.fold or not self.model.n_folded
                or not kernels.has_twin("gemm", self.model.params)):
            return None
        return -lr, 1.0 - lr * self.weight_decay

    def _update_rest(self, lr):
        m = self.model
        p, g = m.unfolded
        if p.size:  # decay on the unfolded weights, params[n_folded:n_decay]
            kernels.sgd_update(p, g, None, lr, 0.0, False, self.weight_decay,
                               max(m.n_decay - m.n_folded, 0))

    def _update(self, p, g, lr):
        kernels.sgd_update(p, g, self.state.get("velocity"), lr, self.momentum, self.nesterov,
                           self.weight_decay, self.model.n_decay)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; ``decoupled=True`` is AdamW."""

    state_names = ("m", "v")

    def __init__(self, model, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                 decoupled=False):
        _check("beta1", beta1, 0.0, 1.0)
        _check("beta2", beta2, 0.0, 1.0)
        _check("eps", eps, 0.0, low_open=True)
        self.beta1, self.beta2, self.eps, self.decoupled = beta1, beta2, eps, decoupled
        super().__init__(model, weight_decay)

    def _update(self, p, g, lr):
        kernels.adam_update(p, g, self.state["m"], self.state["v"], lr, self.t, self.beta1,
                            self.beta2, self.eps, self.weight_decay, self.decoupled,
                            self.model.n_decay)


def make_optimizer(name, model, lr, momentum=0.9, nesterov=False, weight_decay=0.0):
    """Build an optimizer by name; ``lr`` is validated here, applied per step by the schedule."""
    _check("lr", lr, 0.0, low_open=True)
    if name == "sgd":
        return SGD(model, momentum, nesterov, weight_decay)
    if name in ("adam", "adamw"):
        return Adam(model, weight_decay=weight_decay, decoupled=name == "adamw")
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


class Schedule:
    """Learning rate per step: linear warm-up, then constant, step decay or cosine to 0."""

    def __init__(self, lr, kind="constant", total_steps=1, warmup_steps=0, step_every=1,
                 gamma=0.1):
        _check("lr", lr, 0.0, low_open=True)
        if kind not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {kind!r}")
        if warmup_steps < 0 or warmup_steps > total_steps:
            raise ValueError(f"warmup must be between 0 and the run's {total_steps} steps, "
                             f"got {warmup_steps!r}")
        if step_every < 1:
            raise ValueError(f"step size must be >= 1 step, got {step_every!r}")
        _check("gamma", gamma, 0.0, low_open=True)
        self.lr, self.kind, self.total, self.warmup = lr, kind, total_steps, warmup_steps
        self.step_every, self.gamma = step_every, gamma

    def __call__(self, step):
        """The learning rate for 0-based global ``step``."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if self.kind == "constant":
            return self.lr
        if self.kind == "step":
            return self.lr * self.gamma ** ((step - self.warmup) // self.step_every)
        span = max(self.total - self.warmup, 1)
        return 0.5 * self.lr * (1 + math.cos(math.pi * min(step - self.warmup, span) / span))
