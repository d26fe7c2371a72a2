"""``xptrain bench``: every backend and kernel choice side by side with the peers.

Same model (default 784-128-10 sigmoid), same data, same optimizer (plain SGD, lr 0.1),
same batch, same thread count for every contender. Epochs are timed interleaved
(A B A B ...) after a warm-up epoch; medians and spreads are reported.
"""

import math
import time

import numpy as np

from ..backend import probe_cuda, select_backend
from ..data import Dataset, load_mnist
from . import cnn, peers, training
from .cnn import CNN_MODEL
from .memory import peak_memory
from .report import add_ratio_to_peer, environment, plot_scaling, table, write_results
from .timing import interleaved, set_threads, summary


def subset(data, n_train, n_test):
    return Dataset(data.x_train[:n_train], data.y_train[:n_train], data.x_test[:n_test],
                   data.y_test[:n_test], data.source, False, data.n_classes, data.image_shape)


def make_runners(data, devices, model, names=None):
    """Every available configuration on ``devices``; absent peers are listed, not raised."""
    runners, absent = {}, []
    for device in devices:
        backend = select_backend(device)
        for mode in ("reference", "fused"):
            if names is None or training.runner_name(device, mode) in names:
                runner = training.EngineRunner(data, backend, mode, **model)
                runners[runner.name] = runner
        # the other zero-column choice beside the default (skip on the CPU, read on a GPU)
        other = "read" if device == "cpu" else "skip"
        alt = training.runner_name(device, "fused", other)
        if model.get("model", "mlp") == "mlp" and (names is None or alt in names):
            runners[alt] = training.EngineRunner(data, backend, "fused", zero_columns=other,
                                                 **model)
        if peers.available("torch"):
            if names is None or f"torch-eager-{device}" in names:
                r = peers.TorchRunner(data, device, **model)
                r.name = f"torch-eager-{device}"
                runners[r.name] = r
        elif device == "cpu":
            absent.append("torch-eager (PyTorch not installed)")
    if "cpu" in devices and (names is None or "sklearn-mlp" in names):
        if peers.available("sklearn"):
            kw = {k: v for k, v in model.items() if k != "optimizer"}
            runners["sklearn-mlp"] = peers.SklearnRunner(data, **kw)
        else:
            absent.append("sklearn-mlp (scikit-learn not installed)")
    return runners, absent


def device_of(name):
    return "cuda" if name.startswith("cupy") or name.endswith("cuda") else "cpu"


def throughput(runners, backends, n_train, n_test, repeats):
    """Epochs of every config and of the matmul floor, interleaved in the same rounds."""
    fns = {n: r.train_epoch for n, r in runners.items()}
    for device, backend in backends.items():
        fns[f"matmul-floor-{device}"] = _floor_epoch(backend, n_train)
    train = interleaved(fns, repeats, warmup=1)
    infer = interleaved({n: r.infer for n, r in runners.items()}, repeats, warmup=1)
    rows = []
    for name, runner in runners.items():
        t, i = summary(train[name]), summary(infer[name])
        floor = summary(train[f"matmul-floor-{device_of(name)}"])["median"]
        rows.append({"config": name, "device": device_of(name), "epoch_seconds": t["median"],
                     "spread": t["spread"], "train_samples_per_second": n_train / t["median"],
                     "infer_samples_per_second": n_test / i["median"],
                     "compile_seconds": getattr(runner, "compile_seconds", 0.0),
                     "epoch_matmul_floor": floor, "epoch_over_floor": t["median"] / floor,
                     "test_accuracy": runner.accuracy()})
    return add_ratio_to_peer(rows, "train_samples_per_second",
                             lambda row, r: r["config"] == f"torch-eager-{row['device']}")


def _floor_epoch(backend, n_train, sizes=None, batch=None):
    """An 'epoch' of only the matrix products of the training steps (the matmul floor)."""
    sizes = sizes or [784, *MODEL["hidden"], 10]
    batch = batch or MODEL["batch_size"]
    step = training.matmul_step(backend, sizes, batch)
    steps = math.ceil(n_train / batch)

    def epoch():
        for _ in range(steps):
            step()
        backend.synchronize()
    return epoch


def roofline(rows, backends, sizes, runners=None):
    """FLOPs per sample (those a runner skips as zero columns not counted), the measured
    GEMM rate, and what each config achieves of it."""
    dense = training.flops_per_sample(sizes)
    flops = {name: getattr(r, "flops_per_sample", lambda: dense)()
             for name, r in (runners or {}).items()}
    rates = {device: training.gemm_rate(backend) for device, backend in backends.items()}
    out = []
    for row in rows:
        f = flops.get(row["config"], dense)
        out.append({"config": row["config"], "flops_per_sample": round(f),
                    "gemm_gflops": rates[row["device"]] / 1e9,
                    "achieved_gflops": f * row["train_samples_per_second"] / 1e9,
                    "fraction_of_gemm": f * row["train_samples_per_second"]
                    / rates[row["device"]],
                    "epoch_matmul_floor": row["epoch_matmul_floor"],
                    "epoch_over_floor": row["epoch_over_floor"]})
    return out


