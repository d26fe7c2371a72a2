"""A sequential model whose parameters live in one flat buffer.

All parameters are float32 views into ``model.params`` and their gradients views into
``model.grads``; parameters that take weight decay come first, so an optimizer updates the
whole model with a few calls over one buffer and applies decay to ``params[:n_decay]``.
"""

import re

import numpy as np

from .backend import to_host
from .init import init_for
from .layers import ACTIVATIONS, Activation, Dropout, Linear

DTYPE = np.float32
FOLD_MIN_SIZE = 16384  # entries; a 784 x 128 weight (100,352) gains, a 128 x 10 one loses


class Sequential:
    """Layers applied in order; forward returns logits, backward fills ``grads``."""

    def __init__(self, layers, n_in, xp=np, seed=0, dtype=DTYPE):
        self.layers, self.n_in, self.xp, self.dtype = list(layers), n_in, xp, np.dtype(dtype)
        self.takes_cols = bool(self.layers) and isinstance(self.layers[0], Linear)  # forward
        specs = [(i, name, shape, decays) for i, layer in enumerate(self.layers)
                 for name, shape, decays in layer.param_specs()]
        specs.sort(key=lambda s: not s[3])  # decaying parameters first (stable order)
        self.slots, offset = [], 0
        for i, name, shape, decays in specs:
            size = int(np.prod(shape))
            self.slots.append((f"{i}.{name}", i, name, shape, offset, offset + size))
            offset += size
        self.n_decay = sum(int(np.prod(shape)) for _, _, shape, decays in specs if decays)
        self.params = xp.zeros(offset, self.dtype)
        self.grads = xp.zeros(offset, self.dtype)
        self.set_fold_min_size(FOLD_MIN_SIZE)
        self._bind()
        self.load_state_dict(self._draw(seed))

    def _bind(self):
        views = [({}, {}) for _ in self.layers]
        for _key, i, name, shape, start, stop in self.slots:
            views[i][0][name] = self.params[start:stop].reshape(shape)
            views[i][1][name] = self.grads[start:stop].reshape(shape)
        for layer, (p, g) in zip(self.layers, views):
            layer.bind(self.xp, p, g)
        for before, layer in zip(self.layers, self.layers[1:]):
            if isinstance(layer, Activation) and hasattr(before, "gb"):
                layer.take_bias(before)  # one fused pass each way instead of two

    def _draw(self, seed):
        rng = np.random.default_rng(seed)
        state = {}
        for i, layer in enumerate(self.layers):
            for name, value in layer.init_params(rng).items():
                state[f"{i}.{name}"] = value
        return state

    @property
    def n_params(self):
        return int(self.params.size)

    def forward(self, x, train=False, cols=None):
        """Logits of ``x``. ``cols = (lo, hi)``: the columns of ``x`` outside ``[lo, hi)``
        are all zero, which the first layer skips when it is a Linear (:attr:`takes_cols`;
        see :class:`Linear`), and any other ignores."""
        layers = self.layers
        if cols is not None and self.takes_cols:
            x, layers = layers[0].forward(x, train, cols), layers[1:]
        for layer in layers:
            x = layer.forward(x, train)
        return x

    def backward(self, gy, fold=None):
        """Backpropagate ``gy`` (dloss/dlogits); fills ``self.grads``.

        ``fold = (alpha, beta)`` (only where :attr:`n_folded` > 0): the weight matrices in
        ``params[:n_folded]`` are updated in their gradient products, ``W = beta W +
        alpha x.T gy``, and their gradients are not written; the rest of ``grads`` is filled
        as usual.
        """
        if fold is not None and not self.n_folded:
            raise ValueError("this model cannot fold its update into backward: its parameter "
                             "buffer does not start with a large Linear weight (n_folded 0)")
        for layer in self._fold_layers:
            layer.fold = fold  # for this pass only: every backward sets it again
        for k in range(len(self.layers) - 1, -1, -1):
            gy = self.layers[k].backward(gy, need_gx=k > 0)

    def set_fold_min_size(self, size):
        """Fold (see :meth:`backward`) the Linear weights that open the flat buffer, in order,
        while each has at least ``size`` entries: ``params[:n_folded]``. A fold costs a
        checked GEMM call with ``beta`` and saves a pass over W and its gradient, which pays
        for large weights only (784-128-10 at batch 128: folding the 128 x 10 weight as well
        made a step ~4 us slower, 400 vs 396 us)."""
        for layer in self.layers:  # only the layers chosen here ever fold
            if isinstance(layer, Linear):
                layer.fold = None
        self._fold_layers, self.n_folded = [], 0
        for _, i, name, _, start, stop in sorted(self.slots, key=lambda slot: slot[4]):
            layer = self.layers[i]
            if (start != self.n_folded or name != "W" or not isinstance(layer, Linear)
                    or stop - start < size):
                break
            self._fold_layers.append(layer)
            self.n_folded = stop
        # what an optimizer updates itself after a folded backward
        self.unfolded = (self.params[self.n_folded:], self.grads[self.n_folded:])

    def dropout_layers(self):
        return [layer for layer in self.layers if isinstance(layer, Dropout)]

    def state_dict(self):
        """Host (NumPy) copies of every parameter, keyed ``"<layer index>.<name>"``."""
        flat = to_host(self.params)
        return {key: flat[s:e].reshape(shape) for key, _, _, shape, s, e in self.slots}

    def load_state_dict(self, state):
        """Copy host arrays into the parameters; names and shapes must match exactly."""
        expected = {key: shape for key, _, _, shape, _, _ in self.slots}
        if set(state) != set(expected):
            raise ValueError(f"parameter names differ: expected {sorted(expected)}, "
                             f"got {sorted(state)}")
        flat = np.empty(self.params.size, self.dtype)
        for key, _, _, shape, s, e in self.slots:
            value = np.asarray(state[key])
            if value.shape != tuple(shape):
                raise ValueError(f"parameter {key} has shape {value.shape}, expected {shape}")
            flat[s:e] = value.reshape(-1)
        self.params[...] = self.xp.asarray(flat)

    def spec(self):
        return {"n_in": self.n_in, "layers": [layer.spec() for layer in self.layers]}

    @property
    def eval_chunk(self):
        """Rows per evaluation forward: smaller for convolutions (their column buffers)."""
        return 500 if any(type(layer).__name__ == "Conv2D" for layer in self.layers) else 5000


