"""Data augmentation on the device, written once against ``xp``: each gathered training
batch is warped image by image before the forward pass, never at evaluation.

One affine map per image composes a random rotation, shear, scale and translation; with
``elastic`` a smooth random displacement field (a 4 x 4 grid of Gaussian offsets,
``elastic`` pixels in standard deviation, interpolated bilinearly over the image) is added.
The warp resamples bilinearly with zeros outside (:func:`xptrain.kernels.affine_warp`).

The transforms are drawn on the host from the step's seed key (a resumed run draws the same
ones; a CPU and a GPU run too), for the whole global batch, so each data-parallel rank warps
its rows of the batch as one rank would. Per step that is one small upload: 6 numbers per
image (and 32 with ``elastic``).

What suits which data: the defaults (2 px, 12 degrees, 10 % scale, 8 degrees shear) suit
centred handwritten digits and letters, and garments mildly. Mirror images are never drawn
(they change a digit's class); large rotations confuse 6 with 9 and elastic distortion
with large ``elastic`` turns 1 into 7; on data whose classes depend on orientation, set
``rotate`` and ``shear`` to 0.
"""

import math

import numpy as np

DEFAULTS = {"translate": 2.0, "rotate": 12.0, "scale": 0.1, "shear": 8.0, "elastic": 0.0}
GRID = 4  # elastic displacement nodes per side
_STREAM = 0x617567  # keeps these draws apart from dropout's


class Augment:
    """Random warps of (N, C*h*w) batches of ``image_shape`` (h, w) images."""

    def __init__(self, xp, ops, image_shape, translate, rotate, scale, shear, elastic):
        self.xp, self.ops = xp, ops
        self.h, self.w = (int(s) for s in image_shape[-2:])
        self.translate, self.rotate, self.scale = float(translate), float(rotate), float(scale)
        self.shear, self.elastic = float(shear), float(elastic)
        self._out = {}
        self._spread = xp.asarray(spread_matrix(self.h, self.w)) if self.elastic else None

    @classmethod
    def from_config(cls, config, xp, ops, image_shape):
        """The augmentation ``config`` asks for, or None when it is off."""
        if not config.augment:
            return None
        return cls(xp, ops, image_shape, config.translate, config.rotate, config.scale,
                   config.shear, config.elastic)

    def draw(self, key, total):
        """Host draws for a batch of ``total``: theta (total, 6) and the elastic grid
        offsets (total, 2, GRID*GRID) or None."""
        rng = np.random.default_rng(np.random.SeedSequence([*key, _STREAM]))
        u = rng.uniform(-1.0, 1.0, (total, 5))
        angle, shear = np.radians(self.rotate * u[:, 0]), np.radians(self.shear * u[:, 1])
        zoom = np.exp(math.log1p(self.scale) * u[:, 2])  # symmetric in log scale
        cos, sin, tan = np.cos(angle) / zoom, np.sin(angle) / zoom, np.tan(shear)
        # the map from output to input: rotation after shear, both over the zoom
        theta = np.stack([cos, cos * tan - sin, self.translate * u[:, 3],
                          sin, sin * tan + cos, self.translate * u[:, 4]], axis=1)
        grid = None
        if self.elastic:
            grid = rng.normal(0.0, self.elastic, (total, 2, GRID * GRID))
        return theta.astype(np.float32), grid

    def __call__(self, xb, key, rows=None):
        """The batch ``xb`` warped into this object's buffer; ``rows`` = (lo, total): ``xb``
        holds rows lo... of a global batch of ``total``."""
        n = xb.shape[0]
        lo, total = rows or (0, n)
        theta, grid = self.draw(key, total)
        xp = self.xp
        theta = xp.asarray(theta[lo:lo + n])
        flow = None
        if grid is not None:
            coarse = xp.asarray(grid[lo:lo + n].astype(xb.dtype))
            flow = (coarse.reshape(n * 2, -1) @ self._spread).reshape(n, 2, -1)
        out = self._out.get(xb.shape)
        if out is None:
            out = self._out[xb.shape] = xp.empty(xb.shape, xb.dtype)
        self.ops.affine_warp(xb, theta, flow, self.h, self.w, out)
        return out


def spread_matrix(h, w, nodes=GRID):
    """(nodes*nodes, h*w) float32: the bilinear weights of a nodes x nodes grid spanning the
    image at every pixel (grid offsets @ it = a smooth per-pixel field)."""
    def axis(size):
        pos = np.linspace(0, nodes - 1, size)
        lo = np.minimum(np.floor(pos).astype(int), nodes - 2)
        frac = pos - lo
        m = np.zeros((nodes, size))
        m[lo, np.arange(size)] = 1 - frac
        m[lo + 1, np.arange(size)] += frac
        return m

    ry, rx = axis(h), axis(w)
    return np.einsum("ai,bj->abij", ry, rx).reshape(nodes * nodes, h * w).astype(np.float32)
