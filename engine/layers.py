"""Layers with an explicit forward and a hand-written backward, written once against ``xp``.

A layer declares its parameters (``param_specs``); the model places them as views into one
flat parameter buffer and one flat gradient buffer and hands every layer the ``xp`` and the
kernel ops it was built with (``bind``). Forward keeps what backward needs. A layer writes
only into buffers it owns (its outputs, reused across steps of one shape) and into the
gradient it is handed in backward, never into an array another layer keeps.

Weight gradients go through a *sink*: ``sink(a, b, W, gW, rows)`` means "the gradient of
``W`` is ``a @ b``" (on the rows ``rows = (lo, hi)`` of W only, zero on the others). The
model's default sink writes ``gW``; an optimizer may pass its own that updates ``W`` in the
product instead (:class:`xptrain.optim.FoldedSGD`). A layer calls the sink last, when its
backward no longer reads ``W``.
"""

import numpy as np

from .errors import ConfigError
from .init import draw_weight


class Layer:
    """Base: no parameters, identity shape."""

    draws = False  # True: forward takes a seed for its random draws (dropout)
    folds = True  # False: its weight gradient is not one sink product (no folded update)
    max_eval_rows = 5000  # rows per evaluation forward (less where buffers grow per row)

    def __init__(self):
        self.xp = self.ops = None
        self._buffers = {}

    def param_specs(self):
        """``[(name, shape, decays)]``; ``decays`` says whether weight decay applies."""
        return []

    def init_params(self, rng):
        return {}

    def bind(self, xp, ops, params, grads):
        """Attach ``xp``, the kernel ops and views of the model's flat buffers."""
        self.xp, self.ops = xp, ops
        for name, value in params.items():
            setattr(self, name, value)
        for name, value in grads.items():
            setattr(self, "g" + name, value)

    def buffer(self, key, shape, dtype):
        """This layer's reusable C-contiguous array for ``key`` and ``shape``."""
        buf = self._buffers.get((key, shape))
        if buf is None or buf.dtype != dtype:
            buf = self._buffers[(key, shape)] = self.xp.empty(shape, dtype)
        return buf

    def forward(self, x, train=False, seed=None):
        return x

    def backward(self, gy, need_gx=True, sink=None):
        return gy

    def spec(self):
        """The layer as checkpoint entries (a fused layer is several)."""
        raise NotImplementedError(f"{type(self).__name__} does not describe itself")


class GradientSink:
    """The default sink (see the module docstring): ``gW = a @ b``."""

    def __init__(self, xp):
        self.xp = xp

    def __call__(self, a, b, W, gW, rows=None):
        if rows is None:
            self.xp.matmul(a, b, out=gW)
            return
        lo, hi = rows
        self.xp.matmul(a, b, out=gW[lo:hi])
        gW[:lo] = 0  # the input is zero there: so is the gradient
        gW[hi:] = 0


class Biased(Layer):
    """A layer whose output gets a bias ``b`` over its last axis: ``y += b`` forward, the
    bias gradient (column sums) backward. :class:`BiasActivation` replaces both."""

    def add_bias(self, y):
        y += self.b
        return y

    def bias_backward(self, g2):
        self.ops.column_sum(g2, self.gb)
        return g2


class Linear(Biased):
    """y = x @ W + b with W (n_in, n_out), b (n_out,)."""

    def __init__(self, n_in, n_out, init="xavier"):
        super().__init__()
        if min(n_in, n_out) < 1:
            raise ConfigError(f"Linear needs positive sizes, got {n_in} -> {n_out}")
        self.n_in, self.n_out, self.init = n_in, n_out, init

    def param_specs(self):
        return [("W", (self.n_in, self.n_out), True), ("b", (self.n_out,), False)]

    def init_params(self, rng):
        return {"W": draw_weight(rng, self.n_in, self.n_out, self.init),
                "b": np.zeros(self.n_out, np.float32)}

    def forward(self, x, train=False, seed=None):
        self.x = x
        y = self.buffer("y", (x.shape[0], self.n_out), x.dtype)
        self.product(x, y)
        return self.add_bias(y)

    def product(self, x, y):
        self.xp.matmul(x, self.W, out=y)

    def backward(self, gy, need_gx=True, sink=None):
        gy = self.bias_backward(gy)
        gx = None
        if need_gx:  # before the sink: a folded update changes W
            gx = self.xp.matmul(gy, self.W.T,
                                out=self.buffer("gx", (gy.shape[0], self.n_in), gy.dtype))
        self.weight_gradient(gy, sink)
        return gx

    def weight_gradient(self, gy, sink):
        sink(self.x.T, gy, self.W, self.gW)

    def spec(self):
        return [{"type": "Linear", "n_in": self.n_in, "n_out": self.n_out, "init": self.init}]


