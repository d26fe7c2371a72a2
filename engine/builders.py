"""Model builders: an MLP by widths, a CNN from a spec string, a model from a checkpoint.

Every path goes through one list of spec *entries* (``{"type": "Linear", ...}``,
``{"type": "ReLU"}``, ...), the format checkpoints store, and one :func:`assemble` that
turns it into layers. :func:`assemble` is where the fusions are chosen: a Linear or
Conv2D followed by its activation becomes one fused layer (:class:`~.layers.Dense`,
:class:`~.conv.ConvActivation`), a Conv2D followed by a max pooling (and its activation)
one :class:`~.conv.ConvPool`, and with ``window=True`` a first Linear skips the input
columns that are zero in the whole batch (:class:`~.layers.ColumnWindow`).
"""

import re

import numpy as np

from .conv import Conv2D, ConvActivation, ConvPool, Flatten, MaxPool2D, Reshape, out_size
from .errors import ConfigError
from .init import init_for
from .layers import (
    ACTIVATION_NAMES,
    Activation,
    Dense,
    Dropout,
    Linear,
    WindowedDense,
    WindowedLinear,
)
from .model import Sequential

CNN = "conv32-pool-conv64-pool-fc128"
_KIND_OF = {name: kind for kind, name in ACTIVATION_NAMES.items()}  # "ReLU" -> "relu"
_TOKEN = re.compile(r"^(conv(\d+)(?:k(\d+))?(?:s(\d+))?(?:p(\d+))?|pool(\d+)?(?:s(\d+))?"
                    r"|fc(\d+)|drop(0?\.\d+))$")


def _check_activation(name):
    if name not in ACTIVATION_NAMES:
        raise ConfigError(f"activation must be one of {', '.join(ACTIVATION_NAMES)}, "
                          f"got {name!r}")
    return {"type": ACTIVATION_NAMES[name]}


def _linear(n_in, n_out, init):
    return {"type": "Linear", "n_in": int(n_in), "n_out": int(n_out), "init": init}


def mlp_entries(n_in, hidden, n_classes, activation="relu", dropout=0.0):
    """Linear, activation[, Dropout] for each hidden width, then a Linear output."""
    act = _check_activation(activation)
    entries, width = [], n_in
    for h in hidden:
        if int(h) < 1:
            raise ConfigError(f"hidden sizes must be positive integers, got {h!r}")
        entries += [_linear(width, h, init_for(activation)), dict(act)]
        if dropout:
            entries.append({"type": "Dropout", "p": float(dropout)})
        width = int(h)
    return entries + [_linear(width, n_classes, "xavier")]


