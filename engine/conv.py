"""Convolution layers on ``xp``: Conv2D, MaxPool2D, Flatten and Reshape, channels-last.

Activations are (N, H, W, C). Conv2D is im2col into a reusable column buffer, then one
matrix product; its backward is two matrix products and col2im. im2col, col2im and max
pooling are kernel ops (a plain-xp reference that runs on NumPy and CuPy, and Numba twins on
the CPU, measured 3.5-9x faster for 16+ channels).
"""

import numpy as np

from . import winograd
from .errors import ConfigError
from .init import draw_weight
from .layers import ACTIVATION_NAMES, BiasActivation, Biased, Layer


def out_size(size, k, stride, pad):
    """Output positions of k-wide windows with ``stride`` over ``size`` padded by ``pad``."""
    return (size + 2 * pad - k) // stride + 1


class Reshape(Layer):
    """(N, prod(shape)) -> (N, *shape), e.g. flat MNIST rows to (N, 28, 28, 1)."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x, train=False, seed=None):
        self.in_shape = x.shape
        return x.reshape((x.shape[0],) + self.shape)

    def backward(self, gy, need_gx=True, sink=None):
        return gy.reshape(self.in_shape)

    def spec(self):
        return [{"type": "Reshape", "shape": list(self.shape)}]


class Flatten(Layer):
    """(N, H, W, C) -> (N, H*W*C)."""

    def forward(self, x, train=False, seed=None):
        self.in_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, gy, need_gx=True, sink=None):
        return gy.reshape(self.in_shape)

    def spec(self):
        return [{"type": "Flatten"}]


class Conv2D(Biased):
    """2-D convolution (cross-correlation): W (k*k*c_in, c_out), b (c_out,)."""

    max_eval_rows = 500  # its column buffer holds k*k values per input value

    def __init__(self, c_in, c_out, k=3, stride=1, pad=None, init="he"):
        super().__init__()
        if min(c_in, c_out, k, stride) < 1 or (pad is not None and pad < 0):
            raise ConfigError(f"Conv2D needs positive channels, kernel and stride and a "
                              f"padding >= 0, got c_in={c_in}, c_out={c_out}, k={k}, "
                              f"stride={stride}, pad={pad}")
        self.c_in, self.c_out, self.k, self.stride = c_in, c_out, k, stride
        self.pad = k // 2 if pad is None else pad
        self.init = init

    def param_specs(self):
        return [("W", (self.k * self.k * self.c_in, self.c_out), True),
                ("b", (self.c_out,), False)]

    def init_params(self, rng):
        return {"W": draw_weight(rng, self.k * self.k * self.c_in, self.c_out, self.init),
                "b": np.zeros(self.c_out, np.float32)}

    def bind(self, xp, ops, params, grads):
        super().bind(xp, ops, params, grads)
        self.winograd = winograd.suits(self, ops)
        self.folds = not self.winograd

    def forward(self, x, train=False, seed=None):
        z = self.convolve(x)
        return self.add_bias(z.reshape(-1, self.c_out)).reshape(z.shape)

    def convolve(self, x):
        """The convolution of ``x`` without the bias: (N, OH, OW, c_out), this layer's
        buffer."""
        x = self._checked(x)
        if self.winograd:
            return winograd.forward(self, x)
        n, h, w, _ = x.shape
        k, s, p = self.k, self.stride, self.pad
        oh, ow = out_size(h, k, s, p), out_size(w, k, s, p)
        cols = self.buffer("cols", (n, oh, ow, k, k, self.c_in), x.dtype)
        self.ops.im2col(x, k, s, p, cols)
        self.cols, self.x_shape = cols.reshape(n * oh * ow, -1), x.shape
        y = self.xp.matmul(self.cols, self.W,
                           out=self.buffer("y", (n * oh * ow, self.c_out), x.dtype))
        return y.reshape(n, oh, ow, self.c_out)

    def backward(self, gy, need_gx=True, sink=None):
        n, oh, ow, _ = gy.shape
        return self.convolve_backward(self.bias_backward(gy.reshape(n * oh * ow, self.c_out)),
                                      need_gx, sink)

    def convolve_backward(self, g2, need_gx, sink):
        """gx (if ``need_gx``) and the weight gradient, from the gradient ``g2``
        (N*OH*OW, c_out) at the convolution's output."""
        if self.winograd:
            return winograd.backward(self, g2.reshape(*self._out_shape(), self.c_out), need_gx)
        gx = None
        if need_gx:  # before the sink: a folded update changes W
            gcols = self.xp.matmul(g2, self.W.T,
                                   out=self.buffer("gcols", self.cols.shape, g2.dtype))
            gx = self.buffer("gx", self.x_shape, g2.dtype)
            self.ops.col2im(gcols.reshape(*self._out_shape(), self.k, self.k, self.c_in),
                            self.k, self.stride, self.pad, gx)
        sink(self.cols.T, g2, self.W, self.gW)
        return gx

    def _checked(self, x):
        if x.ndim != 4 or x.shape[3] != self.c_in:
            raise ValueError(f"Conv2D expects (N, H, W, {self.c_in}) input, got {x.shape}")
        return x

    def _out_shape(self):
        n, h, w, _ = self.x_shape
        k, s, p = self.k, self.stride, self.pad
        return n, out_size(h, k, s, p), out_size(w, k, s, p)

    def spec(self):
        return [{"type": "Conv2D", "c_in": self.c_in, "c_out": self.c_out, "k": self.k,
                 "stride": self.stride, "pad": self.pad, "init": self.init}]