class BiasActivation:
    """Mixin for a layer with a bias followed by an activation: forward computes
    ``act(z + b)`` and backward ``act'`` and the bias gradient, each in one fused kernel
    pass (:func:`xptrain.kernels.bias_activation`, :func:`~xptrain.kernels.activation_backward`)
    instead of a bias pass and an activation pass each way. The activation's output is this
    layer's own buffer, so the derivative reads exactly what forward computed."""

    def __init__(self, *args, activation, **kwargs):
        super().__init__(*args, **kwargs)
        self.kind = activation

    def add_bias(self, y):
        self.y = y
        self.ops.bias_activation(y.reshape(-1, y.shape[-1]), self.b, self.kind)
        return y

    def bias_backward(self, gy):
        # in place on gy: the gradient this layer is handed, read by no one after it
        self.ops.activation_backward(gy, self.y, self.kind, self.gb)
        return gy

    def spec(self):
        return super().spec() + [{"type": ACTIVATION_NAMES[self.kind]}]


class Dense(BiasActivation, Linear):
    """y = act(x @ W + b): Linear and its activation as one layer."""


class ColumnWindow:
    """Mixin for a first Linear layer: the products read only the input columns that are
    nonzero in some row of the batch (:func:`xptrain.kernels.column_window`), with ``W``'s
    matching rows; the other rows of the weight gradient are zero. The same results without
    the exact-zero terms: MNIST's blank border is ~10% of the first layer's FLOPs. The
    window is found from the batch itself (one pass over its border columns), on the host:
    on a GPU it would be a device read each step, so the builder uses it on the CPU."""

    def product(self, x, y):
        lo, hi = self.rows = self.ops.column_window(x)
        self.xp.matmul(x[:, lo:hi], self.W[lo:hi], out=y)

    def weight_gradient(self, gy, sink):
        lo, hi = self.rows
        sink(self.x[:, lo:hi].T, gy, self.W, self.gW, self.rows)


class WindowedLinear(ColumnWindow, Linear):
    """A :class:`Linear` first layer that skips the all-zero input columns."""


class WindowedDense(ColumnWindow, Dense):
    """A :class:`Dense` first layer that skips the all-zero input columns."""


class Activation(Layer):
    """An activation on its own (after a layer without a bias, e.g. a max pool), into its
    own output buffer: ``y = act(x)``, ``gx = gy act'(y)``."""

    def __init__(self, kind):
        super().__init__()
        if kind not in ACTIVATION_NAMES:
            raise ConfigError(f"activation must be one of {', '.join(ACTIVATION_NAMES)}, "
                              f"got {kind!r}")
        self.kind = kind

    def forward(self, x, train=False, seed=None):
        y = self.buffer("y", x.shape, x.dtype)
        y[...] = x
        self.y = y.reshape(-1, x.shape[-1])
        self.ops.bias_activation(self.y, None, self.kind)
        return y

    def backward(self, gy, need_gx=True, sink=None):
        self.ops.activation_backward(gy.reshape(self.y.shape), self.y, self.kind, None)
        return gy

    def spec(self):
        return [{"type": ACTIVATION_NAMES[self.kind]}]


class Dropout(Layer):
    """Inverted dropout: in training, zero each unit with probability ``p`` and scale by
    1/(1-p), into this layer's own buffer; identity in evaluation. The mask is drawn from
    the ``seed`` of the step (the model derives it from the trainer's step key), so a resumed
    run draws the same masks without replaying any. ``seed`` may be ``(seed, (lo, total))``:
    the input is rows ``lo...`` of a batch of ``total`` and gets those rows of the batch's
    mask (the same masks for any number of data-parallel ranks)."""

    draws = True

    def __init__(self, p):
        super().__init__()
        if not 0 <= p < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {p!r}")
        self.p, self.mask = p, None

    def forward(self, x, train=False, seed=None):
        if not train or self.p == 0:
            self.mask = None
            return x
        seed, (lo, total) = seed if isinstance(seed, tuple) else (seed, (0, x.shape[0]))
        u = self.xp.random.default_rng(seed).random((total, *x.shape[1:]), dtype=x.dtype)
        u = u[lo:lo + x.shape[0]]
        self.mask = (u >= x.dtype.type(self.p)) * x.dtype.type(1.0 / (1.0 - self.p))
        return self.xp.multiply(x, self.mask, out=self.buffer("y", x.shape, x.dtype))

    def backward(self, gy, need_gx=True, sink=None):
        if self.mask is not None:
            gy *= self.mask  # in place on the gradient handed in
        return gy

    def spec(self):
        return [{"type": "Dropout", "p": self.p}]


ACTIVATION_NAMES = {"sigmoid": "Sigmoid", "relu": "ReLU", "tanh": "Tanh"}
