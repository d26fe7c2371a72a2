"""Winograd F(2x2, 3x3): the reference transforms against direct convolution loops, the
Numba twins against the reference (odd sizes, paddings, channel counts, extreme values),
the adjoint identities backward relies on, the Conv2D and ConvPool layers that use it
(float64 finite differences, equal to the im2col path) and plain SGD's fold around it."""

import numpy as np
import pytest
from kernel_cases import TOL, case_seed
from test_conv import slow_conv
from test_gradcheck import check_layer, check_model_gradient
from xptrain import kernels
from xptrain.builders import assemble, parse_entries
from xptrain.conv import Conv2D
from xptrain.kernels import winograd as wg
from xptrain.model import Sequential

CPU_IMPLS = kernels.available("cpu")
# (N, H, W, C), pad, F: even and odd outputs, pad 0 (output smaller than the input), pad 2
# (larger), one-pixel and one-row outputs, 1 and 16 channels
SHAPES = [((2, 6, 6, 3), 1, 5), ((3, 7, 5, 2), 1, 4), ((1, 5, 8, 16), 0, 3),
          ((2, 4, 3, 1), 2, 2), ((1, 3, 3, 4), 0, 6), ((2, 3, 9, 5), 0, 16)]


def _operands(shape, pad, f, dtype, seed, regime="normal"):
    rng = np.random.default_rng(seed)
    n, h, w, c = shape
    oh, ow = h + 2 * pad - 2, w + 2 * pad - 2
    th, tw = wg.tiles(oh, ow)
    scale = 1e15 if regime == "huge" else 1.0
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    M = (rng.standard_normal((16, n * th * tw, f)) * scale).astype(dtype)
    gy = (rng.standard_normal((n, oh, ow, f)) * scale).astype(dtype)
    dV = (rng.standard_normal((16, n * th * tw, c)) * scale).astype(dtype)
    return x, M, gy, dV, (oh, ow)