def time_to_accuracy(data, device, targets=(0.97, 0.98), epochs=10):
    """Wall training time (evaluation excluded) to reach each test accuracy, default recipe."""
    from ..train import TrainConfig, Trainer

    out = []
    trainer = Trainer(TrainConfig(epochs=epochs), data, select_backend(device),
                      log=lambda s: None)
    history = trainer.fit()
    curve = np.cumsum([h["seconds"] for h in history]), [h["test_accuracy"] for h in history]
    out.append(_tta_row(f"{'numpy' if device == 'cpu' else 'cupy'}-fused", curve, targets))
    if peers.available("torch"):
        c = trainer.config
        r = peers.TorchRunner(data, device, c.hidden, c.activation, "adam", c.lr, c.batch_size)
        r.use_cosine(epochs)
        seconds, accs = [], []
        for _ in range(epochs):
            start = time.perf_counter()
            r.train_epoch()
            seconds.append(time.perf_counter() - start)
            accs.append(r.accuracy())
        out.append(_tta_row(f"torch-eager-{device}", (np.cumsum(seconds), accs), targets))
    return out


def _tta_row(name, curve, targets):
    row = {"config": name, "final_accuracy": curve[1][-1]}
    for target in targets:
        hit = next((s for s, a in zip(*curve) if a >= target), None)
        row[f"seconds_to_{round(target * 100)}"] = hit
    return row


def scaling(data, devices, batches, widths, budget=0.3):
    """Training samples/s against batch size (hidden 128) and hidden width (batch 128)."""
    res = {"batch": [], "hidden": []}
    for key, values in (("batch", batches), ("hidden", widths)):
        for value in values:
            model = dict(MODEL, **({"batch_size": value} if key == "batch"
                                   else {"hidden": (value,)}))
            runners, _ = make_runners(data, devices, model,
                                      names={"numpy-fused", "cupy-fused", "torch-eager-cpu",
                                             "torch-eager-cuda"})
            for name, r in runners.items():
                res[key].append({"config": name, key: value,
                                 "samples_per_second": _rate(r, model["batch_size"], budget)})
    return res


def _rate(runner, batch, budget):
    runner.train_steps(2)
    n, start = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - start < budget:
        runner.train_steps(1)
        n += 1
    return n * batch / (time.perf_counter() - start)


def cnn_comparison(data, devices, rounds=15, steps=20, epochs=3):
    """The classic CNN beside PyTorch on each device: milliseconds per step in interleaved
    blocks of ``steps`` steps, and ``epochs`` full epochs interleaved (:mod:`.cnn`)."""
    rows = []
    for device in devices:
        for name, r in cnn.compare(cnn.runners(data, device), rounds, steps, epochs).items():
            rows.append({"config": f"{name}-cnn-{device}", "device": device,
                         "step_ms": r["step_ms"],
                         "train_samples_per_second": CNN_MODEL["batch_size"] / r["step_ms"] * 1e3,
                         "epoch_seconds": r.get("epoch_s"), "spread": r["step_spread"],
                         "vs_torch": r.get("vs_torch_steps"),
                         "vs_torch_epoch": r.get("vs_torch_epoch")})
    return rows


MODEL = dict(hidden=(128,), activation="sigmoid", optimizer="sgd", lr=0.1, batch_size=128)

COLUMNS = [("config", "config", "{}"), ("device", "device", "{}"),
           ("train_samples_per_second", "train samples/s", "{:,.0f}"),
           ("epoch_seconds", "epoch s", "{:.3f}"), ("spread", "spread", "{:.0%}"),
           ("infer_samples_per_second", "infer samples/s", "{:,.0f}"),
           ("peak_memory_mib", "peak +MiB", "{:.0f}"), ("compile_seconds", "JIT s", "{:.2f}"),
           ("vs_torch", "vs torch", "{:.2f}x"), ("test_accuracy", "test acc", "{:.2%}")]


