"""Kernel timings: each fused twin against the plain-xp reference, batch 32 to 8192.

Compile time is excluded (``kernels.prepare`` and a warm-up call run first) and reported
separately. On the GPU each timing synchronizes the stream.
"""

import numpy as np

import kernels

from .timing import samples, summary

BATCHES = (32, 128, 512, 2048, 8192)


def _cases(xp, batch, rng):
    """name -> (callable taking impl, restore or None) for one batch size, on ``xp`` arrays.

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

    def restore():
        gy[...] = gy0
    return {
        "softmax_cross_entropy (Bx10)": (lambda impl: kernels.softmax_cross_entropy(
            logits, labels, out=out, row_loss=rows, check=False, impl=impl), None),
        "sigmoid_backward (Bx128)": (lambda impl: kernels.sigmoid_backward(
            gy, y, out=gy, impl=impl), restore),
        "sigmoid_backward + bias grad": (lambda impl: kernels.sigmoid_backward(
            gy, y, out=gy, bias_grad=gb, impl=impl), restore),
        "bias + sigmoid (Bx128)": (lambda impl: kernels.bias_activation(
            gy, b, "sigmoid", impl=impl), restore),
        "bias + relu (Bx128)": (lambda impl: kernels.bias_activation(
            gy, b, "relu", impl=impl), restore),
        "gather_rows (Bx784 uint8)": (lambda impl: kernels.gather_rows(
            pixels, idx, 1 / 255, out=xb, impl=impl), None),
        # the folded SGD step of a 784x128 layer: W = W - lr x.T gy (the reference: matmul,
        # then passes for alpha and the sum)
        "gemm W -= lr x.T gy (784x128)": (lambda impl: kernels.gemm(
            xb.T, gy0, w, -1e-7, 1.0, impl=impl), None),
    }


def _update_cases(xp, rng, n_params=101_770):
    """Optimizer updates over the flat buffer of the 784-128-10 model."""
    p, g, m, v = (xp.asarray(rng.standard_normal(n_params).astype(np.float32))
                  for _ in range(4))
    v = abs(v)
    return {
        "sgd_update (momentum, 101,770)": (lambda impl: kernels.sgd_update(
            p, g, m, 1e-3, 0.9, False, 0.0, 100_480, impl=impl), None),
        "adam_update (101,770)": (lambda impl: kernels.adam_update(
            p, g, m, v, 1e-6, 10, n_decay=100_480, impl=impl), None),
    }


def kernel_table(backend, batches=BATCHES, repeats=50, seed=0):
    """Rows of {kernel, impl, batch, seconds, spread, speedup} for every available twin."""
    xp, device = backend.xp, backend.name
    kernels.prepare(device)
    impls = kernels.implementations(device)
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
            rows.append({"kernel": name, "impl": impl, "batch": batch,
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