@pytest.mark.parametrize("shape,pad,f", SHAPES)
def test_reference_is_the_convolution(shape, pad, f):
    """U, V, the 16 products and the output transform give the direct convolution; each
    adjoint satisfies <A x, y> = <x, A^T y>."""
    x, M, gy, dV, (oh, ow) = _operands(shape, pad, f, np.float64, case_seed(shape, pad, f))
    W = np.random.default_rng(1).standard_normal((9 * shape[3], f))
    U = np.empty((16, shape[3], f))
    wg.filter_transform(W, U)
    V = np.empty(dV.shape)
    wg.winograd_input(x, pad, V)
    y = np.empty(gy.shape)
    wg.winograd_output(V @ U, y)
    np.testing.assert_allclose(y, slow_conv(x, W, np.zeros(f), 3, 1, pad), rtol=1e-12,
                               atol=1e-12)
    dM, gx, gW = np.empty(M.shape), np.empty(x.shape), np.empty(W.shape)
    wg.winograd_output_adjoint(gy, dM)
    wg.winograd_input_adjoint(dV, pad, gx)
    dU = np.random.default_rng(2).standard_normal(U.shape)
    wg.filter_adjoint(dU, gW)
    wg.winograd_output(M, y)
    assert np.vdot(y, gy) == pytest.approx(np.vdot(M, dM), rel=1e-12)
    assert np.vdot(V, dV) == pytest.approx(np.vdot(x, gx), rel=1e-12)
    assert np.vdot(U, dU) == pytest.approx(np.vdot(W, gW), rel=1e-12)


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("regime", ["normal", "huge"])
@pytest.mark.parametrize("shape,pad,f", SHAPES)
def test_twins_equal_the_reference(impl, dtype, regime, shape, pad, f):
    x, M, gy, dV, (oh, ow) = _operands(shape, pad, f, dtype,
                                       case_seed(impl, str(dtype), regime, shape, pad), regime)
    outs = []
    for name in (impl, "reference"):
        ops = kernels.resolve("cpu", name)
        V, y = np.full(dV.shape, np.nan, dtype), np.full(gy.shape, np.nan, dtype)
        dM, gx = np.full(M.shape, np.nan, dtype), np.full(x.shape, np.nan, dtype)
        ops.winograd_input(x, pad, V)
        ops.winograd_output(M, y)
        ops.winograd_output_adjoint(gy, dM)
        ops.winograd_input_adjoint(dV, pad, gx)
        outs.append((V, y, dM, gx))
    scale = 1e15 if regime == "huge" else 1.0
    for got, want in zip(*outs):
        np.testing.assert_allclose(got, want, rtol=TOL[dtype]["rtol"] * 4,
                                   atol=TOL[dtype]["atol"] * 8 * scale)


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("oh,ow", [(4, 4), (5, 7), (2, 3), (14, 14)])
def test_pooled_output_twins(impl, oh, ow):
    """The output transform with its 2 x 2 pooling: the maxima and their positions, NaN
    winning as in max pooling, and the adjoint routing each gradient to its maximum."""
    rng = np.random.default_rng(case_seed(impl, oh, ow))
    n, f = 2, 5
    th, tw = wg.tiles(oh, ow)
    M = rng.standard_normal((16, n * th * tw, f)).astype(np.float32)
    M[:, 0, 0] = 0.0  # a tile of equal outputs: the first position wins
    M[0, 0, 1] = np.nan  # NaN in every output of tile 0, channel 1
    shape = (n, oh // 2, ow // 2, f)
    outs = []
    for name in (impl, "reference"):
        ops = kernels.resolve("cpu", name)
        y, arg = np.empty(shape, np.float32), np.empty(shape, np.uint8)
        ops.winograd_output_pool(M, oh, ow, y, arg)
        outs.append((y, arg))
    full = np.empty((n, oh, ow, f), np.float32)
    wg.winograd_output(M, full)
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-5)
    margin = np.sort(full[:, :oh // 2 * 2, :ow // 2 * 2].reshape(
        n, oh // 2, 2, ow // 2, 2, f).transpose(0, 1, 3, 5, 2, 4).reshape(*shape, 4), -1)
    clear = (margin[..., -1] - margin[..., -2] > 1e-4) | np.isnan(margin).any(-1)
    np.testing.assert_array_equal(outs[0][1][clear], outs[1][1][clear])
    assert outs[0][1][0, 0, 0, 0] == 0 and np.isnan(outs[0][0][0, 0, 0, 1])
    gy = rng.standard_normal(shape).astype(np.float32)
    got, want = np.empty(M.shape, np.float32), np.empty(M.shape, np.float32)
    kernels.resolve("cpu", impl).winograd_output_pool_adjoint(gy, outs[1][1], oh, ow, got)
    kernels.resolve("cpu", "reference").winograd_output_pool_adjoint(gy, outs[1][1], oh, ow,
                                                                      want)
    np.testing.assert_allclose(got, want, **TOL[np.float32])


def test_checked_ops_refuse_wrong_shapes():
    x = np.zeros((2, 6, 6, 3), np.float32)
    with pytest.raises(ValueError, match=r"V must have shape \(16, 18, 3\)"):
        kernels.winograd_input(x, 1, np.zeros((16, 17, 3), np.float32))
    with pytest.raises(ValueError, match="does not fit 1x6"):
        kernels.winograd_input(np.zeros((2, 1, 6, 3), np.float32), 0)
    with pytest.raises(ValueError, match=r"M must be .* shape \(16, 18, 4\)"):
        kernels.winograd_output(np.zeros((16, 18, 5), np.float32),
                                np.zeros((2, 6, 6, 4), np.float32))
    with pytest.raises(ValueError, match=r"dV must be .* shape \(16, 18, 3\)"):
        kernels.winograd_input_adjoint(np.zeros((16, 18, 2), np.float32), 1, x)
    with pytest.raises(ValueError, match="does not fit a 1x6 output"):
        kernels.winograd_output_pool(np.zeros((16, 6, 2), np.float32), 1, 6,
                                     np.zeros((2, 0, 3, 2), np.float32),
                                     np.zeros((2, 0, 3, 2), np.uint8))
    with pytest.raises(ValueError, match=r"arg must be .* uint8 array"):
        kernels.winograd_output_pool_adjoint(np.zeros((2, 3, 3, 2), np.float32),
                                             np.zeros((2, 3, 3, 2), np.int64), 6, 6)
    with pytest.raises(TypeError):
        kernels.winograd_output_adjoint([[1.0]])


@pytest.mark.parametrize("pad,shape", [(1, (2, 5, 4, 16)), (0, (1, 6, 5, 16)),
                                       (2, (2, 3, 3, 16))])
def test_conv_layer_on_winograd(pad, shape):
    """With 16 input channels the fused CPU ops take the Winograd path; gradients (input
    and parameters) pass float64 finite differences and the output is the im2col path's."""
    layer = Conv2D(16, 3, 3, 1, pad)
    check_layer(layer, np.random.default_rng(1).standard_normal(shape))
    assert layer.winograd and not layer.folds
    plain = Conv2D(16, 3, 3, 1, pad)
    Sequential([plain], 0, np, dtype=np.float64, ops=kernels.resolve("cpu", "reference"))
    assert not plain.winograd
    plain.W[...], plain.b[...] = layer.W, layer.b
    x = np.random.default_rng(2).standard_normal(shape)
    np.testing.assert_allclose(layer.forward(x), plain.forward(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("image", [(8, 8), (7, 9)])
def test_pooled_winograd_model_gradient(image):
    """conv-pool-conv16-pool (the second conv on Winograd, pooled in its transform; 7 x 9
    leaves a row and a column of tiles unpooled) and conv16-conv16 (Winograd unpooled):
    whole-model float64 finite differences, and the same loss as the reference ops."""
    for spec in ("conv16-pool-conv4-pool-fc5", "conv16-conv3k3p0-fc4"):
        entries = parse_entries(spec, image, 3, "tanh")
        n_in = image[0] * image[1]
        rng = np.random.default_rng(case_seed(spec, image))
        x, t = rng.standard_normal((3, n_in)), rng.integers(0, 3, 3)
        losses = []
        for mode in ("fused", "reference"):
            model = Sequential(assemble(entries), n_in, np, seed=4, dtype=np.float64,
                               ops=kernels.resolve("cpu", mode))
            assert model.layers[2].winograd is (mode == "fused")  # reference ops: im2col
            if spec.endswith("pool-fc5"):
                assert model.layers[2].winograd_pools is (mode == "fused")
            check_model_gradient(model, x, t, np.random.default_rng(9))
            losses.append(model.forward(x))
        np.testing.assert_allclose(losses[0], losses[1], rtol=1e-10, atol=1e-12)


def test_sgd_does_not_fold_a_winograd_weight():
    """Plain SGD folds the step into the first weight's gradient product where it can; a
    Winograd conv's gradient is no such product, so a first Winograd conv is updated by
    the separate step: one step equals the unfolded optimizer's."""
    from xptrain.losses import SoftmaxCrossEntropy
    from xptrain.optim import make_optimizer

    entries = [{"type": "Reshape", "shape": [6, 6, 16]},
               {"type": "Conv2D", "c_in": 16, "c_out": 128, "k": 3, "stride": 1, "pad": 1,
                "init": "he"}, {"type": "ReLU"}, {"type": "Flatten"},
               {"type": "Linear", "n_in": 4608, "n_out": 3, "init": "xavier"}]
    rng = np.random.default_rng(3)
    x, t = rng.standard_normal((4, 576)).astype(np.float32), rng.integers(0, 3, 4)
    params = []
    for fold in (True, False):
        model = Sequential(assemble(entries), 576, np, seed=2)
        assert model.layers[1].winograd
        opt = make_optimizer("sgd", model, 0.1, momentum=0.0, fold=fold)
        _, gy = SoftmaxCrossEntropy(np, model.ops)(model.forward(x, train=True), t)
        opt.backward_step(gy, 0.1)
        params.append(model.params.copy())
    assert not np.array_equal(params[0], Sequential(assemble(entries), 576, np, seed=2).params)
    np.testing.assert_allclose(params[0], params[1], rtol=1e-6, atol=1e-7)
