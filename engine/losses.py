"""Softmax cross-entropy from integer labels (no one-hot matrix), with the model's ops, and
optionally label smoothing.

Label smoothing ``eps`` trains against the target (1 - eps) onehot + eps / C. Its row loss
is the cross-entropy plus ``eps (z_y - mean_k z_k)`` and its gradient the fused kernel's plus
``eps (onehot - 1/C) / N``: two cheap corrections after the one fused pass. Evaluation
(:meth:`SoftmaxCrossEntropy.summed`) always reports the plain cross-entropy."""

from .kernels.reference import mean_loss


class SoftmaxCrossEntropy:
    """Mean loss and dloss/dlogits, into buffers reused across steps of the same shape.

    Labels were range-checked once at load time, so there is no per-step check (a GPU
    sync); a label out of range gives a NaN loss, never an out-of-bounds write.
    """

    def __init__(self, xp, ops, smoothing=0.0):
        self.xp, self.ops, self.smoothing = xp, ops, float(smoothing)
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
        if self.smoothing:
            total = self._smooth(logits, labels, rows, gx)
        return mean_loss(total, rows), gx

    def _smooth(self, logits, labels, rows, gx):
        xp, eps = self.xp, logits.dtype.type(self.smoothing)
        n, c = logits.shape
        picked = xp.arange(n), labels
        rows += eps * (logits[picked] - logits.mean(axis=1))
        gx[picked] += eps / logits.dtype.type(max(n, 1))
        gx -= eps / logits.dtype.type(max(n, 1) * c)
        return None  # the row losses changed: summed again from ``rows``

    def summed(self, logits, labels):
        """The loss summed over the rows of ``logits`` (a 0-d device array, new buffers)."""
        rows = self.xp.empty(logits.shape[0], logits.dtype)
        gx = self.xp.empty_like(logits)
        total = self.ops.softmax_cross_entropy_rows(logits, labels, rows, gx)
        return mean_loss(total, rows) * logits.dtype.type(logits.shape[0])