def run(args):
    threads = set_threads(args.threads)
    data = load_mnist(args.data_dir, download=not args.no_download, progress=False)
    if args.quick:
        data = subset(data, 6000, 2000)
    cupy, _, why = probe_cuda() if args.device != "cpu" else (None, None, "--device cpu")
    devices = ["cpu"] + (["cuda"] if cupy is not None else [])
    backends = {d: select_backend(d) for d in devices}
    print(f"bench: {len(data.y_train)} train / {len(data.y_test)} test images, threads "
          f"{args.threads}, devices {', '.join(devices)}"
          + ("" if cupy is not None else f" (no GPU: {why})"), flush=True)
    runners, absent = make_runners(data, devices, MODEL)
    rows = throughput(runners, backends, len(data.y_train), len(data.y_test), args.repeats)
    if not args.quick:
        passthrough = ["--threads", str(args.threads)] + (
            ["--data-dir", args.data_dir] if args.data_dir else [])
        for row in rows:
            row["peak_memory_mib"] = peak_memory(row["config"], passthrough)
    sizes = [data.x_train.shape[1], *MODEL["hidden"], data.n_classes]
    results = {"environment": environment(backends[devices[-1]], threads), "model": MODEL,
               "absent": absent, "throughput": rows,
               "roofline": roofline(rows, backends, sizes, runners),
               "step": [training.step_breakdown(runners[n], MODEL["batch_size"])
                        for n in runners if n.startswith(("numpy", "cupy"))]}
    if not args.quick:
        results["time_to_accuracy"] = [r for d in devices for r in time_to_accuracy(data, d)]
        results["cnn"] = cnn_comparison(data, devices)
    batches = (32, 128, 1024) if args.quick else (32, 128, 512, 2048, 8192)
    widths = (128, 512) if args.quick else (128, 512, 1024, 2048, 4096)
    results["scaling"] = scaling(data, devices, batches, widths)
    print(render(results))
    if args.json:
        write_results(args.json, results)
    if args.plot:
        plot_scaling(args.plot, results["scaling"])
    return results


def render(results):
    parts = ["", "Throughput (model 784-128-10 sigmoid, plain SGD lr 0.1, batch 128; "
             f"{results['environment']['threads']['threads']} threads for every contender)",
             table(results["throughput"], COLUMNS)]
    if results["absent"]:
        parts.append("absent: " + "; ".join(results["absent"]))
    parts += ["", "Roofline (FLOPs per training sample, measured large-GEMM rate)",
              table(results["roofline"], [
                  ("config", "config", "{}"), ("flops_per_sample", "FLOP/sample", "{:,}"),
                  ("achieved_gflops", "GFLOP/s", "{:.1f}"), ("gemm_gflops", "GEMM GFLOP/s",
                                                             "{:.0f}"),
                  ("fraction_of_gemm", "of GEMM", "{:.0%}"),
                  ("epoch_matmul_floor", "matmul floor s", "{:.3f}"),
                  ("epoch_over_floor", "epoch/floor", "{:.2f}x")]),
              "(matmul floor: an epoch of only the step's matrix products over every input "
              "column, timed in the same interleaved rounds; FLOP/sample leaves out what a "
              "config skips as zero columns, -dense reads them all)"]
    parts += ["", "Training step at batch 128: the matrix products and the rest",
              table(results["step"], [
                  ("config", "config", "{}"), ("step_us", "step us", "{:.0f}"),
                  ("matmul_us", "matmul us", "{:.0f}"),
                  ("non_matmul_share", "non-matmul", "{:.0%}")])]
    if "time_to_accuracy" in results:
        parts += ["", "Time to accuracy, default recipe (784-512-10 relu, Adam, cosine, 10 "
                  "epochs; training seconds, evaluation excluded)",
                  table(results["time_to_accuracy"], [
                      ("config", "config", "{}"), ("seconds_to_97", "to 97%", "{:.2f}s"),
                      ("seconds_to_98", "to 98%", "{:.2f}s"),
                      ("final_accuracy", "final", "{:.2%}")])]
    if "cnn" in results:
        parts += ["", "CNN conv32-pool-conv64-pool-fc128 relu, SGD, batch 128 (steps: "
                  "interleaved blocks of 20; epochs: full epochs taking turns every 20 steps)",
                  table(results["cnn"], [("config", "config", "{}"),
                                         ("step_ms", "step ms", "{:.1f}"),
                                         ("train_samples_per_second", "samples/s", "{:,.0f}"),
                                         ("spread", "spread", "{:.0%}"),
                                         ("epoch_seconds", "epoch s", "{:.1f}"),
                                         ("vs_torch", "vs torch (steps)", "{:.2f}x"),
                                         ("vs_torch_epoch", "vs torch (epochs)", "{:.2f}x")])]
    for key, label in (("batch", "batch size (hidden 128)"), ("hidden", "hidden width "
                                                                         "(batch 128)")):
        parts += ["", f"Scaling: training samples/s by {label}",
                  _pivot(results["scaling"][key], key)]
    return "\n".join(parts)


def _pivot(rows, key):
    configs = sorted({r["config"] for r in rows})
    values = sorted({r[key] for r in rows})
    pivot = [{key: v, **{c: next((r["samples_per_second"] for r in rows
                                  if r[key] == v and r["config"] == c), None)
                         for c in configs}} for v in values]
    return table(pivot, [(key, key, "{}")] + [(c, c, "{:,.0f}") for c in configs])
