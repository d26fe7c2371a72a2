"""Each optimizer against its textbook formula, schedules, and hyperparameter errors."""

import math

import numpy as np
import pytest
from xptrain import kernels
from xptrain.builders import build_mlp
from xptrain.kernels import blas
from xptrain.optim import SGD, Adam, Schedule, make_optimizer


@pytest.fixture(params=["fused", "reference"])
def mode(request):
    """Every formula test runs on the fused update kernels and on the xp reference."""
    return request.param


def setup(mode, seed=0):
    model = build_mlp(3, (4,), 2, "tanh", seed=seed, dtype=np.float64,
                      ops=kernels.resolve("cpu", mode))
    rng = np.random.default_rng(seed)
    grads = [rng.standard_normal(model.n_params) for _ in range(4)]
    return model, grads


def run(opt, model, grads, lrs):
    for g, lr in zip(grads, lrs):
        model.grads[...] = g
        opt.step(lr)
    return model.params.copy()


def decay_mask(model):
    mask = np.zeros(model.n_params)
    mask[:model.n_decay] = 1
    return mask


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 0.0),
                                                  (0.9, True, 0.01), (0.5, False, 0.1)])
def test_sgd_formula(momentum, nesterov, wd, mode):
    model, grads = setup(mode)
    p, v = model.params.copy(), np.zeros(model.n_params)
    mask, lrs = decay_mask(model), [0.1, 0.05, 0.02, 0.01]
    for g, lr in zip(grads, lrs):
        g = g + wd * mask * p
        v = momentum * v + g
        p = p - lr * ((g + momentum * v) if nesterov else (v if momentum else g))
    opt = SGD(model, momentum, nesterov, wd)
    np.testing.assert_allclose(run(opt, model, grads, lrs), p, rtol=1e-6)


@pytest.mark.parametrize("decoupled,wd", [(False, 0.0), (False, 0.01), (True, 0.05)])
def test_adam_formula(decoupled, wd, mode):
    model, grads = setup(mode, 1)
    b1, b2, eps = 0.9, 0.999, 1e-8
    p, m, v = model.params.copy(), np.zeros(model.n_params), np.zeros(model.n_params)
    mask, lrs = decay_mask(model), [1e-2, 2e-2, 5e-3, 1e-3]
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        if decoupled:
            p = p - lr * wd * mask * p
        else:
            g = g + wd * mask * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    opt = Adam(model, b1, b2, eps, wd, decoupled)
    np.testing.assert_allclose(run(opt, model, grads, lrs), p, rtol=1e-6)


def test_biases_never_decay(mode):
    model, _ = setup(mode)
    before = model.params.copy()
    opt = make_optimizer("adamw", model, 0.1, weight_decay=0.5)
    model.grads[...] = 0
    opt.step(0.1)
    n = model.n_decay
    assert n == 3 * 4 + 4 * 2  # the two weight matrices come first
    np.testing.assert_array_equal(model.params[n:], before[n:])
    np.testing.assert_allclose(model.params[:n], before[:n] * (1 - 0.1 * 0.5))


def test_schedules():
    const = Schedule(0.1, "constant", total_steps=100, warmup_steps=10)
    assert const(0) == pytest.approx(0.01) and const(9) == pytest.approx(0.1)
    assert const(50) == 0.1
    step = Schedule(1.0, "step", total_steps=100, step_every=30, gamma=0.5)
    assert [step(s) for s in (0, 29, 30, 60, 99)] == [1.0, 1.0, 0.5, 0.25, 0.125]
    cos = Schedule(1.0, "cosine", total_steps=110, warmup_steps=10)
    assert cos(10) == pytest.approx(1.0)
    assert cos(60) == pytest.approx(0.5)
    assert cos(110) == pytest.approx(0.0, abs=1e-12)
    assert cos(35) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))


@pytest.mark.parametrize("kwargs,message", [
    (dict(name="sgd", lr=-1), "lr must be > 0.0, got -1"),
    (dict(name="sgd", lr=float("nan")), "lr must be > 0"),
    (dict(name="sgd", lr=0.1, momentum=1.5), "momentum must be >= 0.0 and < 1.0, got 1.5"),
    (dict(name="sgd", lr=0.1, momentum=0.0, nesterov=True), "nesterov needs momentum"),
    (dict(name="adam", lr=0.1, weight_decay=-0.1), "weight_decay must be >= 0.0, got -0.1"),
    (dict(name="rmsprop", lr=0.1), "optimizer must be one of sgd, adam, adamw, got 'rmsprop'"),
])
def test_bad_hyperparameters_named(kwargs, message):
    model, _ = setup("fused")
    kwargs = dict(kwargs)
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_optimizer(name, model, **kwargs)


