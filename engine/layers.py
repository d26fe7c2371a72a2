"""Layers with an explicit forward and a hand-written backward, written once against ``xp``.

A layer declares its parameters (``param_specs``); the model places them as views into one
flat parameter buffer and one flat gradient buffer (``bind``). Forward keeps what backward
needs; activations work in place on their input, which the layer before no longer needs.
Output buffers are reused across steps of the same shape, so a training step allocates little.
"""

import kernels

from .init import draw_weight


class Layer:
    """Base: no parameters, identity shape."""

    bias_deferred = False  # True: the activation after this layer adds b and sums its gradient

    def __init__(self):
        self.xp = None
        self._buffers = {}

    def param_specs(self):
        """``[(name, shape, decays)]``; ``decays`` says whether weight decay applies."""
        return []

    def init_params(self, rng):
        return {}

    def bind(self, xp, params, grads):
        """Attach views of the model's flat buffers: ``params[name]``, ``grads[name]``."""
        self.xp = xp
        for name, value in params.items():
            setattr(self, name, value)
        for name, value in grads.items():
            setattr(self, "g" + name, value)

    def buffer(self, key, shape, dtype):
        """A reusable array for ``key`` and ``shape`` (one per distinct batch shape)."""
        buf = self._buffers.get((key, shape))
        if buf is None or buf.dtype != dtype:
            buf = self._buffers[(key, shape)] = self.xp.empty(shape, dtype)
        return buf

    def spec(self):
        return {"type": type(self).__name__}

    def add_bias(self, y):
        """y += b over the last axis, unless the next layer fuses it into its activation."""
        if not self.bias_deferred:
            y += self.b

    def sum_bias_grad(self, g2):
        """gb = column sums of 2-D ``g2``, unless the activation after this layer did it."""
        if not self.bias_deferred:
            kernels.column_sum(g2, self.gb)


class Linear(Layer):
    """y = x @ W + b with W (n_in, n_out), b (n_out,).

    ``fold``: None, or ``(alpha, beta)`` set by the model for one backward pass: the weight
    update ``W = beta W + alpha x.T gy`` is then done in the weight-gradient product itself
    (see :meth:`engine.optim.Optimizer.fold_factors`) and ``gW`` is left as it was.

    ``cols = (lo, hi)`` in :meth:`forward`: every column of ``x`` outside ``[lo, hi)`` is
    zero, so both products read only ``x[:, lo:hi]`` and ``W[lo:hi]``; the other rows of the
    weight gradient are exactly zero (written as such, or only scaled by ``beta`` in a fold).
    The same results with fewer FLOPs (MNIST's blank border: ~10% of the first layer's).
    """

    def __init__(self, n_in, n_out, init="xavier"):
        super().__init__()
        self.n_in, self.n_out, self.init = n_in, n_out, init
        self.fold = self.cols = None

    def param_specs(self):
        return [("W", (self.n_in, self.n_out), True), ("b", (self.n_out,), False)]

    def init_params(self, rng):
        import numpy as np

        return {"W": draw_weight(rng, self.n_in, self.n_out, self.init),
                "b": np.zeros(self.n_out, np.float32)}

    def forward(self, x, train=False, cols=None):
        self.x, self.cols = x, cols
        out = self.buffer("y", (x.shape[0], self.n_out), x.dtype)
        if cols is None:
            y = self.xp.matmul(x, self.W, out=out)
        else:
            lo, hi = cols
            y = self.xp.matmul(x[:, lo:hi], self.W[lo:hi], out=out)
        self.add_bias(y)
        return y

    def backward(self, gy, need_gx=True):
        # gx first: it needs W as it was in forward, and a folded update changes W.
        gx = None
        if need_gx:
            gx = self.xp.matmul(gy, self.W.T,
                                out=self.buffer("gx", (gy.shape[0], self.n_in), gy.dtype))
        x, W, gW = self.x, self.W, self.gW
        if self.cols is not None:
            lo, hi = self.cols
            x, W, gW = x[:, lo:hi], W[lo:hi], gW[lo:hi]
        if self.fold is None:
            self.xp.matmul(x.T, gy, out=gW)
            if self.cols is not None:  # x is zero there: so is the gradient
                self.gW[:lo] = 0
                self.gW[hi:] = 0
        else:  # W = beta W + alpha x.T gy: the optimizer's step; gW is not written
            kernels.gemm(x.T, gy, W, *self.fold)
            if self.cols is not None and self.fold[1] != 1:  # decay alone outside the window
                self.W[:lo] *= self.fold[1]
                self.W[hi:] *= self.fold[1]
        self.sum_bias_grad(gy)
        return gx

    def spec(self):
        return {"type": "Linear", "n_in": self.n_in, "n_out": self.n_out, "init": self.init}


class Activation(Layer):
    """An elementwise activation, in place, by name: one fused kernel each way
    (:func:`kernels.bias_activation`, :func:`kernels.activation_backward`).

    Placed right after a layer with a bias (Linear, Conv2D), it takes that bias over
    (:meth:`take_bias`): forward computes act(x + b) and backward sums the bias gradient in
    the same pass, instead of one more pass over the activations each way.
    """

    kind = None

    def __init__(self):
        super().__init__()
        self.bias = self.gbias = None

    def take_bias(self, layer):
        self.bias, self.gbias = layer.b, layer.gb
        layer.bias_deferred = True

    def forward(self, x, train=False):
        self.y = kernels.bias_activation(x, self.bias, self.kind)
        return self.y

    def backward(self, gy, need_gx=True):
        # The one place the derivatives live: the fused kernel or its reference.
        return kernels.activation_backward(gy, self.y, self.kind, out=gy, bias_grad=self.gbias)


class Sigmoid(Activation):
    """y = 1 / (1 + exp(-x))."""

    kind = "sigmoid"


class ReLU(Activation):
    kind = "relu"


class Tanh(Activation):
    kind = "tanh"


class Dropout(Layer):
    """Inverted dropout: in training, zero each unit with probability ``p`` and scale by
    1/(1-p); identity in evaluation. Draws from ``self.rng``, which the trainer reseeds
    every epoch so a resumed run draws the same masks."""

    def __init__(self, p):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout must be in [0, 1), got {p!r}")
        self.p, self.rng, self.mask = p, None, None

    def draw(self, shape, dtype):
        u = self.rng.random(shape, dtype=dtype)
        keep = dtype.type(1.0 / (1.0 - self.p))
        self.mask = (u >= dtype.type(self.p)) * keep
        return self.mask

    def forward(self, x, train=False):
        if not train or self.p == 0:
            self.mask = None
            return x
        x *= self.draw(x.shape, x.dtype)
        return x

    def backward(self, gy, need_gx=True):
        if self.mask is not None:
            gy *= self.mask
        return gy

    def spec(self):
        return {"type": "Dropout", "p": self.p}


ACTIVATIONS = {"sigmoid": Sigmoid, "relu": ReLU, "tanh": Tanh}