class ConvActivation(BiasActivation, Conv2D):
    """act(conv(x) + b): Conv2D and its activation as one layer."""


class ConvPool(Conv2D):
    """act(maxpool(conv(x)) + b): a Conv2D, the max pooling after it and (when given) its
    activation as one layer, the spec entries Conv2D, MaxPool2D[, activation].

    The same function as the three layers: a per-channel bias moves through a max exactly
    (rounding is monotonic) and a non-decreasing activation commutes with it, so the bias,
    the activation and their gradients run on the pooled output, k*k times smaller, in one
    fused pass each way (:func:`xptrain.kernels.bias_activation`).
    """

    def __init__(self, c_in, c_out, k=3, stride=1, pad=None, init="he", pool=2,
                 pool_stride=None, activation=None):
        super().__init__(c_in, c_out, k, stride, pad, init)
        self.pool = MaxPool2D(pool, pool_stride)
        self.kind = activation

    def bind(self, xp, ops, params, grads):
        super().bind(xp, ops, params, grads)
        self.pool.bind(xp, ops, {}, {})
        # Winograd's 2 x 2 output tiles are the pooling windows: pooled in its transform
        self.winograd_pools = self.winograd and self.pool.k == self.pool.stride == 2

    def forward(self, x, train=False, seed=None):
        if self.winograd_pools:
            y = winograd.forward(self, self._checked(x), pooled=True)
        else:
            y = self.pool.forward(self.convolve(x))
        if self.kind is None:
            return self.add_bias(y)
        self.y = y
        self.ops.bias_activation(y.reshape(-1, self.c_out), self.b, self.kind)
        return y

    def backward(self, gy, need_gx=True, sink=None):
        if self.kind is None:
            self.ops.column_sum(gy.reshape(-1, self.c_out), self.gb)
        else:  # in place on gy: the gradient this layer is handed, read by no one after it
            self.ops.activation_backward(gy.reshape(-1, self.c_out),
                                         self.y.reshape(-1, self.c_out), self.kind, self.gb)
        if self.winograd_pools:
            return winograd.backward(self, gy, need_gx, pooled=True)
        gz = self.pool.backward(gy)
        return self.convolve_backward(gz.reshape(-1, self.c_out), need_gx, sink)

    def spec(self):
        act = [] if self.kind is None else [{"type": ACTIVATION_NAMES[self.kind]}]
        return super().spec() + self.pool.spec() + act


class MaxPool2D(Layer):
    """Max over k x k windows with stride s (default s = k); no padding."""

    def __init__(self, k=2, stride=None):
        super().__init__()
        self.k, self.stride = k, stride or k
        if min(self.k, self.stride) < 1:
            raise ConfigError(f"MaxPool2D needs positive kernel and stride, got {k}, {stride}")

    def forward(self, x, train=False, seed=None):
        n, h, w, c = x.shape
        oh, ow = out_size(h, self.k, self.stride, 0), out_size(w, self.k, self.stride, 0)
        y = self.buffer("y", (n, oh, ow, c), x.dtype)
        self.arg = self.buffer("arg", (n, oh, ow, c), np.uint8)
        self.x_shape = x.shape
        self.ops.maxpool_forward(x, self.k, self.stride, y, self.arg)
        return y

    def backward(self, gy, need_gx=True, sink=None):
        gx = self.buffer("gx", self.x_shape, gy.dtype)
        self.ops.maxpool_backward(gy, self.arg, self.k, self.stride, gx)
        return gx

    def spec(self):
        return [{"type": "MaxPool2D", "k": self.k, "stride": self.stride}]
