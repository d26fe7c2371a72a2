"""Each optimizer against its textbook formula, schedules, and hyperparameter errors."""

import math

import numpy as np
import pytest

import kernels
from engine.model import build_mlp
from kernels import blas
from engine.optim import SGD, Adam, Schedule, make_optimizer


@pytest.fixture(params=["fused", "reference"], autouse=True)
def kernel_mode(request):
    """Every formula test runs on the fused update kernels and on the xp reference."""
    kernels.set_mode(request.param)
    yield request.param
    kernels.set_mode("fused")


def setup(seed=0):
    model = build_mlp(3, (4,), 2, "tanh", seed=seed, dtype=np.float64)
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
def test_sgd_formula(momentum, nesterov, wd):
    model, grads = setup()
    p, v = model.params.copy(), np.zeros(model.n_params)
    mask, lrs = decay_mask(model), [0.1, 0.05, 0.02, 0.01]
    for g, lr in zip(grads, lrs):
        g = g + wd * mask * p
        v = momentum * v + g
        p = p - lr * ((g + momentum * v) if nesterov else (v if momentum else g))
    opt = SGD(model, momentum, nesterov, wd)
    np.testing.assert_allclose(run(opt, model, grads, lrs), p, rtol=1e-6)


@pytest.mark.parametrize("decoupled,wd", [(False, 0.0), (False, 0.01), (True, 0.05)])
def test_adam_formula(decoupled, wd):
    model, grads = setup(1)
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


def test_biases_never_decay():
    model, _ = setup()
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
    model, _ = setup()
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


def test_no_fold_without_a_gemm_twin(monkeypatch):
    """Where the twin has no GEMM of its own the reference's passes would cost more than the
    separate update: no fold."""
    from kernels import cpu

    monkeypatch.delattr(cpu, "gemm", raising=False)
    monkeypatch.setattr(kernels, "_has", {})
    model, _ = setup()
    model.set_fold_min_size(1)
    assert SGD(model).fold_factors(0.1) is None
    monkeypatch.undo()
    monkeypatch.setattr(kernels, "_has", {})
    assert (SGD(model).fold_factors(0.1) is not None) == (CAN_FOLD and
                                                          kernels.get_mode() == "fused")


def _batch(model, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((6, model.n_in))
    return x, rng.standard_normal((6, 2))


@pytest.mark.parametrize("wd", [0.0, 0.05])
@pytest.mark.parametrize("fold_min", [0, 12])
def test_sgd_folded_into_backward_is_the_same_step(kernel_mode, wd, fold_min):
    """Plain SGD with fused kernels folds the weights' step into backward: the step equals
    backward + the separate update (formula of test_sgd_formula), and the weight
    gradients are not written."""
    folded, _ = setup()
    plain, _ = setup()
    folded.set_fold_min_size(fold_min)  # both weights (0) or the first only (12)
    opt_f, opt_p = SGD(folded, weight_decay=wd), SGD(plain, weight_decay=wd, fold=False)
    for step, lr in enumerate([0.1, 0.05, 0.02]):
        x, gy = _batch(folded, step)
        fold = opt_f.fold_factors(lr)
        assert (fold is not None) == (kernel_mode == "fused" and CAN_FOLD)
        if fold is not None:
            assert fold == (-lr, 1.0 - lr * wd)
        folded.grads[:folded.n_folded] = 7.0  # must stay: gW is not written when folded
        for model, opt, f in ((folded, opt_f, fold), (plain, opt_p, None)):
            model.forward(x, train=True)
            model.backward(gy, f)
            opt.step(lr, folded=f is not None)
        np.testing.assert_allclose(folded.params, plain.params, rtol=1e-12, atol=1e-13)
        n = folded.n_folded
        assert n == (12 + 8 if fold_min == 0 else 12)  # W (3 x 4), W (4 x 2)
        np.testing.assert_allclose(folded.grads[n:], plain.grads[n:], rtol=1e-12, atol=1e-13)
        if fold is not None:
            assert (folded.grads[:n] == 7.0).all()


def test_fold_only_where_it_is_the_same_formula(kernel_mode):
    model, _ = setup()
    assert model.n_folded == 0  # weights of 12 and 8 entries: below the size where it pays
    model.set_fold_min_size(1)
    # only with the fused kernels: the reference mode is the plain-xp specification
    assert (SGD(model).fold_factors(0.1) is not None) == (kernel_mode == "fused" and CAN_FOLD)
    assert SGD(model, momentum=0.9).fold_factors(0.1) is None  # momentum needs the gradient
    assert SGD(model, fold=False).fold_factors(0.1) is None
    assert Adam(model).fold_factors(0.1) is None
    with pytest.raises(ValueError, match="Adam cannot fold"):
        Adam(model).step(0.1, folded=True)
    from engine.model import build_model

    cnn = build_model("conv4-pool-fc8", 16, (4, 4), (), 3, "relu", 0.0, np, 0)
    cnn.set_fold_min_size(1)
    assert cnn.n_folded == 0 and SGD(cnn).fold_factors(0.1) is None  # a conv weight first
    with pytest.raises(ValueError, match="cannot fold"):
        cnn.backward(np.zeros((1, 3), np.float32), (-0.1, 1.0))
