"""Optimizers over the model's flat parameter buffer, and learning-rate schedules.

Each update is one call of a kernel op over the whole flat buffer (``ops.sgd_update``,
``ops.adam_update`` of the ops the model holds); weight decay applies to
``params[:n_decay]``, the weights, never the biases. Formulas follow PyTorch's ``SGD``,
``Adam`` and ``AdamW``. :meth:`Optimizer.backward_step` is a training step's backward and
update; plain SGD owns one fusion there (:class:`FoldedSGD`).
"""

import math

import numpy as np

from .backend import to_host
from .errors import ConfigError
from .kernels.reference import adam_scalars

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")
# A fold pays for large weights only: a 784 x 128 weight (100,352 entries) gains, a 128 x 10
# one loses (784-128-10 at batch 128: folding it as well made a step ~4 us slower).
FOLD_MIN_SIZE = 16384


def _check(name, value, low, high=None, low_open=False):
    ok = value > low if low_open else value >= low
    if high is not None:
        ok = ok and value < high
    if not ok or not math.isfinite(value):
        bounds = f"{'>' if low_open else '>='} {low}" + (f" and < {high}" if high else "")
        raise ConfigError(f"{name} must be {bounds}, got {value!r}")


class Optimizer:
    state_names = ()

    def __init__(self, model, weight_decay=0.0):
        _check("weight_decay", weight_decay, 0.0)
        self.model, self.xp, self.ops = model, model.xp, model.ops
        self.weight_decay = weight_decay
        self.t = 0
        self.state = {name: self.xp.zeros_like(model.params) for name in self.state_names}

    def backward_step(self, gy, lr):
        """Backpropagate ``gy`` through the model's last training forward and update the
        parameters with learning rate ``lr`` (a Python float)."""
        self.model.backward(gy)
        self.step(lr)

    def step(self, lr):
        """One update from ``model.grads`` with learning rate ``lr``."""
        self.t += 1
        self._update(self.model.params, self.model.grads, float(lr))

    def state_dict(self):
        host = {k: to_host(v) for k, v in self.state.items()}
        return host, {"t": self.t}

    def load_state_dict(self, arrays, meta):
        for name in self.state_names:
            if name not in arrays:
                raise ValueError(f"optimizer state {name} is missing")
            value = np.asarray(arrays[name])
            if value.shape != self.state[name].shape:
                raise ValueError(f"optimizer state {name} has shape {value.shape}, "
                                 f"expected {self.state[name].shape}")
            self.state[name][...] = self.xp.asarray(value)
        self.t = int(meta["t"])


class SGD(Optimizer):
    """v = mu v + (g + wd p); p -= lr (g + wd p + mu v) with Nesterov, else p -= lr v.

    Where the ops have a GEMM of their own (NumPy's BLAS from Numba, cuBLAS), plain SGD,
    and on the CPU momentum SGD without Nesterov, fold the step of the large weights that
    open the flat buffer into their gradient products in :meth:`backward_step`
    (:class:`FoldedSGD`). ``fold=False`` keeps the separate update.
    """

    state_names = ("velocity",)

    def __init__(self, model, momentum=0.0, nesterov=False, weight_decay=0.0, fold=True,
                 fold_min_size=FOLD_MIN_SIZE):
        _check("momentum", momentum, 0.0, 1.0)
        if nesterov and momentum == 0:
            raise ConfigError("nesterov needs momentum > 0")
        self.momentum, self.nesterov = momentum, nesterov
        if momentum == 0:
            self.state_names = ()
        super().__init__(model, weight_decay)
        # With momentum the fold adds a launch per folded weight (the velocity's apply):
        # cheaper on the CPU (measured), not measured on a GPU, where a launch costs more
        # than the pass it saves: there only plain SGD folds.
        can = (fold and not nesterov and "gemm" in self.ops.own
               and (momentum == 0 or self.ops.device == "cpu"))
        velocity = self.state.get("velocity")
        self.fold = (FoldedSGD(model, weight_decay, momentum, velocity, fold_min_size)
                     if can else None)
        if self.fold is not None and not self.fold.n_folded:
            self.fold = None

    def backward_step(self, gy, lr):
        if self.fold is None:
            return super().backward_step(gy, lr)
        self.model.backward(gy, self.fold.sink(float(lr)))
        self.t += 1
        self.fold.update_rest(float(lr))

    def _update(self, p, g, lr):
        t = p.dtype.type
        v = self.state.get("velocity", p[:0])
        self.ops.sgd_update(p, g, v, t(lr), t(self.momentum), bool(self.nesterov),
                            t(self.weight_decay), self.model.n_decay)


