"""Kernel timings: each fused twin against the plain-xp reference, batch 32 to 8192.

Each twin is timed as training calls it: the resolved ops (:func:`xptrain.kernels.resolve`)
on buffers validated once, not the checked public functions. Compile time is excluded
(``Ops.compile`` and a warm-up call run first) and reported separately. On the GPU each
timing synchronizes the stream.
"""

import numpy as np

from .. import kernels
from ..kernels.reference import adam_scalars
from .timing import samples, summary

BATCHES = (32, 128, 512, 2048, 8192)


def _cases(xp, batch, rng):
    """name -> (callable taking an Ops, restore or None) for one batch size, on ``xp`` arrays.

    The activation kernels work in place, as in training; ``restore`` copies their input back
    before every call (so repeated calls see the same values, never decaying to denormals)
    and its own time is subtracted.
    """
    logits = xp.asarray(rng.standard_normal((batch, 10)).astype(np.float32))
    labels = xp.asarray(rng.integers(0, 10, batch))
    out, rows = xp.empty_like(logits), xp.empty(batch, np.float32)
    y = xp.asarray(rng.uniform(0.05, 0.95, (batch, 128)).astype(np.float32))
    gy0 = xp.asarray(rng.standard_normal((batch, 128)).astype(np.float32))
    gy, gb = gy0.copy(), xp.empty(128, np.float32)
    b = xp.asarray(rng.standard_normal(128).astype(np.float32))
    pixels = xp.asarray(rng.integers(0, 256, (60000, 784)).astype(np.uint8))
    idx = xp.asarray(rng.permutation(60000)[:batch])
    xb = xp.asarray(rng.random((batch, 784)).astype(np.float32))
    w = xp.asarray(rng.standard_normal((784, 128)).astype(np.float32))
    theta = np.tile(np.array([1, 0, 0, 0, 1, 0], np.float32), (batch, 1))
    theta = xp.asarray(theta + rng.normal(0, 0.15, theta.shape).astype(np.float32))
    warped = xp.empty_like(xb)

    def restore():
        gy[...] = gy0
    w0 = w.copy()

    def reset():  # every buffer a case writes, back to its start (for equivalence checks)
        restore()
        w[...] = w0
    written = {"softmax_cross_entropy (Bx10)": (out, rows), "sigmoid_backward (Bx128)": (gy,),
               "sigmoid_backward + bias grad": (gy, gb), "bias + sigmoid (Bx128)": (gy,),
               "bias + relu (Bx128)": (gy,), "gather_rows (Bx784 uint8)": (xb,),
               "gemm W -= lr x.T gy (784x128)": (w,), "column_window (Bx784)": (),
               "affine_warp (Bx28x28)": (warped,)}
    _cases.last = (reset, written)  # what tests/benchmarks compares across twins
    f = np.float32
    return {
        "softmax_cross_entropy (Bx10)": (lambda ops: ops.softmax_cross_entropy_rows(
            logits, labels, rows, out), None),
        "sigmoid_backward (Bx128)": (lambda ops: ops.activation_backward(
            gy, y, "sigmoid", None), restore),
        "sigmoid_backward + bias grad": (lambda ops: ops.activation_backward(
            gy, y, "sigmoid", gb), restore),
        "bias + sigmoid (Bx128)": (lambda ops: ops.bias_activation(gy, b, "sigmoid"), restore),
        "bias + relu (Bx128)": (lambda ops: ops.bias_activation(gy, b, "relu"), restore),
        "gather_rows (Bx784 uint8)": (lambda ops: ops.gather_rows(
            pixels, idx, f(1 / 255), xb), None),
        # the folded SGD step of a 784x128 layer: W = W - lr x.T gy (the reference: matmul,
        # then passes for alpha and the sum)
        "gemm W -= lr x.T gy (784x128)": (lambda ops: ops.gemm(xb.T, gy0, w, f(-1e-7), f(1)),
                                          None),
        "column_window (Bx784)": (lambda ops: ops.column_window(xb), None),
        "affine_warp (Bx28x28)": (lambda ops: ops.affine_warp(xb, theta, None, 28, 28, warped),
                                  None),
    }


def _update_cases(xp, rng, n_params=101_770):
    """Optimizer updates over the flat buffer of the 784-128-10 model."""
    p, g, m, v = (xp.asarray(rng.standard_normal(n_params).astype(np.float32))
                  for _ in range(4))
    v = abs(v)
    _update_cases.last = p  # the parameters each case updates
    f = np.float32
    adam = adam_scalars(np.dtype(f), 1e-6, 10, 0.9, 0.999, 1e-8, 0.0, False)
    return {
        "sgd_update (momentum, 101,770)": (lambda ops: ops.sgd_update(
            p, g, m, f(1e-3), f(0.9), False, f(0), 100_480), None),
        "adam_update (101,770)": (lambda ops: ops.adam_update(p, g, m, v, *adam, 100_480),
                                  None),
    }


def kernel_table(backend, batches=BATCHES, repeats=50, seed=0):
    """Rows of {kernel, impl, batch, seconds, spread, speedup} for every available twin."""
    xp, device = backend.xp, backend.name
    impls = [kernels.resolve(device, name) for name in kernels.available(device)]
    for ops in impls:
        ops.compile()
    rng = np.random.default_rng(seed)
    rows = []
    for batch in batches:
        rows += _measure(_cases(xp, batch, rng), impls, batch, repeats, backend)
    rows += _measure(_update_cases(xp, rng), impls, None, repeats, backend)
    return rows


def _measure(cases, impls, batch, repeats, backend):
    rows = []
    for name, (fn, restore) in cases.items():
        ref, base = None, 0.0
        if restore is not None:
            base = summary(samples(restore, repeats, warmup=3, sync=backend.synchronize,
                                   inner=5))["median"]
        for impl in impls:
            call = fn if restore is None else (lambda impl: (restore(), fn(impl)))
            stats = summary(samples(lambda: call(impl), repeats, warmup=3,
                                    sync=backend.synchronize, inner=5))
            stats["median"] = max(stats["median"] - base, 1e-9)
            ref = ref or stats["median"]
            rows.append({"kernel": name, "impl": impl.name, "batch": batch,
                         "seconds": stats["median"], "spread": stats["spread"],
                         "speedup": ref / stats["median"]})
    return rows


def format_kernel_table(rows):
    lines = [f"{'kernel':<32}{'impl':<12}{'batch':>6}{'time':>11}{'spread':>8}{'speedup':>9}"]
    for r in rows:
        batch = "-" if r["batch"] is None else str(r["batch"])
        lines.append(f"{r['kernel']:<32}{r['impl']:<12}{batch:>6}"
                     f"{r['seconds'] * 1e6:>9.1f}us{r['spread'] * 100:>7.0f}%"
                     f"{r['speedup']:>8.2f}x")
    return "\n".join(lines)
