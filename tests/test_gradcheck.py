"""Float64 finite-difference checks of every layer, activation, the loss and a whole MLP."""

import numpy as np
import pytest

import kernels
from engine.layers import Activation, Dropout, Linear, ReLU, Sigmoid, Tanh
from engine.losses import SoftmaxCrossEntropy
from engine.model import Sequential, build_mlp, parse_layers


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


def check_layer(layer, x, params=True, seed=0):
    """d(sum(w * layer(x)))/dx and /dparams against finite differences."""
    rng = np.random.default_rng(seed)
    model = Sequential([layer], x.shape[1], np, seed=seed, dtype=np.float64)
    y = layer.forward(x.copy(), train=True)
    w = rng.standard_normal(y.shape)

    def f():
        return float((layer.forward(x.copy(), train=True) * w).sum())

    layer.forward(x.copy(), train=True)
    gx = layer.backward(w.copy(), need_gx=True)
    np.testing.assert_allclose(gx, numerical_grad(f, x), rtol=1e-6, atol=1e-8)
    if params and model.n_params:
        np.testing.assert_allclose(model.grads, numerical_grad(f, model.params),
                                   rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("shape", [(1, 3, 2), (5, 7, 4)])
def test_linear(shape):
    n, n_in, n_out = shape
    check_layer(Linear(n_in, n_out), np.random.default_rng(1).standard_normal((n, n_in)))


@pytest.mark.parametrize("kind", ["reference", "fused"])
@pytest.mark.parametrize("layer", [Sigmoid, ReLU, Tanh])
def test_activations(layer, kind):
    kernels.set_mode(kind)
    try:
        x = np.random.default_rng(2).standard_normal((4, 6)) * 3
        x[np.abs(x) < 1e-3] = 0.5  # keep ReLU's kink away from the difference stencil
        check_layer(layer(), x)
    finally:
        kernels.set_mode("fused")


def test_dropout_with_fixed_mask():
    layer = Dropout(0.4)
    layer.rng = np.random.default_rng(0)
    x = np.random.default_rng(3).standard_normal((5, 8))
    Sequential([layer], 8, np, dtype=np.float64)
    mask = layer.draw(x.shape, x.dtype).copy()
    layer.draw = lambda shape, dtype: mask  # the same mask on every forward
    check_layer(layer, x, params=False)
    assert set(np.unique(mask)) <= {0.0, 1 / 0.6}
    np.testing.assert_array_equal(layer.forward(x.copy(), train=False), x)


@pytest.mark.parametrize("impl", ["reference", "numba"])
def test_softmax_cross_entropy_gradient(impl):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 5)) * 4
    t = rng.integers(0, 5, 6)

    def f():
        return float(kernels.softmax_cross_entropy(x, t, impl=impl)[0])

    _, g = kernels.softmax_cross_entropy(x, t, impl=impl)
    np.testing.assert_allclose(g, numerical_grad(f, x), rtol=1e-6, atol=1e-9)


def check_model_gradient(model, x, t):
    """The whole model's parameter gradient of the mean loss against finite differences."""
    loss_fn = SoftmaxCrossEntropy()

    def f():
        return float(loss_fn(model.forward(x.copy()), t)[0])

    _, gy = loss_fn(model.forward(x.copy(), train=True), t)
    model.backward(gy)
    np.testing.assert_allclose(model.grads, numerical_grad(f, model.params),
                               rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_whole_mlp(activation):
    rng = np.random.default_rng(5)
    model = build_mlp(7, (6, 5), 3, activation, dtype=np.float64, seed=1)
    check_model_gradient(model, rng.standard_normal((8, 7)), rng.integers(0, 3, 8))


@pytest.mark.parametrize("mode", ["reference", "fused"])
@pytest.mark.parametrize("spec,activation", [("fc6-fc5", "sigmoid"), ("conv3k3-fc5", "relu"),
                                             ("conv2k3s2p1-fc4", "tanh")])
def test_bias_taken_over_by_the_activation(spec, activation, mode, monkeypatch):
    """An activation right after Linear/Conv2D adds that layer's bias and sums its gradient
    (one fused pass each way); the whole model's gradient must not notice."""
    monkeypatch.setitem(kernels._state, "mode", mode)
    model = Sequential(parse_layers(spec, (6, 6), 3, activation), 36, np, seed=3,
                       dtype=np.float64)
    pairs = [(a, b) for a, b in zip(model.layers, model.layers[1:]) if isinstance(b, Activation)]
    assert pairs and all(a.bias_deferred and b.bias is a.b and b.gbias is a.gb
                         for a, b in pairs)
    rng = np.random.default_rng(6)
    check_model_gradient(model, rng.standard_normal((5, 36)), rng.integers(0, 3, 5))


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
    loss, gy = SoftmaxCrossEntropy()(model.forward(x, train=True), np.array([0]))
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