def parse_entries(text, image_shape, n_classes, activation="relu"):
    """Entries from a spec string such as ``conv32-pool-conv64-pool-fc128``.

    Tokens (joined by ``-`` or ``,``): ``convF[kK][sS][pP]`` (F filters, K x K kernel,
    default 3, stride S default 1, padding P default K // 2) followed by the activation;
    ``pool[K][sS]`` (max pool, default 2 x 2); ``fcN`` (Linear + activation); ``dropP``.
    The output Linear to ``n_classes`` is appended.
    """
    act = _check_activation(activation)
    (h, w), c, flat = image_shape, 1, None
    entries = [{"type": "Reshape", "shape": [h, w, 1]}]
    for token in re.split(r"[-,]", text.strip().lower()):
        m = _TOKEN.match(token)
        if not m:
            raise ConfigError(f"model spec {text!r}: cannot read {token!r} (expected convF"
                              f"[kK][sS][pP], pool[K][sS], fcN or dropP)")
        if m.group(2):
            if flat is not None:
                raise ConfigError(f"model spec {text!r}: conv after fc")
            f, k = int(m.group(2)), int(m.group(3) or 3)
            stride, pad = int(m.group(4) or 1), int(m.group(5) or k // 2)
            entries += [{"type": "Conv2D", "c_in": c, "c_out": f, "k": k, "stride": stride,
                         "pad": pad, "init": init_for(activation)}, dict(act)]
            h, w, c = out_size(h, k, stride, pad), out_size(w, k, stride, pad), f
        elif token.startswith("pool"):
            k = int(m.group(6) or 2)
            stride = int(m.group(7) or k)
            pool = {"type": "MaxPool2D", "k": k, "stride": stride}
            if entries[-1] == act and entries[-2]["type"] == "Conv2D":
                # Pool before the activation: max commutes with a non-decreasing function,
                # so the result and the gradient are the same and the activation runs on a
                # k*k times smaller tensor (about 7% of a CNN step, measured).
                entries.insert(len(entries) - 1, pool)
            else:
                entries.append(pool)
            h, w = out_size(h, k, stride, 0), out_size(w, k, stride, 0)
        elif m.group(8):
            if flat is None:
                entries.append({"type": "Flatten"})
                flat = h * w * c
            entries += [_linear(flat, m.group(8), init_for(activation)), dict(act)]
            flat = int(m.group(8))
        else:
            entries.append({"type": "Dropout", "p": float(m.group(9))})
        if min(h, w) < 1:
            raise ConfigError(f"model spec {text!r}: the image shrinks to nothing at "
                              f"{token!r}")
    if flat is None:
        entries.append({"type": "Flatten"})
        flat = h * w * c
    return entries + [_linear(flat, n_classes, "xavier")]


def assemble(entries, window=False):
    """Layers for spec ``entries``, fused where a Linear or Conv2D is followed by its
    activation; ``window``: a first Linear skips all-zero input columns."""
    layers, i = [], 0
    while i < len(entries):
        entry = dict(entries[i])
        kind = entry.pop("type", None)
        nxt = entries[i + 1]["type"] if i + 1 < len(entries) else None
        act = _KIND_OF.get(nxt)
        first = not layers
        if kind == "Linear":
            cls = ((WindowedDense if window and first else Dense) if act
                   else (WindowedLinear if window and first else Linear))
            layers.append(cls(**entry, activation=act) if act else cls(**entry))
        elif kind == "Conv2D" and nxt == "MaxPool2D" and _tiles(entries[i + 1]):
            pool = entries[i + 1]
            act = _KIND_OF.get(entries[i + 2]["type"]) if i + 2 < len(entries) else None
            layers.append(ConvPool(**entry, pool=pool["k"], pool_stride=pool["stride"],
                                   activation=act))
            i += 3 if act else 2
            continue
        elif kind == "Conv2D":
            layers.append(ConvActivation(**entry, activation=act) if act else Conv2D(**entry))
        elif kind in _KIND_OF:
            layers.append(Activation(_KIND_OF[kind]))
        elif kind in _PLAIN:
            layers.append(_PLAIN[kind](**entry))
        else:
            raise ValueError(f"unknown layer type {kind!r} in model spec")
        i += 2 if act and kind in ("Linear", "Conv2D") else 1
    return layers


def _tiles(pool):
    """A pooling entry whose windows tile (stride = size), as the builder writes them."""
    return set(pool) == {"type", "k", "stride"} and pool["k"] == pool["stride"]


_PLAIN = {"Dropout": Dropout, "MaxPool2D": MaxPool2D, "Flatten": Flatten, "Reshape": Reshape}


def build_mlp(n_in, hidden, n_classes, activation="relu", dropout=0.0, xp=np, seed=0,
              dtype=np.float32, ops=None, window=False):
    entries = mlp_entries(n_in, hidden, n_classes, activation, dropout)
    return Sequential(assemble(entries, window), n_in, xp, seed, dtype, ops)


def model_entries(model, n_in, image_shape, hidden, n_classes, activation, dropout):
    """``model``: "mlp" (sized by ``hidden``), "cnn" (conv32-pool-conv64-pool-fc128) or a
    spec string for :func:`parse_entries`."""
    if model == "mlp":
        return mlp_entries(n_in, hidden, n_classes, activation, dropout)
    return parse_entries(CNN if model == "cnn" else model, image_shape, n_classes, activation)


def from_spec(spec, xp=np, seed=0, ops=None, window=False, dtype=np.float32):
    """Rebuild a model from :meth:`Sequential.spec` (as stored in checkpoints)."""
    try:
        return Sequential(assemble(spec["layers"], window), spec["n_in"], xp, seed, dtype, ops)
    except TypeError as exc:  # a missing or unexpected field in an entry
        raise ValueError(f"model spec entry does not fit its layer type ({exc})") from None