def test_bad_schedule_values():
    with pytest.raises(ValueError, match="schedule must be one of"):
        Schedule(0.1, "linear")
    with pytest.raises(ValueError, match="warmup must be between 0"):
        Schedule(0.1, total_steps=10, warmup_steps=11)
    with pytest.raises(ValueError, match="gamma must be > 0"):
        Schedule(0.1, "step", total_steps=10, gamma=0)


CAN_FOLD = blas.FOUND is not None  # the CPU GEMM twin exists (NumPy's OpenBLAS was found)


def test_no_fold_without_a_gemm_of_the_ops_own(mode):
    """Where the ops have no GEMM of their own (the reference: np.matmul and passes for
    alpha and beta) a fold would cost more than the separate update: none."""
    model, _ = setup(mode)
    opt = SGD(model, fold_min_size=1)
    assert (opt.fold is not None) == (mode == "fused" and CAN_FOLD)
    assert ("gemm" in model.ops.own) == (mode == "fused" and CAN_FOLD)


def test_momentum_folds_on_the_cpu_only():
    """On a GPU the momentum fold would add a launch per folded weight: not done there."""
    import copy

    model, _ = setup("fused")
    gpu_like = copy.copy(model.ops)
    gpu_like.device = "cuda"
    model.ops = gpu_like
    assert (SGD(model, fold_min_size=1).fold is not None) == CAN_FOLD
    assert SGD(model, momentum=0.9, fold_min_size=1).fold is None


def _batch(model, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((6, model.n_in)), rng.standard_normal((6, 2))


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("wd", [0.0, 0.05])
@pytest.mark.parametrize("fold_min", [1, 12, 13])
@pytest.mark.parametrize("window", [False, True])
def test_sgd_folded_into_backward_is_the_same_step(mode, momentum, wd, fold_min, window):
    """SGD folds the weights' step into their gradient products (plain SGD into the
    weights, momentum SGD into their velocity): the step equals backward + the separate
    update (the formula of test_sgd_formula), velocities included, and the folded weights'
    gradients are not written. With a windowed first layer, the rows outside the window
    get no gradient (they only decay, and their velocity only shrinks)."""
    from xptrain.builders import assemble, mlp_entries
    from xptrain.model import Sequential

    def model_():
        layers = assemble(mlp_entries(3, (4,), 2, "tanh"), window)
        return Sequential(layers, 3, np, 0, np.float64, kernels.resolve("cpu", mode))

    folded, plain = model_(), model_()
    opt_f = SGD(folded, momentum, weight_decay=wd, fold_min_size=fold_min)
    opt_p = SGD(plain, momentum, weight_decay=wd, fold=False)
    n = opt_f.fold.n_folded if opt_f.fold else 0
    assert n == ({1: 12 + 8, 12: 12, 13: 0}[fold_min] if mode == "fused" and CAN_FOLD else 0)
    for step, lr in enumerate([0.1, 0.05, 0.02]):
        x, gy = _batch(folded, step)
        if window:
            x[:, 0] = 0  # the first input column is zero: the window is [1, 3)
        folded.grads[:n] = 7.0  # must stay: the folded weights' gradient is not written
        for model, opt in ((folded, opt_f), (plain, opt_p)):
            model.forward(x, train=True)
            opt.backward_step(gy.copy(), lr)
        np.testing.assert_allclose(folded.params, plain.params, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(folded.grads[n:], plain.grads[n:], rtol=1e-12, atol=1e-13)
        for name in opt_p.state_names:
            np.testing.assert_allclose(opt_f.state[name], opt_p.state[name], rtol=1e-12,
                                       atol=1e-13)
        assert (folded.grads[:n] == 7.0).all()
        assert opt_f.t == opt_p.t == step + 1


def test_fold_only_where_it_is_the_same_formula():
    model, _ = setup("fused")
    assert SGD(model).fold is None  # weights of 12 and 8 entries: below the size where it pays
    assert (SGD(model, fold_min_size=1).fold is not None) == CAN_FOLD
    assert (SGD(model, momentum=0.9, fold_min_size=1).fold is not None) == CAN_FOLD
    # Nesterov's step needs the gradient itself, which a fold never writes
    assert SGD(model, momentum=0.9, nesterov=True, fold_min_size=1).fold is None
    assert SGD(model, fold=False, fold_min_size=1).fold is None
    from xptrain.builders import assemble, parse_entries
    from xptrain.model import Sequential

    cnn = Sequential(assemble(parse_entries("conv4-pool-fc8", (4, 4), 3)), 16)
    # the flat buffer opens with the small conv weight: nothing to fold at the default size
    assert SGD(cnn).fold is None
