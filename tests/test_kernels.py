"""Every available kernel twin against the plain-xp reference, on NumPy arrays (and on
CuPy arrays when a GPU is usable); the reference against finite differences and PyTorch."""

import warnings

import numpy as np
import pytest
from kernel_cases import (
    LAYOUTS,
    REGIMES,
    SHAPES,
    TOL,
    arrange,
    case_seed,
    make_labels,
    make_logits,
)
from xptrain import kernels
from xptrain.kernels import reference

CPU_IMPLS = kernels.available("cpu")


def ref_softmax_ce(x, t):
    """Independent float64 oracle written without the kernels package."""
    x = np.asarray(x, np.float64)
    m = x.max(axis=1, keepdims=True)
    logp = x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))
    p = np.exp(logp)
    onehot = np.eye(x.shape[1])[t]
    return -logp[np.arange(len(t)), t].mean(), (p - onehot) / len(t)


def test_fused_twin_is_available_on_cpu():
    assert "numba" in CPU_IMPLS


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_softmax_ce_matrix(impl, dtype, shape, regime, layout):
    seed = case_seed(impl, str(dtype), shape, regime, layout)  # fresh per case
    x = make_logits(shape, dtype, regime, layout, seed)
    t = make_labels(shape[0], shape[1], seed)
    x_before = x.copy()
    loss, g = kernels.softmax_cross_entropy(x, t, impl=impl)
    assert loss.shape == () and loss.dtype == dtype and g.dtype == dtype
    assert g.shape == shape
    np.testing.assert_array_equal(x, x_before)  # input untouched
    rows = np.ones(shape[0], bool)
    if regime == "nan_row":
        bad = shape[0] // 2
        assert np.isnan(g[bad]).all() and np.isnan(loss)
        rows[bad] = False
    else:
        assert np.isfinite(g).all() and np.isfinite(loss)
        ref_loss, _ = ref_softmax_ce(x, t)
        np.testing.assert_allclose(loss, ref_loss, **_loose(dtype, regime))
    if rows.any():
        _, ref_g = ref_softmax_ce(np.ascontiguousarray(x)[rows], t[rows])
        np.testing.assert_allclose(g[rows], ref_g * rows.sum() / shape[0],
                                   **_loose(dtype, regime))
    # and the twin equals the package reference bit-for-bit up to ulps
    loss_r, g_r = kernels.softmax_cross_entropy(x, t, impl="reference")
    np.testing.assert_allclose(g, g_r, **TOL[dtype])
    # the training step's call (buffers given, labels checked at load) takes the fast path
    out, row_loss = np.empty(shape, dtype), np.empty(shape[0], dtype)
    loss_f, g_f = kernels.softmax_cross_entropy(np.ascontiguousarray(x), t, out=out,
                                                row_loss=row_loss, check=False, impl=impl)
    assert g_f is out and loss_f.shape == () and loss_f.dtype == dtype
    np.testing.assert_array_equal(g_f, g)
    np.testing.assert_array_equal(loss_f, loss)


def _loose(dtype, regime):
    tol = dict(TOL[dtype])
    if regime == "huge" and dtype == np.float32:
        tol["rtol"] = 1e-4  # |logit| 1e4 in float32 has an ulp of ~1e-3
    return tol


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (1, 10), (7, 3), (129, 65), (4, 5, 6)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_sigmoid_backward_matrix(impl, dtype, shape, layout):
    rng = np.random.default_rng(case_seed(impl, str(dtype), shape, layout))
    z = rng.standard_normal(shape) * 5
    z.reshape(-1)[0] = 400  # saturated: y == 1 exactly
    y = (1 / (1 + np.exp(-z))).astype(dtype)
    gy = rng.standard_normal(shape).astype(dtype)
    if len(shape) == 2:
        y, gy = arrange(y, layout), arrange(gy, layout)
    before = (y.copy(), gy.copy())
    gx = kernels.sigmoid_backward(gy, y, impl=impl)
    assert gx.dtype == dtype and gx.shape == shape
    np.testing.assert_array_equal(y, before[0])
    np.testing.assert_array_equal(gy, before[1])
    expected = gy.astype(np.float64) * y * (1 - y.astype(np.float64))
    np.testing.assert_allclose(gx, expected, **TOL[dtype])
    assert gx.reshape(-1)[0] == 0


def _activation_oracle(kind, z):
    """act(z) and act'(z) in float64 from their textbook formulas (not the reference)."""
    z = z.astype(np.float64)
    with np.errstate(over="ignore"):
        if kind == "sigmoid":
            y = 1 / (1 + np.exp(-z))
            return y, y * (1 - y)
        if kind == "relu":
            return np.maximum(z, 0), (z > 0).astype(np.float64)
    y = np.tanh(z)
    return y, 1 - y * y


