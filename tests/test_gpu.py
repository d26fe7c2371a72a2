"""On a real GPU: the kernel matrix on CuPy arrays, CPU/GPU agreement, no host sync inside
an epoch, and the out-of-memory message. Skipped with the reason where no GPU is usable."""

import numpy as np
import pytest
from kernel_cases import REGIMES, SHAPES, TOL, case_seed, make_labels, make_logits
from xptrain import kernels
from xptrain.backend import probe_cuda, select_backend

cupy, GPU_NAME, WHY = probe_cuda()
if cupy is None:  # one skip with the reason, not one per parameter combination
    pytest.skip(f"no usable GPU: {WHY}", allow_module_level=True)
pytestmark = pytest.mark.gpu
GPU_IMPLS = kernels.available("cuda")


@pytest.mark.parametrize("impl", GPU_IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES + [(8193, 10)])
@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("layout", ["c", "fortran"])
def test_softmax_ce_on_cupy(impl, dtype, shape, regime, layout):
    x = make_logits(shape, dtype, regime, layout,
                    seed=case_seed(impl, dtype, shape, regime, layout))
    t = make_labels(shape[0], shape[1], 5)
    loss_ref, g_ref = kernels.softmax_cross_entropy(np.ascontiguousarray(x), t,
                                                    impl="reference")
    xd = cupy.asarray(x, order="F" if layout == "fortran" else "C")
    loss, g = kernels.softmax_cross_entropy(xd, cupy.asarray(t), impl=impl)
    assert isinstance(g, cupy.ndarray) and g.dtype == dtype and loss.dtype == dtype
    tol = dict(TOL[dtype], rtol=1e-4 if regime == "huge" and dtype == np.float32 else
               TOL[dtype]["rtol"])
    np.testing.assert_allclose(g.get(), g_ref, **tol)
    np.testing.assert_allclose(float(loss), float(loss_ref), **tol)


@pytest.mark.parametrize("impl", GPU_IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_other_kernels_on_cupy(impl, dtype):
    rng = np.random.default_rng(case_seed(impl, dtype))
    y, gy = rng.random((129, 65)).astype(dtype), rng.standard_normal((129, 65)).astype(dtype)
    gx = kernels.sigmoid_backward(cupy.asarray(gy), cupy.asarray(y), impl=impl)
    np.testing.assert_allclose(gx.get(), kernels.sigmoid_backward(gy, y, impl="reference"),
                               **TOL[dtype])
    bufs = [rng.standard_normal(1001).astype(dtype) for _ in range(3)] + [
        rng.random(1001).astype(dtype)]
    dev = [cupy.asarray(b) for b in bufs]
    kernels.adam_update(*bufs, 1e-3, 3, weight_decay=0.01, decoupled=True, n_decay=500,
                        impl="reference")
    kernels.adam_update(*dev, 1e-3, 3, weight_decay=0.01, decoupled=True, n_decay=500,
                        impl=impl)
    for h, d in zip(bufs, dev):
        np.testing.assert_allclose(d.get(), h, **TOL[dtype])
    sgd = [b.copy() for b in bufs[:3]]
    sgd_dev = [cupy.asarray(b) for b in sgd]
    kernels.sgd_update(*sgd, 0.1, 0.9, True, 0.01, 500, impl="reference")
    kernels.sgd_update(*sgd_dev, 0.1, 0.9, True, 0.01, 500, impl=impl)
    for h, d in zip(sgd, sgd_dev):
        np.testing.assert_allclose(d.get(), h, **TOL[dtype])
    x = rng.integers(0, 256, (100, 30)).astype(np.uint8)
    idx = np.array([5, 99, 100, -1, 0])
    out = kernels.gather_rows(cupy.asarray(x), cupy.asarray(idx), 1 / 255, impl=impl).get()
    np.testing.assert_allclose(out[[0, 1, 4]], x[[5, 99, 0]] / np.float32(255), rtol=1e-6)
    assert np.isnan(out[[2, 3]]).all()


@pytest.mark.parametrize("impl", GPU_IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layouts", [("c", "c"), ("c", "t"), ("t", "c")])
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (-0.1, 1.0), (2.5, 0.5)])
def test_gemm_on_cupy(impl, dtype, layouts, alpha, beta):
    """The layouts of a Linear layer's products (x @ W, gy @ W.T, x.T @ gy) via cuBLAS."""
    rng = np.random.default_rng(case_seed(impl, dtype, layouts, alpha, beta))
    a, b = rng.standard_normal((129, 65)), rng.standard_normal((65, 33))
    a, b = (x.T.copy().T if t == "t" else x for x, t in zip((a.astype(dtype), b.astype(dtype)),
                                                           layouts))
    out = rng.standard_normal((129, 33)).astype(dtype)
    out_d = cupy.asarray(out)
    kernels.gemm(cupy.asarray(a, order="K"), cupy.asarray(b, order="K"), out_d, alpha, beta,
                 impl=impl)
    kernels.gemm(a, b, out, alpha, beta, impl="reference")
    np.testing.assert_allclose(out_d.get(), out, rtol=1e-4 if dtype == np.float32 else 1e-10,
                               atol=1e-4 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("impl", GPU_IMPLS)
@pytest.mark.parametrize("kind", kernels.ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (129, 65), (2, 7, 5, 33)])
def test_activation_kernels_on_cupy(impl, kind, dtype, shape):
    rng = np.random.default_rng(case_seed(impl, kind, dtype, shape))
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    x.reshape(-1)[0] = np.nan
    b = rng.standard_normal(shape[-1]).astype(dtype)
    y_ref = kernels.bias_activation(x.copy(), b, kind, impl="reference")
    y = kernels.bias_activation(cupy.asarray(x), cupy.asarray(b), kind, impl=impl)
    tol = dict(rtol=4e-6, atol=2e-7) if dtype == np.float32 else TOL[dtype]
    np.testing.assert_allclose(y.get(), y_ref, **tol)
    gy = rng.standard_normal(shape).astype(dtype)
    gb_ref, gb = np.empty(shape[-1], dtype), cupy.empty(shape[-1], dtype)
    g_ref = kernels.activation_backward(gy, y_ref, kind, bias_grad=gb_ref, impl="reference")
    g = kernels.activation_backward(cupy.asarray(gy), cupy.asarray(y_ref), kind, bias_grad=gb,
                                    impl=impl)
    np.testing.assert_allclose(g.get(), g_ref, **TOL[dtype])
    np.testing.assert_allclose(gb.get(), gb_ref, rtol=TOL[dtype]["rtol"] * 10,
                               atol=TOL[dtype]["atol"] * 100)


