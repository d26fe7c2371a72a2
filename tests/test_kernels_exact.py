"""The activation backward's exact-typed route (kernels.cpu.exact_entry): it runs only for
the training step's types, refuses every other call before writing anything, and the
public ops fall back to the checked routes for those."""

import warnings

import numpy as np
import pytest

import kernels
from kernels import cpu, reference
from tests.kernel_cases import TOL, spy_activation_backward

F32, F64 = np.float32, np.float64


@pytest.fixture
def entry():
    return cpu.exact_entry("activation_backward")


@pytest.fixture
def fresh_caches(monkeypatch):
    monkeypatch.setitem(kernels._state, "broken", {})
    for name in ("_resolved", "_active", "_host", "_exact_bwd"):
        monkeypatch.setattr(kernels, name, {})


def _pair(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    y = rng.uniform(0.05, 0.95, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype), y


def test_only_activation_backward_has_an_exact_entry():
    assert all(cpu.exact_entry(op) is None for op in kernels.OPS if op != "activation_backward")


@pytest.mark.parametrize("kind", kernels.ACTIVATIONS)
@pytest.mark.parametrize("with_gb", [False, True])
def test_exact_entry_matches_the_reference(entry, kind, with_gb, dtype=F32):
    gy, y = _pair((37, 13), dtype, 1)
    expected = gy.copy()
    gb_ref = np.empty(13, dtype) if with_gb else None
    reference.activation_backward(expected, y, kind, gb_ref)
    gb = np.full(13, np.nan, dtype) if with_gb else None
    assert entry(gy, y, gb, kernels._checks.ACTIVATION_KINDS[kind]) is True
    np.testing.assert_allclose(gy, expected, **TOL[dtype])
    if with_gb:
        np.testing.assert_allclose(gb, gb_ref, rtol=1e-5, atol=1e-5)


def _unaligned(shape):
    raw = np.zeros(np.prod(shape) * 4 + 1, np.uint8)
    a = np.frombuffer(raw.data, F32, np.prod(shape), offset=1).reshape(shape)
    assert not a.flags.aligned
    return a


def _read_only(a):
    a.flags.writeable = False
    return a


# (gy, y, gb, code) that are not the training step's types (the code always comes from
# kernels' own ACTIVATION_KINDS; Numba would convert a float one, as for any scalar)
_REFUSED = {
    "F-order gy": lambda g, y: (np.asfortranarray(g), y, None, 0),
    "strided y": lambda g, y: (g, np.repeat(y, 2, axis=1)[:, ::2], None, 0),
    "read-only gy": lambda g, y: (_read_only(g), y, None, 0),
    "read-only y": lambda g, y: (g, _read_only(y), None, 0),
    "mixed dtypes": lambda g, y: (g, y.astype(F64), None, 0),
    "float64 (checked route)": lambda g, y: (g.astype(F64), y.astype(F64), None, 0),
    "integer arrays": lambda g, y: (g.astype(np.int32), y.astype(np.int32), None, 0),
    "big-endian": lambda g, y: (g.astype(">f4"), y.astype(">f4"), None, 0),
    "1-D": lambda g, y: (g.ravel(), y.ravel(), None, 0),
    "3-D": lambda g, y: (g[None], y[None], None, 0),
    "unaligned gy": lambda g, y: (_unaligned(g.shape), y, None, 0),
    "strided gb": lambda g, y: (g, y, np.zeros(2 * g.shape[1], F32)[::2], 0),
    "float64 gb": lambda g, y: (g, y, np.zeros(g.shape[1], F64), 0),
    "list y": lambda g, y: (g, y.tolist(), None, 0),
}


@pytest.mark.parametrize("case", sorted(_REFUSED))
def test_exact_entry_refuses_other_types_before_running(entry, case):
    args = _REFUSED[case](*_pair((6, 5), F32, 2))
    before = [np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in args]
    n_signatures = len(entry.signatures)
    with pytest.raises(TypeError, match="No matching definition"):
        entry(*args)
    for a, b in zip(args, before):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
    assert len(entry.signatures) == n_signatures == 2  # nothing compiled for them


@pytest.mark.parametrize("shapes", [((4, 6), (6, 4), None), ((4, 6), (4, 6), 5),
                                    ((4, 6), (3, 6), None)])
def test_exact_entry_does_nothing_when_shapes_do_not_fit(entry, shapes):
    g_shape, y_shape, gb_size = shapes
    gy, y = _pair(g_shape, F32, 3)[0], _pair(y_shape, F32, 4)[1]
    gb = None if gb_size is None else np.full(gb_size, 7.0, F32)
    gy0 = gy.copy()
    assert entry(gy, y, gb, 0) is False
    np.testing.assert_array_equal(gy, gy0)
    if gb is not None:
        assert (gb == 7.0).all()


def test_the_public_ops_take_the_exact_route_for_the_step_call(fresh_caches, monkeypatch):
    """With the twin's checked function broken, the step's call still runs (the exact
    entry did it); a strided call reaches the twin's checked function."""
    calls = spy_activation_backward(monkeypatch, cpu)
    gy, y = _pair((9, 7), F32, 5)
    expected = gy * y * (1 - y)
    assert kernels.sigmoid_backward(gy, y, out=gy) is gy
    g2, y2 = _pair((9, 7), F32, 6)
    gb = np.empty(7, F32)
    kernels.activation_backward(g2, y2, "relu", out=g2, bias_grad=gb)
    assert calls == []
    assert kernels._exact_bwd[None] is cpu.exact_entry("activation_backward")
    np.testing.assert_allclose(gy, expected, **TOL[F32])
    np.testing.assert_allclose(gb, g2.sum(axis=0), rtol=1e-5, atol=1e-6)
    g3 = np.asfortranarray(_pair((9, 7), F32, 7)[0])
    kernels.sigmoid_backward(g3, y, out=g3)
    assert calls == ["sigmoid"]


def test_shape_errors_still_come_from_the_checked_route(fresh_caches):
    gy, y = _pair((4, 6), F32, 8)
    with pytest.raises(ValueError, match="gy must match y"):
        kernels.sigmoid_backward(gy, y.reshape(6, 4), out=gy)
    with pytest.raises(ValueError, match="bias_grad must be"):
        kernels.activation_backward(gy, y, "tanh", out=gy, bias_grad=np.zeros(5, F32))
    with pytest.raises(ValueError, match="activation must be one of"):
        kernels.activation_backward(gy, y, "gelu", out=gy)


def test_reference_mode_and_impl_skip_the_exact_entry(fresh_caches, monkeypatch):
    calls = spy_activation_backward(monkeypatch, reference)
    gy, y = _pair((5, 3), F32, 9)
    kernels.sigmoid_backward(gy, y, out=gy, impl="reference")
    assert calls == ["sigmoid"] and kernels._exact_bwd["reference"] is kernels._not_run
    try:
        kernels.set_mode("reference")
        kernels.activation_backward(gy, y, "tanh", out=gy)
        assert calls == ["sigmoid", "tanh"] and kernels._exact_bwd[None] is kernels._not_run
    finally:
        kernels.set_mode("fused")
    assert None not in kernels._exact_bwd  # the mode switch emptied it


def test_a_failed_exact_compile_warns_once_and_keeps_the_twin(fresh_caches, monkeypatch):
    def uncompilable(g, y, gb, code):
        return object()  # Numba cannot type this: a real compile failure

    monkeypatch.setattr(cpu, "_EXACT", {})
    monkeypatch.setattr(cpu, "_act_bwd_exact", uncompilable)
    gy, y = _pair((5, 3), F32, 10)
    expected = gy * y * (1 - y)
    with pytest.warns(RuntimeWarning, match="exact-typed activation_backward entry did not"):
        kernels.sigmoid_backward(gy, y, out=gy)
    np.testing.assert_allclose(gy, expected, **TOL[F32])
    assert kernels._exact_bwd[None] is kernels._not_run
    assert kernels.active_implementation("cpu") == "numba"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kernels.set_mode("reference")
        kernels.set_mode("fused")  # the caches emptied: asked again, no second warning
        kernels.sigmoid_backward(gy, y, out=gy)
        assert cpu.exact_entry("activation_backward") is None