def _activation_input(shape, dtype, regime, seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(shape) * 4
    if regime == "huge":
        z = rng.choice([-1e4, -90.0, 90.0, 1e4], size=shape) + rng.standard_normal(shape)
    elif regime == "tiny":  # tanh's series branch and the cancellation around it
        z = rng.choice([-1, 1], size=shape) * 10.0 ** rng.uniform(-8, 0, shape)
    elif regime == "nan":
        z.reshape(-1)[z.size // 2] = np.nan
    return z.astype(dtype)


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("kind", kernels.ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (129, 65), (2, 5, 4, 6)])
@pytest.mark.parametrize("regime", ["normal", "huge", "tiny", "nan"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_bias_activation_matrix(impl, kind, dtype, shape, regime, with_bias):
    seed = case_seed(impl, kind, str(dtype), shape, regime, with_bias)
    x = _activation_input(shape, dtype, regime, seed)
    b = (np.random.default_rng(seed + 1).standard_normal(shape[-1]).astype(dtype)
         if with_bias else None)
    z = x.astype(np.float64) + (0 if b is None else b)
    expected, deriv = _activation_oracle(kind, z)
    y = x.copy()
    assert kernels.bias_activation(y, b, kind, impl=impl) is y
    assert y.dtype == dtype
    # A few ulp relative, or of 1 absolute (the reference's 0.5 tanh(x/2) + 0.5 rounds at 0.5)
    tol = dict(rtol=4e-6, atol=2e-7) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(y, expected, **tol)
    assert np.isnan(y).sum() == np.isnan(z).sum()  # a NaN stays where it was, alone

    gy = np.random.default_rng(seed + 2).standard_normal(shape).astype(dtype)
    gb = np.full(shape[-1], np.nan, dtype)
    before = gy.copy()
    gx = kernels.activation_backward(gy, y, kind, bias_grad=gb, impl=impl)
    np.testing.assert_array_equal(gy, before)  # out-of-place leaves gy alone
    y64 = y.astype(np.float64)
    d = {"sigmoid": y64 * (1 - y64), "relu": (y64 > 0) * 1.0, "tanh": 1 - y64**2}[kind]
    np.testing.assert_allclose(gx, gy * d, **TOL[dtype])
    sums = (gy * d).reshape(-1, shape[-1]).sum(axis=0)
    np.testing.assert_allclose(gb, sums, rtol=TOL[dtype]["rtol"] * 10,
                               atol=TOL[dtype]["atol"] * shape[0] * 10)
    if regime != "nan":  # the derivative from y matches the derivative from z
        np.testing.assert_allclose(d, deriv, rtol=1e-3 if dtype == np.float32 else 1e-9,
                                   atol=1e-6 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("kind", kernels.ACTIVATIONS)
def test_activation_backward_in_place_with_bias_grad(impl, kind):
    rng = np.random.default_rng(5)
    y = kernels.bias_activation(rng.standard_normal((33, 17)).astype(np.float32), None, kind)
    gy = rng.standard_normal((33, 17)).astype(np.float32)
    expected = kernels.activation_backward(gy, y, kind, impl="reference")
    gb = np.empty(17, np.float32)
    assert kernels.activation_backward(gy, y, kind, out=gy, bias_grad=gb, impl=impl) is gy
    np.testing.assert_allclose(gy, expected, **TOL[np.float32])
    np.testing.assert_allclose(gb, expected.sum(axis=0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("kind", kernels.ACTIVATIONS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("bias_layout", ["c", "strided"])
def test_activation_backward_in_place_any_layout(impl, kind, layout, bias_layout):
    """The in-place 2-D call takes any strides (the fast path does not copy them away):
    non-contiguous gy, y and bias_grad are read and written through their strides."""
    rng = np.random.default_rng(case_seed(impl, kind, layout, bias_layout))
    y = kernels.bias_activation(rng.standard_normal((19, 11)).astype(np.float32), None, kind)
    gy0 = rng.standard_normal((19, 11)).astype(np.float32)
    y_arranged, gy = arrange(y.copy(), layout), arrange(gy0.copy(), layout)
    wide = np.full(22, np.nan, np.float32)
    gb = wide[::2] if bias_layout == "strided" else np.empty(11, np.float32)
    assert kernels.activation_backward(gy, y_arranged, kind, out=gy, bias_grad=gb,
                                       impl=impl) is gy
    dact = {"sigmoid": y * (1.0 - y.astype(np.float64)), "relu": (y > 0) * 1.0,
            "tanh": 1.0 - y.astype(np.float64) ** 2}[kind]
    expected = gy0 * dact
    np.testing.assert_allclose(gy, expected, **TOL[np.float32])
    np.testing.assert_allclose(gb, expected.sum(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y_arranged, y)
    if bias_layout == "strided":
        assert np.isnan(wide[1::2]).all()  # the gaps between bias_grad's entries untouched


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _written_buffer_calls():
    """(argument name, call) for every kernel argument written in place, given read-only."""
    f32 = np.float32
    x, b = np.full((4, 3), 0.5, f32), np.zeros(3, f32)
    labels, idx = np.array([0, 1, 2, 0]), np.array([0, 1])
    img, cols = np.zeros((1, 4, 4, 2), f32), np.zeros((1, 4, 4, 3, 3, 2), f32)
    pooled, arg = np.zeros((1, 2, 2, 2), f32), np.zeros((1, 2, 2, 2), np.uint8)
    return [
        ("out", lambda: kernels.softmax_cross_entropy(x, labels, out=_read_only(x))),
        ("row_loss", lambda: kernels.softmax_cross_entropy(x, labels,
                                                           row_loss=_read_only(x[:, 0]))),
        ("x", lambda: kernels.bias_activation(_read_only(x), b, "relu")),
        ("out", lambda: (lambda g: kernels.sigmoid_backward(g, x, out=g))(_read_only(x))),
        ("out", lambda: (lambda g: kernels.activation_backward(g[None], x[None], "tanh",
                                                               out=g[None]))(_read_only(x))),
        ("out", lambda: kernels.sigmoid_backward(x, x, out=_read_only(x))),
        ("bias_grad", lambda: kernels.sigmoid_backward(x.copy(), x, bias_grad=_read_only(b))),
        ("p", lambda: kernels.sgd_update(_read_only(b), b, b.copy(), 0.1)),
        ("v", lambda: kernels.sgd_update(b.copy(), b, _read_only(b), 0.1, momentum=0.9)),
        ("m", lambda: kernels.adam_update(b.copy(), b, _read_only(b), b.copy(), 0.1, 1)),
        ("out", lambda: kernels.gather_rows(x, idx, 1.0, out=_read_only(x[:2]))),
        ("out", lambda: kernels.im2col(img, 3, 1, 1, out=_read_only(cols))),
        ("out", lambda: kernels.col2im(cols, 3, 1, 1, _read_only(img))),
        ("y", lambda: kernels.maxpool_forward(img, 2, 2, _read_only(pooled), arg)),
        ("arg", lambda: kernels.maxpool_forward(img, 2, 2, pooled, _read_only(arg))),
        ("gx", lambda: kernels.maxpool_backward(pooled, arg, 2, 2, _read_only(img))),
        ("out", lambda: kernels.gemm(x, x.T, _read_only(np.zeros((4, 4), f32)), -0.1, 1.0)),
    ]


@pytest.mark.parametrize("case", range(len(_written_buffer_calls())))
def test_read_only_buffers_are_a_clear_error_not_a_broken_twin(case):
    """A read-only buffer is the caller's mistake: a ValueError naming the argument, before
    any twin runs (a Numba twin fails to compile for one, which must not read as broken)."""
    name, call = _written_buffer_calls()[case]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=f"^{name} is read-only"):
            call()
    ops = kernels.resolve("cpu")
    assert ops.name == "numba" and ops.fallbacks == {}


def test_activation_argument_errors():
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="activation must be one of"):
        kernels.bias_activation(x, None, "gelu")
    with pytest.raises(ValueError, match="b must be a C-contiguous float32 array of shape"):
        kernels.bias_activation(x, np.zeros(4, np.float32), "relu")
    with pytest.raises(ValueError, match="x must be a C-contiguous array"):
        kernels.bias_activation(np.zeros((3, 4), np.float32).T, None, "relu")
    with pytest.raises(TypeError, match="x must be float32 or float64"):
        kernels.bias_activation(np.zeros((3, 4), np.int32), None, "relu")
    with pytest.raises(ValueError, match="bias_grad must be a C-contiguous float32"):
        kernels.activation_backward(x, x, "tanh", bias_grad=np.zeros(3, np.float64))


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_out_buffers_are_written_in_place(impl):
    x = np.random.default_rng(0).standard_normal((9, 4)).astype(np.float32)
    t = make_labels(9, 4, 0)
    out, rows = np.full_like(x, np.nan), np.full(9, np.nan, np.float32)
    loss, g = kernels.softmax_cross_entropy(x, t, out=out, row_loss=rows, impl=impl)
    assert g is out and np.isfinite(out).all()
    np.testing.assert_allclose(rows.mean(), loss, rtol=1e-6)
    y = np.full((3, 3), 0.5, np.float32)
    buf = np.full_like(y, np.nan)
    assert kernels.sigmoid_backward(np.ones_like(y), y, out=buf, impl=impl) is buf
    np.testing.assert_array_equal(buf, 0.25)


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("label_dtype", [np.int32, np.int64, np.uint8])
def test_label_dtypes(impl, label_dtype):
    x = np.random.default_rng(1).standard_normal((5, 6))
    t = make_labels(5, 6, 1, label_dtype)
    loss, g = kernels.softmax_cross_entropy(x, t, impl=impl)
    ref_loss, ref_g = ref_softmax_ce(x, t.astype(np.int64))
    np.testing.assert_allclose(g, ref_g, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_bad_labels_rejected_or_nan(impl):
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        kernels.softmax_cross_entropy(x, np.array([0, 4, 1]), impl=impl)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        kernels.softmax_cross_entropy(x, np.array([0, -1, 1]), impl=impl)
    with pytest.raises(TypeError, match="labels must be an integer array"):
        kernels.softmax_cross_entropy(x, np.array([0.0, 1.0, 2.0]), impl=impl)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        kernels.softmax_cross_entropy(x, np.array([0, 1]), impl=impl)
    # without the range check a bad label is a NaN row, never an out-of-bounds write
    out = np.zeros((3, 4), np.float32)
    rows = np.zeros(3, np.float32)
    kernels.softmax_cross_entropy(x, np.array([0, 99, -7]), out=out, row_loss=rows,
                                  impl=impl, check=False)
    assert np.isnan(rows[1:]).all() and np.isfinite(rows[0])
    np.testing.assert_allclose(out[1:], 0.25 / 3, rtol=1e-6)


def test_argument_errors():
    x = np.zeros((2, 3), np.float32)
    t = np.array([0, 1])
    with pytest.raises(TypeError, match="float32 or float64"):
        kernels.softmax_cross_entropy(x.astype(np.int32), t)
    with pytest.raises(TypeError, match="float32 or float64"):
        kernels.softmax_cross_entropy(x.astype(np.float16), t)
    with pytest.raises(ValueError, match="2-D"):
        kernels.softmax_cross_entropy(np.zeros(3, np.float32), t)
    with pytest.raises(ValueError, match="out must have shape"):
        kernels.softmax_cross_entropy(x, t, out=np.zeros((2, 3), np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.softmax_cross_entropy(x, t, out=np.zeros((3, 2), np.float32).T)
    with pytest.raises(ValueError, match="gy must match y"):
        kernels.sigmoid_backward(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="kernels must be one of fused, reference"):
        kernels.sigmoid_backward(x, x, impl="nope")
    with pytest.raises(ValueError, match="run on cuda, not on cpu"):
        kernels.sigmoid_backward(x, x, impl="cupy")


def test_mixed_devices_are_a_type_error(monkeypatch):
    import sys
    import types

    fake = types.ModuleType("cupy")

    class ndarray:  # noqa: N801 - mimics cupy.ndarray
        pass

    fake.ndarray = ndarray
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(TypeError, match="different devices"):
        kernels.sigmoid_backward(ndarray(), np.zeros(3))


def test_reference_against_finite_differences_float64():
    rng = np.random.default_rng(7)
    x, t = rng.standard_normal((5, 4)), rng.integers(0, 4, 5)
    rows, g = np.empty(5), np.empty((5, 4))
    reference.softmax_cross_entropy_rows(x, t, rows, g)
    h, num = 1e-6, np.zeros_like(x)
    for i in np.ndindex(x.shape):
        for sign in (1, -1):
            xp_ = x.copy()
            xp_[i] += sign * h
            r = np.empty(5)
            reference.softmax_cross_entropy_rows(xp_, t, r, np.empty_like(x))
            num[i] += sign * r.mean() / (2 * h)
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-10)


def test_reference_against_pytorch():
    torch = pytest.importorskip("torch", reason="PyTorch not installed: no peer to compare")
    rng = np.random.default_rng(8)
    x, t = rng.standard_normal((17, 10)) * 5, rng.integers(0, 10, 17)
    xt = torch.tensor(x, requires_grad=True)
    loss_t = torch.nn.functional.cross_entropy(xt, torch.tensor(t))
    loss_t.backward()
    loss, g = kernels.softmax_cross_entropy(x, t, impl="reference")
    np.testing.assert_allclose(loss, loss_t.item(), rtol=1e-12)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-10, atol=1e-15)
    y = torch.tensor(rng.standard_normal((4, 6)), requires_grad=True)
    s = torch.sigmoid(y)
    gy = rng.standard_normal((4, 6))
    s.backward(torch.tensor(gy))
    gx = kernels.sigmoid_backward(gy, s.detach().numpy(), impl="reference")
    np.testing.assert_allclose(gx, y.grad.numpy(), rtol=1e-12)
