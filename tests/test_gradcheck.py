"""Float64 finite-difference checks: every layer, the loss, and whole models over every
combination the builders produce (each activation, with and without dropout, one and
several hidden layers, MLP and CNN stacks, windowed first layers, reference and fused
kernels), with nonzero random parameters and dropout masks held fixed by the step seed."""

import itertools

import numpy as np
import pytest
from xptrain import kernels
from xptrain.builders import assemble, build_mlp, mlp_entries, parse_entries
from xptrain.layers import Activation, Dropout, Linear
from xptrain.losses import SoftmaxCrossEntropy
from xptrain.model import Sequential

TOLERANCE = 1e-6  # relative: max |analytic - numeric| / max |numeric|
KEY = (7, 0, 3)  # the step key the masks are drawn from: the same in every forward


def numerical_grad(f, x, h=1e-6):
    """Central differences of scalar f() with respect to array x (modified in place)."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = f()
        flat[i] = old - h
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return g


def relative_error(analytic, numeric):
    return float(np.max(np.abs(analytic - numeric)) / max(np.max(np.abs(numeric)), 1e-300))


def check_layer(layer, x, params=True, seed=0, mode="fused"):
    """d(sum(w * layer(x)))/dx and /dparams against finite differences."""
    rng = np.random.default_rng(seed)
    n_in = x.shape[1] if x.ndim == 2 else 0
    model = Sequential([layer], n_in, np, seed=seed, dtype=np.float64,
                       ops=kernels.resolve("cpu", mode))
    if model.n_params:
        model.params[...] = rng.standard_normal(model.n_params) * 0.5
    w = rng.standard_normal(layer.forward(x.copy(), True, 1).shape)

    def f():
        return float((layer.forward(x.copy(), True, 1) * w).sum())

    layer.forward(x.copy(), True, 1)
    gx = layer.backward(w.copy(), need_gx=True, sink=model.sink)
    assert relative_error(gx, numerical_grad(f, x)) < TOLERANCE
    if params and model.n_params:
        assert relative_error(model.grads, numerical_grad(f, model.params)) < TOLERANCE


def check_model_gradient(model, x, t, rng):
    """The whole model's parameter gradient of the mean loss against finite differences,
    from nonzero random parameters, with the dropout masks of one step key."""
    model.params[...] = rng.standard_normal(model.n_params) * 0.5
    loss_fn = SoftmaxCrossEntropy(np, model.ops)

    def f():
        return float(loss_fn(model.forward(x, train=True, seed=KEY), t)[0])

    _, gy = loss_fn(model.forward(x, train=True, seed=KEY), t)
    model.backward(gy.copy())
    error = relative_error(model.grads, numerical_grad(f, model.params))
    assert error < TOLERANCE, f"relative error {error:.2e}"
    return error


@pytest.mark.parametrize("shape", [(1, 3, 2), (5, 7, 4)])
def test_linear(shape):
    n, n_in, n_out = shape
    check_layer(Linear(n_in, n_out), np.random.default_rng(1).standard_normal((n, n_in)))


@pytest.mark.parametrize("mode", ["reference", "fused"])
@pytest.mark.parametrize("kind", ["sigmoid", "relu", "tanh"])
def test_activation_on_its_own(kind, mode):
    x = np.random.default_rng(2).standard_normal((4, 6)) * 3
    x[np.abs(x) < 1e-3] = 0.5  # keep ReLU's kink away from the difference stencil
    check_layer(Activation(kind), x, mode=mode)


def test_dropout_gradient_and_its_own_buffer():
    """The mask comes from the seed; the input is never written (the layer before may still
    read it in backward)."""
    layer = Dropout(0.4)
    x = np.random.default_rng(3).standard_normal((5, 8))
    Sequential([layer], 8, np, dtype=np.float64)
    x_before = x.copy()
    y = layer.forward(x, True, 11).copy()  # the layer reuses its output buffer
    np.testing.assert_array_equal(x, x_before)
    assert set(np.unique(layer.mask)) <= {0.0, 1 / 0.6} and 0 < (y == 0).sum() < y.size
    np.testing.assert_array_equal(layer.forward(x, True, 11), y)  # same seed, same mask
    assert not np.array_equal(layer.forward(x, True, 12), y)
    check_layer(layer, x, params=False)
    np.testing.assert_array_equal(layer.forward(x, train=False), x)


@pytest.mark.parametrize("impl", ["reference", "numba"])
def test_softmax_cross_entropy_gradient(impl):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 5)) * 4
    t = rng.integers(0, 5, 6)

    def f():
        return float(kernels.softmax_cross_entropy(x, t, impl=impl)[0])

    _, g = kernels.softmax_cross_entropy(x, t, impl=impl)
    assert relative_error(g, numerical_grad(f, x)) < TOLERANCE


def _mlp(activation, dropout, depth, window):
    hidden = (5,) if depth == "one" else (5, 4)
    return 6, mlp_entries(6, hidden, 3, activation, dropout), window


def _cnn(activation, dropout, depth, window):
    drop = "drop0.5-" if dropout else ""
    spec = (f"conv3k3s2p1-pool-{drop}fc5" if depth == "one"  # 8x8 -> 4x4 -> 2x2
            # 8x8, an overlapping pool to 6x6, 3x3 pooled to 1x1 (a row and column left
            # over), a conv on 1x1
            else f"conv3k3p1-pool3s1-{drop}conv4k3s2p1-pool-conv2k3p1-fc6-{drop}fc5")
    return 64, parse_entries(spec, (8, 8), 3, activation), False


MATRIX = list(itertools.product(["sigmoid", "relu", "tanh"], [0.0, 0.5], ["one", "several"],
                                ["mlp", "mlp-windowed", "cnn"], ["reference", "fused"]))


@pytest.mark.parametrize("activation,dropout,depth,stack,mode", MATRIX)
def test_whole_model_gradient(activation, dropout, depth, stack, mode):
    """The 6-5-4-3 MLP with dropout 0.5 after sigmoid or tanh is the case where the
    activation's derivative was once read from dropout's rescaled output (relative error
    0.44 and 5.4); every combination must be within 1e-6."""
    build = _cnn if stack == "cnn" else _mlp
    n_in, entries, window = build(activation, dropout, depth, stack == "mlp-windowed")
    model = Sequential(assemble(entries, window), n_in, np, seed=3, dtype=np.float64,
                       ops=kernels.resolve("cpu", mode))
    rng = np.random.default_rng(len(MATRIX) + MATRIX.index(
        (activation, dropout, depth, stack, mode)))
    x = rng.standard_normal((5, n_in))
    if window:
        x[:, :2] = 0  # zero columns at both borders: the window is [2, 5)
        x[:, -1] = 0
    check_model_gradient(model, x, rng.integers(0, 3, 5), rng)
    if dropout:
        assert any(type(layer).__name__ == "Dropout" for layer in model.layers)


def test_matrix_covers_the_fused_and_windowed_layer_types():
    seen = set()
    for activation, dropout, depth, stack, _ in MATRIX:
        build = _cnn if stack == "cnn" else _mlp
        _, entries, window = build(activation, dropout, depth, stack == "mlp-windowed")
        seen |= {type(layer).__name__ for layer in assemble(entries, window)}
    assert seen == {"Dense", "WindowedDense", "Linear", "Dropout", "ConvActivation",
                    "ConvPool", "MaxPool2D", "Activation", "Reshape", "Flatten", "Conv2D"}


@pytest.mark.parametrize("mode", ["reference", "fused"])
def test_conv_pool_without_an_activation(mode):
    """A spec of Conv2D then MaxPool2D with no activation between (written by hand): one
    ConvPool that adds the bias after pooling."""
    entries = [{"type": "Reshape", "shape": [7, 7, 2]},
               {"type": "Conv2D", "c_in": 2, "c_out": 3, "k": 3, "stride": 1, "pad": 1,
                "init": "he"}, {"type": "MaxPool2D", "k": 2, "stride": 2},
               {"type": "Flatten"}, {"type": "Linear", "n_in": 27, "n_out": 4,
                                     "init": "xavier"}]
    model = Sequential(assemble(entries), 98, np, seed=5, dtype=np.float64,
                       ops=kernels.resolve("cpu", mode))
    assert [type(layer).__name__ for layer in model.layers] == ["Reshape", "ConvPool",
                                                                "Flatten", "Linear"]
    assert model.spec()["layers"] == entries
    rng = np.random.default_rng(6)
    check_model_gradient(model, rng.standard_normal((3, 98)), rng.integers(0, 4, 3), rng)


def test_hand_worked_example():
    """A 2-2-2 network with sigmoid, worked by hand on paper.

    x = [1, 2], W1 = [[1, 0], [0, 1]] (so h = sigmoid([1, 2])), b1 = 0,
    W2 = [[1, -1], [0, 0]], b2 = 0 -> logits = [h1, -h1]; label 0.
    loss = log(1 + exp(-2 h1)); dloss/dlogit0 = p0 - 1 = -1 / (1 + exp(2 h1)).
    """
    model = build_mlp(2, (2,), 2, "sigmoid", dtype=np.float64)
    model.load_state_dict({"0.W": np.eye(2), "0.b": np.zeros(2),
                           "2.W": np.array([[1.0, -1.0], [0.0, 0.0]]), "2.b": np.zeros(2)})
    x = np.array([[1.0, 2.0]])
    h1 = 1 / (1 + np.exp(-1.0))
    loss, gy = SoftmaxCrossEntropy(np, model.ops)(model.forward(x, train=True), np.array([0]))
    assert float(loss) == pytest.approx(np.log1p(np.exp(-2 * h1)), rel=1e-12)
    d0 = -1 / (1 + np.exp(2 * h1))
    np.testing.assert_allclose(gy, [[d0, -d0]], rtol=1e-12)
    model.backward(gy)
    grads = {key: model.grads[s:e].reshape(shape) for key, _, _, shape, s, e in model.slots}
    h2 = 1 / (1 + np.exp(-2.0))
    np.testing.assert_allclose(grads["2.W"], [[h1 * d0, -h1 * d0], [h2 * d0, -h2 * d0]],
                               rtol=1e-12)
    np.testing.assert_allclose(grads["2.b"], [d0, -d0], rtol=1e-12)
    # back through W2 row 0 only (row 1 is zero): dh1 = 2 d0, then sigmoid'(1) = h1 (1 - h1)
    dz1 = 2 * d0 * h1 * (1 - h1)
    np.testing.assert_allclose(grads["0.W"], [[dz1, 0], [2 * dz1, 0]], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(grads["0.b"], [dz1, 0], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("mode", ["reference", "fused"])
@pytest.mark.parametrize("eps", [0.1, 0.35])
def test_label_smoothing_loss_and_gradient(mode, eps):
    """The smoothed loss equals -sum_k q_k log p_k with q = (1-eps) onehot + eps/C, and its
    gradient matches finite differences; evaluation's summed loss stays plain."""
    rng = np.random.default_rng(int(eps * 100) + len(mode))
    z, t = rng.standard_normal((6, 5)) * 2, rng.integers(0, 5, 6)
    loss_fn = SoftmaxCrossEntropy(np, kernels.resolve("cpu", mode), smoothing=eps)
    loss, g = loss_fn(z, t)
    logp = z - z.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    q = np.full(z.shape, eps / 5)
    q[np.arange(6), t] += 1 - eps
    assert float(loss) == pytest.approx(-(q * logp).sum() / 6, rel=1e-12)
    numeric = numerical_grad(lambda: float(loss_fn(z, t)[0]), z)
    assert relative_error(g, numeric) < TOLERANCE
    plain = -logp[np.arange(6), t].sum()
    assert float(loss_fn.summed(z, t)) == pytest.approx(plain, rel=1e-12)

