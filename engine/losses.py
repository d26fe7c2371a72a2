"""Softmax cross-entropy from integer labels (no one-hot matrix).

The one place the loss and its gradient are computed: :func:`kernels.softmax_cross_entropy`,
fused or reference by ``kernels.set_mode``.
"""

import kernels


class SoftmaxCrossEntropy:
    """Mean loss and dloss/dlogits, into buffers reused across steps of the same shape."""

    def __init__(self):
        self._buffers = {}

    def __call__(self, logits, labels):
        """Return ``(loss, dlogits)``: a 0-d device array and an (N, C) array.

        Labels were range-checked once at load time, so no per-step check (a GPU sync).
        """
        key = logits.shape
        if key not in self._buffers:
            xp = kernels.get_array_module(logits)
            self._buffers[key] = (xp.empty(key, logits.dtype), xp.empty(key[0], logits.dtype))
        gx, rows = self._buffers[key]
        return kernels.softmax_cross_entropy(logits, labels, out=gx, row_loss=rows, check=False)


def summed_loss(logits, labels):
    """The loss summed (not averaged) over one chunk, as a device 0-d array."""
    loss, _ = kernels.softmax_cross_entropy(logits, labels, check=False)
    return loss * logits.dtype.type(logits.shape[0])
