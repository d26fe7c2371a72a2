"""A sequential model whose parameters live in one flat buffer.

All parameters are views into ``model.params`` and their gradients views into
``model.grads``; parameters that take weight decay come first, so an optimizer updates the
whole model with a few calls over one buffer and applies decay to ``params[:n_decay]``.
Parameters are keyed ``"<entry>.<name>"`` by the layer's position in the model's spec
(:mod:`.builders`), so a fused layer keeps the keys of the layers it fuses.
"""

import numpy as np

from . import kernels
from .backend import to_host
from .layers import GradientSink

DTYPE = np.float32


class Sequential:
    """Layers applied in order; forward returns logits, backward fills ``grads``.

    ``xp`` (NumPy or CuPy) and ``ops`` (:func:`xptrain.kernels.resolve`; by default the
    fused kernels of ``xp``'s device) are given to every layer.
    """

    def __init__(self, layers, n_in, xp=np, seed=0, dtype=DTYPE, ops=None):
        self.layers, self.n_in, self.xp, self.dtype = list(layers), n_in, xp, np.dtype(dtype)
        self.ops = ops or kernels.resolve("cpu" if xp is np else "cuda")
        specs, entry = [], 0
        for i, layer in enumerate(self.layers):
            specs += [(i, f"{entry}.{name}", name, shape, decays)
                      for name, shape, decays in layer.param_specs()]
            entry += len(layer.spec())
        specs.sort(key=lambda s: not s[4])  # decaying parameters first (stable order)
        self.slots, offset = [], 0  # (key, layer index, name, shape, start, stop)
        for i, key, name, shape, decays in specs:
            size = int(np.prod(shape))
            self.slots.append((key, i, name, tuple(shape), offset, offset + size))
            offset += size
        self.n_decay = sum(int(np.prod(s[3])) for s in specs if s[4])
        self.params = xp.zeros(offset, self.dtype)
        self.grads = xp.zeros(offset, self.dtype)
        self.sink = GradientSink(xp)
        # the first layer with parameters: backward stops there, no gradient goes below it
        self.first_trained = next((i for i, layer in enumerate(self.layers)
                                   if layer.param_specs()), len(self.layers))
        self._bind()
        self.load_state_dict(self._draw(seed))

    def _bind(self):
        views = [({}, {}) for _ in self.layers]
        for _key, i, name, shape, start, stop in self.slots:
            views[i][0][name] = self.params[start:stop].reshape(shape)
            views[i][1][name] = self.grads[start:stop].reshape(shape)
        for layer, (p, g) in zip(self.layers, views):
            layer.bind(self.xp, self.ops, p, g)

    def _draw(self, seed):
        rng = np.random.default_rng(seed)
        state = {}
        for slot_keys, layer in zip(self._keys_by_layer(), self.layers):
            for name, value in layer.init_params(rng).items():
                state[slot_keys[name]] = value.astype(self.dtype)
        return state

    def _keys_by_layer(self):
        keys = [{} for _ in self.layers]
        for key, i, name, *_ in self.slots:
            keys[i][name] = key
        return keys

    @property
    def n_params(self):
        return int(self.params.size)

    @property
    def eval_rows(self):
        """Rows per evaluation forward: the smallest any layer asks for."""
        return min(layer.max_eval_rows for layer in self.layers)

    def param_view(self, slot):
        """The array a layer holds for ``slot`` (an entry of :attr:`slots`)."""
        return getattr(self.layers[slot[1]], slot[2])

    def forward(self, x, train=False, seed=(), rows=None):
        """Logits of ``x`` (N, n_in), of the model's dtype on its device.

        ``train=True``: dropout draws masks from the step key ``seed`` (a tuple of ints, the
        same tuple gives the same masks) and the logits returned are the last layer's
        buffer, overwritten by the next training forward. ``train=False``: a new array.
        ``rows = (lo, total)``: ``x`` is rows ``lo...`` of a batch of ``total`` (one rank's
        slice in data-parallel training): the masks are those rows of the whole batch's.
        """
        if (getattr(x, "ndim", 0) != 2 or x.shape[1] != self.n_in or x.dtype != self.dtype
                or not x.flags.c_contiguous):
            raise ValueError(f"model input must be a C-contiguous {self.dtype} array of shape "
                             f"(N, {self.n_in}), got {getattr(x, 'dtype', type(x).__name__)} "
                             f"{tuple(getattr(x, 'shape', ()))}")
        rows = rows or (0, x.shape[0])
        for i, layer in enumerate(self.layers):
            x = layer.forward(x, train, (_layer_seed(seed, i), rows) if layer.draws else None)
        return x if train else x.copy()

    def backward(self, gy, sink=None):
        """Backpropagate ``gy`` (dloss/dlogits; consumed) through the last training forward.
        Weight gradients go to ``sink`` (see :mod:`.layers`; default: into ``grads``), the
        rest of ``grads`` is filled."""
        sink = sink or self.sink
        first = self.first_trained
        for k in range(len(self.layers) - 1, first - 1, -1):
            gy = self.layers[k].backward(gy, need_gx=k > first, sink=sink)


    def state_dict(self):
        """Host (NumPy) copies of every parameter, keyed ``"<entry>.<name>"``."""
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
        return {"n_in": self.n_in, "layers": [e for layer in self.layers for e in layer.spec()]}


def _layer_seed(key, index):
    """An integer seed for the drawing layer ``index`` under the step key ``key``."""
    return int(np.random.SeedSequence((*key, index)).generate_state(1, np.uint64)[0])