def _activation(name):
    """The activation layer class called ``name``; a clear error for any other name."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


def mlp_layers(n_in, hidden, n_classes, activation="relu", dropout=0.0):
    """Linear/activation[/Dropout] blocks for each hidden width, then a Linear output."""
    act = _activation(activation)
    layers, width = [], n_in
    for h in hidden:
        if int(h) < 1:
            raise ValueError(f"hidden sizes must be positive integers, got {h!r}")
        layers += [Linear(width, int(h), init_for(activation)), act()]
        if dropout:
            layers.append(Dropout(dropout))
        width = int(h)
    layers.append(Linear(width, n_classes, "xavier"))
    return layers


def build_mlp(n_in, hidden, n_classes, activation="relu", dropout=0.0, xp=np, seed=0,
              dtype=DTYPE):
    return Sequential(mlp_layers(n_in, hidden, n_classes, activation, dropout), n_in, xp, seed,
                      dtype)


CNN = "conv32-pool-conv64-pool-fc128"
_TOKEN = re.compile(r"^(conv(\d+)(?:k(\d+))?(?:s(\d+))?(?:p(\d+))?|pool(\d+)?(?:s(\d+))?"
                    r"|fc(\d+)|drop(0?\.\d+))$")


def parse_layers(text, image_shape, n_classes, activation="relu"):
    """Layers from a small spec string, e.g. ``conv32-pool-conv64-pool-fc128``.

    Tokens (joined by ``-`` or ``,``): ``convF[kK][sS][pP]`` (F filters, K x K kernel,
    default 3, stride S default 1, padding P default K // 2) followed by the activation;
    ``pool[K][sS]`` (max pool, default 2 x 2); ``fcN`` (Linear + activation); ``dropP``.
    The output Linear to ``n_classes`` is appended.
    """
    act = _activation(activation)
    from .conv import Conv2D, Flatten, MaxPool2D, Reshape, out_size

    h, w = image_shape
    c, flat, layers = 1, None, [Reshape((h, w, 1))]
    for token in re.split(r"[-,]", text.strip().lower()):
        m = _TOKEN.match(token)
        if not m:
            raise ValueError(f"model spec {text!r}: cannot read {token!r} (expected convF"
                             f"[kK][sS][pP], pool[K][sS], fcN or dropP)")
        if m.group(2):
            if flat is not None:
                raise ValueError(f"model spec {text!r}: conv after fc")
            f, k = int(m.group(2)), int(m.group(3) or 3)
            stride, pad = int(m.group(4) or 1), int(m.group(5) or k // 2)
            layers += [Conv2D(c, f, k, stride, pad, init_for(activation)), act()]
            h, w, c = out_size(h, k, stride, pad), out_size(w, k, stride, pad), f
        elif token.startswith("pool"):
            k = int(m.group(6) or 2)
            stride = int(m.group(7) or k)
            if len(layers) > 2 and isinstance(layers[-2], Conv2D):
                # Pool before the activation: max commutes with a non-decreasing function,
                # so the result and the gradient are the same and the activation runs on a
                # k*k times smaller tensor (about 7% of a CNN step, measured).
                layers.insert(len(layers) - 1, MaxPool2D(k, stride))
            else:
                layers.append(MaxPool2D(k, stride))
            h, w = out_size(h, k, stride, 0), out_size(w, k, stride, 0)
        elif m.group(8):
            if flat is None:
                layers.append(Flatten())
                flat = h * w * c
            layers += [Linear(flat, int(m.group(8)), init_for(activation)), act()]
            flat = int(m.group(8))
        else:
            layers.append(Dropout(float(m.group(9))))
        if min(h, w) < 1:
            raise ValueError(f"model spec {text!r}: the image shrinks to nothing at {token!r}")
    if flat is None:
        layers.append(Flatten())
        flat = h * w * c
    layers.append(Linear(flat, n_classes, "xavier"))
    return layers


def build_model(model, n_in, image_shape, hidden, n_classes, activation, dropout, xp, seed):
    """``model``: "mlp" (uses ``hidden``), "cnn" (the classic conv32-pool-conv64-pool-fc128)
    or a spec string for :func:`parse_layers`."""
    if model == "mlp":
        return build_mlp(n_in, hidden, n_classes, activation, dropout, xp, seed)
    layers = parse_layers(CNN if model == "cnn" else model, image_shape, n_classes,
                          activation)
    return Sequential(layers, n_in, xp, seed)


def from_spec(spec, xp=np, seed=0):
    """Rebuild a model from :meth:`Sequential.spec` (as stored in checkpoints)."""
    layers = []
    for entry in spec["layers"]:
        kind = entry["type"]
        if kind == "Linear":
            layers.append(Linear(entry["n_in"], entry["n_out"], entry.get("init", "xavier")))
        elif kind == "Dropout":
            layers.append(Dropout(entry["p"]))
        elif kind in ("Conv2D", "MaxPool2D", "Flatten", "Reshape"):
            from . import conv

            args = {k: v for k, v in entry.items() if k != "type"}
            layers.append(getattr(conv, kind)(**args))
        elif kind.lower() in ACTIVATIONS:
            layers.append(ACTIVATIONS[kind.lower()]())
        else:
            raise ValueError(f"unknown layer type {kind!r} in model spec")
    return Sequential(layers, spec["n_in"], xp, seed)
