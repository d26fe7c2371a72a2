"""A sequential model whose parameters live in one flat buffer.

All parameters are float32 views into ``model.params`` and their gradients views into
``model.grads``; parameters that take weight decay come first, so an optimizer updates the
whole model with a few calls over one buffer and applies decay to ``params[:n_decay]``.
"""

import numpy as np

from .init import init_for
from .layers import ACTIVATIONS, Dropout, Linear

DTYPE = np.float32


class Sequential:
    """Layers applied in order; forward returns logits, backward fills ``grads``."""

    def __init__(self, layers, n_in, xp=np, seed=0, dtype=DTYPE):
        self.layers, self.n_in, self.xp, self.dtype = list(layers), n_in, xp, np.dtype(dtype)
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
        self._bind()
        self.load_state_dict(self._draw(seed))

    def _bind(self):
        views = [({}, {}) for _ in self.layers]
        for _key, i, name, shape, start, stop in self.slots:
            views[i][0][name] = self.params[start:stop].reshape(shape)
            views[i][1][name] = self.grads[start:stop].reshape(shape)
        for layer, (p, g) in zip(self.layers, views):
            layer.bind(self.xp, p, g)

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

    def forward(self, x, train=False):
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def backward(self, gy):
        """Backpropagate ``gy`` (dloss/dlogits); fills ``self.grads``."""
        for k in range(len(self.layers) - 1, -1, -1):
            gy = self.layers[k].backward(gy, need_gx=k > 0)

    def dropout_layers(self):
        return [layer for layer in self.layers if isinstance(layer, Dropout)]

    def state_dict(self):
        """Host (NumPy) copies of every parameter, keyed ``"<layer index>.<name>"``."""
        flat = self.params.get() if hasattr(self.params, "get") else np.array(self.params)
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


def mlp_layers(n_in, hidden, n_classes, activation="relu", dropout=0.0):
    """Linear/activation[/Dropout] blocks for each hidden width, then a Linear output."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, "
                         f"got {activation!r}")
    layers, width = [], n_in
    for h in hidden:
        if int(h) < 1:
            raise ValueError(f"hidden sizes must be positive integers, got {h!r}")
        layers += [Linear(width, int(h), init_for(activation)), ACTIVATIONS[activation]()]
        if dropout:
            layers.append(Dropout(dropout))
        width = int(h)
    layers.append(Linear(width, n_classes, "xavier"))
    return layers


def build_mlp(n_in, hidden, n_classes, activation="relu", dropout=0.0, xp=np, seed=0,
              dtype=DTYPE):
    return Sequential(mlp_layers(n_in, hidden, n_classes, activation, dropout), n_in, xp, seed,
                      dtype)


def from_spec(spec, xp=np, seed=0):
    """Rebuild a model from :meth:`Sequential.spec` (as stored in checkpoints)."""
    layers = []
    for entry in spec["layers"]:
        kind = entry["type"]
        if kind == "Linear":
            layers.append(Linear(entry["n_in"], entry["n_out"], entry.get("init", "xavier")))
        elif kind == "Dropout":
            layers.append(Dropout(entry["p"]))
        elif kind.lower() in ACTIVATIONS:
            layers.append(ACTIVATIONS[kind.lower()]())
        else:
            raise ValueError(f"unknown layer type {kind!r} in model spec")
    return Sequential(layers, spec["n_in"], xp, seed)