def test_numpy_input_to_gpu_twin_is_refused():
    with pytest.raises(TypeError):
        kernels.sigmoid_backward(np.zeros(3), np.zeros(3), impl="numba-cuda")


@pytest.fixture(scope="module")
def gpu_and_cpu_trainers(mnist):
    from xptrain.train import TrainConfig, Trainer

    config = dict(epochs=2, hidden=(128,), activation="sigmoid", optimizer="sgd", lr=0.1)
    return [Trainer(TrainConfig(**config), mnist, select_backend(d), log=lambda s: None)
            for d in ("cpu", "cuda")]


def test_cpu_and_gpu_agree(gpu_and_cpu_trainers):
    cpu, gpu = gpu_and_cpu_trainers
    np.testing.assert_array_equal(cpu.model.params, gpu.model.params.get())  # same start
    idx = np.arange(128)
    l_cpu = float(cpu.step(idx, cpu.data.y_train[:128], 0.1))
    l_gpu = float(gpu.step(cupy.asarray(idx), gpu.data.y_train[:128], 0.1))
    assert l_gpu == pytest.approx(l_cpu, rel=1e-5)
    hc, hg = cpu.fit(), gpu.fit()
    assert abs(hc[-1]["test_accuracy"] - hg[-1]["test_accuracy"]) <= 0.003


def test_no_host_sync_inside_an_epoch(gpu_and_cpu_trainers):
    import cupyx

    gpu = gpu_and_cpu_trainers[1]
    steps = gpu.batches.epoch(0)
    with cupyx.allow_synchronize(False):  # raises on any implicit device->host sync
        for _, (s, idx, labels) in zip(range(20), steps):
            gpu.step(idx, labels, 0.01, gpu.batches.step_key(0, s))


def test_out_of_memory_message(mnist):
    from xptrain.backend import DeviceMemoryError
    from xptrain.train import TrainConfig, Trainer

    with pytest.raises(DeviceMemoryError, match="at batch size 128: asked for"):
        Trainer(TrainConfig(hidden=(2**26,)), mnist, select_backend("cuda"), log=print)


def test_zero_column_windows_on_the_gpu(mnist):
    """--zero-columns skip on CUDA (auto reads every column there): the same losses as the
    CPU, which finds the same windows. Each step reads its window back to the host (the
    reason auto does not skip on a GPU)."""
    from xptrain.train import TrainConfig, Trainer

    config = TrainConfig(epochs=1, hidden=(128,), activation="sigmoid", optimizer="sgd",
                         lr=0.1, zero_columns="skip")
    cpu, gpu = (Trainer(config, mnist, select_backend(d), log=lambda s: None)
                for d in ("cpu", "cuda"))
    assert type(gpu.model.layers[0]).__name__ == "WindowedDense"
    for _, (s, idx_c, lab_c), (_, idx_g, lab_g) in zip(range(20), cpu.batches.epoch(0),
                                                        gpu.batches.epoch(0)):
        loss_g = float(gpu.step(idx_g, lab_g, 0.1))
        assert float(cpu.step(idx_c, lab_c, 0.1)) == pytest.approx(loss_g, rel=1e-4)
        assert gpu.model.layers[0].rows == cpu.model.layers[0].rows
