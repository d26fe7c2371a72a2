"""Winograd F(2x2, 3x3) for a 3 x 3, stride-1 :class:`~.conv.Conv2D` (see
:mod:`xptrain.kernels.winograd` for the algorithm).

Forward: U = G g G^T (a 16 x 9 matrix times the weights), V = B^T d B of every tile
(``ops.winograd_input``), the 16 products M[k] = V[k] @ U[k] in one batched matmul, and the
output transform (``ops.winograd_output``). Backward is the adjoint of each step: dM
(``ops.winograd_output_adjoint``), dV = dM U^T and gx (``ops.winograd_input_adjoint``),
dU = V^T dM and gW = G^T dU G. 16 * C * F multiplies per 2 x 2 tile where im2col's product
does 36 * C * F.

A layer takes this path where its ops have the transforms' own kernels (the CPU twins) and
it has at least :data:`MIN_CHANNELS` input channels: below, the transforms cost more than
the products save (measured, docs/kernels.md). Its weight gradient is not one product, so
plain SGD does not fold the step into it (:class:`xptrain.optim.FoldedSGD`).
"""

from .kernels.winograd import filter_adjoint, filter_transform

MIN_CHANNELS = 16
# Images per pass: one chunk's transformed tiles (16 x 4 values per output pixel) stay in
# the cache between the product and the transform that reads them (conv 32 -> 64 channels
# on 14 x 14 at batch 128, forward: 8.0 ms whole, 5.4 ms by 32 images, 5.5 by 16, 6.5 by 8).
CHUNK = 32


def suits(layer, ops):
    """Whether Conv2D ``layer`` computes with Winograd under ``ops``."""
    return (layer.k == 3 and layer.stride == 1 and layer.c_in >= MIN_CHANNELS
            and "winograd_input" in ops.own)


def _chunks(n):
    return [(s, min(s + CHUNK, n)) for s in range(0, n, CHUNK)]


def forward(layer, x, pooled=False):
    """The convolution of ``x`` (N, H, W, C) without bias: (N, OH, OW, F), a buffer of
    ``layer``'s; keeps each chunk's transformed input for :func:`backward`. ``pooled``:
    its 2 x 2, stride-2 max pooling instead (N, OH // 2, OW // 2, F), straight from the
    output transform (each window is one tile), the maxima kept in ``layer.arg``."""
    xp, ops = layer.xp, layer.ops
    n, h, w, _ = x.shape
    oh, ow = h + 2 * layer.pad - 2, w + 2 * layer.pad - 2
    per_image = (oh + 1) // 2 * ((ow + 1) // 2)  # tiles
    U = layer.buffer("U", (16, layer.c_in, layer.c_out), x.dtype)
    filter_transform(layer.W, U)
    if pooled:
        shape = (n, oh // 2, ow // 2, layer.c_out)
        y, layer.arg = layer.buffer("y", shape, x.dtype), layer.buffer("arg", shape, "uint8")
    else:
        y = layer.buffer("y", (n, oh, ow, layer.c_out), x.dtype)
    layer.V = []
    for i, (lo, hi) in enumerate(_chunks(n)):
        t = (hi - lo) * per_image
        V = layer.buffer(("V", i), (16, t, layer.c_in), x.dtype)
        ops.winograd_input(x[lo:hi], layer.pad, V)
        M = xp.matmul(V, U, out=layer.buffer("M", (16, t, layer.c_out), x.dtype))
        if pooled:
            ops.winograd_output_pool(M, oh, ow, y[lo:hi], layer.arg[lo:hi])
        else:
            ops.winograd_output(M, y[lo:hi])
        layer.V.append(V)
    layer.U, layer.x_shape, layer.out_hw = U, x.shape, (oh, ow)
    return y


def backward(layer, g, need_gx, pooled=False):
    """gx (if ``need_gx``) from the gradient ``g`` (N, OH, OW, F) at the convolution's
    output (``pooled``: at the pooling's output), and the weight gradient into
    ``layer.gW``."""
    xp, ops, U = layer.xp, layer.ops, layer.U
    gx = layer.buffer("gx", layer.x_shape, g.dtype) if need_gx else None
    dUt = layer.buffer("dUt", (16, layer.c_out, layer.c_in), g.dtype)  # dU transposed:
    for i, (lo, hi) in enumerate(_chunks(g.shape[0])):  # dM^T V beat V^T dM, 3.2 / 4.0 ms
        V = layer.V[i]
        dM = layer.buffer("dM", (16, V.shape[1], layer.c_out), g.dtype)
        if pooled:
            ops.winograd_output_pool_adjoint(g[lo:hi], layer.arg[lo:hi], *layer.out_hw, dM)
        else:
            ops.winograd_output_adjoint(g[lo:hi], dM)
        if need_gx:
            dV = xp.matmul(dM, U.transpose(0, 2, 1), out=layer.buffer("dV", V.shape, g.dtype))
            ops.winograd_input_adjoint(dV, layer.pad, gx[lo:hi])
        if i == 0:
            xp.matmul(dM.transpose(0, 2, 1), V, out=dUt)
        else:
            dUt += xp.matmul(dM.transpose(0, 2, 1), V,
                             out=layer.buffer("dUt_part", dUt.shape, g.dtype))
    filter_adjoint(xp.ascontiguousarray(dUt.transpose(0, 2, 1)), layer.gW)
    return gx
