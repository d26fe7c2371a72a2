"""Softmax cross-entropy from integer labels (no one-hot matrix), with the model's ops."""

from .kernels.reference import mean_loss


class SoftmaxCrossEntropy:
    """Mean loss and dloss/dlogits, into buffers reused across steps of the same shape.

    Labels were range-checked once at load time, so there is no per-step check (a GPU
    sync); a label out of range gives a NaN loss, never an out-of-bounds write.
    """

    def __init__(self, xp, ops):
        self.xp, self.ops = xp, ops
        self._buffers = {}

    def __call__(self, logits, labels):
        """Return ``(loss, dlogits)``: a 0-d device array and this object's (N, C) buffer,
        overwritten by the next call of the same shape. ``logits`` (N, C) C-contiguous
        float, ``labels`` (N,) C-contiguous integers, on one device."""
        key = (logits.shape, logits.dtype)
        if key not in self._buffers:
            self._buffers[key] = (self.xp.empty(logits.shape, logits.dtype),
                                  self.xp.empty(logits.shape[0], logits.dtype))
        gx, rows = self._buffers[key]
        total = self.ops.softmax_cross_entropy_rows(logits, labels, rows, gx)
        return mean_loss(total, rows), gx

    def summed(self, logits, labels):
        """The loss summed over the rows of ``logits`` (a 0-d device array, new buffers)."""
        rows = self.xp.empty(logits.shape[0], logits.dtype)
        gx = self.xp.empty_like(logits)
        total = self.ops.softmax_cross_entropy_rows(logits, labels, rows, gx)
        return mean_loss(total, rows) * logits.dtype.type(logits.shape[0])
