"""Weight initialisation drawn on the host from a seeded generator.

Drawing on the host (NumPy) means a CPU and a GPU run with the same seed start from
bit-identical float32 weights; the arrays are uploaded afterwards.
"""

import numpy as np

INITS = ("xavier", "he")


def init_for(activation):
    """He for ReLU, Xavier (Glorot) for the saturating activations and the output layer."""
    return "he" if activation == "relu" else "xavier"


def draw_weight(rng, n_in, n_out, scheme, dtype=np.float32):
    """A (n_in, n_out) weight matrix: Xavier-uniform or He-normal, in ``dtype``."""
    if scheme == "xavier":
        limit = np.sqrt(6.0 / (n_in + n_out))
        w = rng.uniform(-limit, limit, size=(n_in, n_out))
    elif scheme == "he":
        w = rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)
    else:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {scheme!r}")
    return w.astype(dtype)