class FoldedSGD:
    """SGD's weight step done in the weight-gradient product, the same formula without
    writing and re-reading the gradient.

    Plain SGD: ``W = (1 - lr wd) W - lr a @ b``, one GEMM with ``alpha``/``beta``
    (784-128-10 at batch 128: 396 against 425 us a step). With momentum (not Nesterov:
    its step needs the gradient itself): ``V = mu V + a @ b``, one GEMM into the weight's
    velocity, then ``V += wd W`` and ``W -= lr V`` while ``V`` is still in cache.

    It folds the weights in ``params[:n_folded]``: the product weights that open the flat
    buffer, in order, while each has at least ``min_size`` entries; the rest of the buffer
    gets the usual update (:meth:`update_rest`).
    """

    def __init__(self, model, weight_decay, momentum=0.0, velocity=None,
                 min_size=FOLD_MIN_SIZE):
        self.model, self.weight_decay, self.n_folded = model, weight_decay, 0
        # id(W) -> None without momentum, else (V as W's shape, W flat, V flat): the views
        # a step uses, made once
        self.folded = {}
        for slot in sorted(model.slots, key=lambda s: s[4]):
            _, _, name, shape, start, stop = slot
            if (start != self.n_folded or name != "W" or stop - start < min_size
                    or not model.layers[slot[1]].folds):
                break
            views = ((velocity[start:stop].reshape(shape), model.params[start:stop],
                      velocity[start:stop]) if momentum else None)
            self.folded[id(model.param_view(slot))] = views
            self.n_folded = stop
        self.default = model.sink
        self.alpha = self.beta = self.lr = None
        t = model.dtype.type
        self.momentum, self.zero, self.empty = t(momentum), t(0), model.params[:0]
        n = self.n_folded  # the rest of the buffer, and the decay among it
        rest_v = velocity[n:] if momentum else self.empty
        self.rest = (model.params[n:], model.grads[n:], rest_v, self.momentum,
                     t(weight_decay), max(model.n_decay - n, 0))

    def sink(self, lr):
        """This step's sink (see :mod:`.layers`)."""
        t = self.model.dtype.type
        self.lr = t(lr)
        if self.momentum:
            self.alpha, self.beta = t(1.0), self.momentum
        else:
            self.alpha, self.beta = t(-lr), t(1.0 - lr * self.weight_decay)
        return self

    def __call__(self, a, b, W, gW, rows=None):
        views = self.folded.get(id(W), False)
        if views is False:
            self.default(a, b, W, gW, rows)
            return
        target = W if views is None else views[0]
        n_rows = W.shape[0]
        lo, hi = rows or (0, n_rows)
        if hi > lo:
            self.model.ops.gemm(a, b, target[lo:hi], self.alpha, self.beta)
        if self.beta != 1:  # decay alone where the input was zero
            if lo:
                target[:lo] *= self.beta
            if hi < n_rows:
                target[hi:] *= self.beta
        if views is not None:
            self._apply_velocity(*views[1:])

    def _apply_velocity(self, w, v):
        """``v += wd w; w -= lr v`` (the gradient ``a @ b`` is already in ``v``)."""
        ops, zero, empty = self.model.ops, self.zero, self.empty
        if self.weight_decay:  # an axpy as the update kernel: v -= (-wd) w
            ops.sgd_update(v, w, empty, w.dtype.type(-self.weight_decay), zero, False, zero, 0)
        ops.sgd_update(w, v, empty, self.lr, zero, False, zero, 0)

    def update_rest(self, lr):
        """The update of ``params[n_folded:]`` (decay on the weights among them)."""
        p, g, v, mu, wd, n_decay = self.rest
        if p.size:
            self.model.ops.sgd_update(p, g, v, p.dtype.type(lr), mu, False, wd, n_decay)


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
        scalars = adam_scalars(p.dtype, lr, self.t, self.beta1, self.beta2, self.eps,
                               self.weight_decay, self.decoupled)
        self.ops.adam_update(p, g, self.state["m"], self.state["v"], *scalars,
                             self.model.n_decay)


def make_optimizer(name, model, lr, momentum=0.9, nesterov=False, weight_decay=0.0,
                   fold=True):
    """Build an optimizer by name; ``lr`` is validated here, applied per step by the
    schedule. ``fold=False``: no update inside backward (data-parallel ranks must reduce
    the gradients first)."""
    _check("lr", lr, 0.0, low_open=True)
    if name == "sgd":
        return SGD(model, momentum, nesterov, weight_decay, fold=fold)
    if name in ("adam", "adamw"):
        return Adam(model, weight_decay=weight_decay, decoupled=name == "adamw")
    raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


class Schedule:
    """Learning rate per step: linear warm-up, then constant, step decay or cosine to 0."""

    def __init__(self, lr, kind="constant", total_steps=1, warmup_steps=0, step_every=1,
                 gamma=0.1):
        _check("lr", lr, 0.0, low_open=True)
        if kind not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {kind!r}")
        if warmup_steps < 0 or warmup_steps > total_steps:
            raise ConfigError(f"warmup must be between 0 and the run's {total_steps} steps, "
                             f"got {warmup_steps!r}")
        if step_every < 1:
            raise ConfigError(f"step size must be >= 1 step, got {step_every!r}")
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
