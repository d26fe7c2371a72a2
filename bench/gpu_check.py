"""The whole GPU check in one command, for a machine with a CUDA GPU:

    PYTHONPATH=. python -m bench.gpu_check --data-dir DIR [--json FILE]

1. device and library info; 2. the kernel equivalence tests on CuPy arrays (pytest);
3. kernel timings per GPU twin (picks the default by measurement); 4. a full MNIST run on
CUDA with the default recipe (and with TF32, and with reference kernels), and the CNN to
99%; 5. CPU-vs-GPU agreement; 6. the throughput table (samples/s per configuration, batch
128/1024/8192, PyTorch eager on the same GPU), printed last and written as JSON.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import traceback

import numpy as np

from .. import kernels
from ..backend import probe_cuda, select_backend
from ..data import load_mnist
from ..train import TrainConfig, Trainer
from . import peers
from .kernels import format_kernel_table, kernel_table
from .report import add_ratio_to_peer, environment, table, write_results
from .timing import interleaved, summary
from .training import EngineRunner

TARGETS = {"torch_ratio_b128": 3.0, "epoch_seconds_b128": 0.020, "seconds_to_98": 1.0}


def device_info():
    info = {}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                              "clocks.max.sm", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
        info["nvidia-smi"] = out
    except (OSError, subprocess.SubprocessError) as exc:
        info["nvidia-smi"] = f"unavailable ({exc})"
    cupy, name, why = probe_cuda()
    info["gpu"] = name or why
    if cupy is not None:
        dev = cupy.cuda.Device()
        info["compute_capability"] = dev.compute_capability
        info["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        info["cupy"] = cupy.__version__
    return info


def run_tests(data_dir):
    env = dict(os.environ, XPTRAIN_DATA=str(data_dir))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_gpu.py", "tests/test_kernels.py"], env=env,
                          capture_output=True, text=True, timeout=900)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    return {"returncode": proc.returncode, "summary": tail,
            "failures": [line for line in proc.stdout.splitlines()
                         if line.startswith("FAILED")][:20]}


def train_run(data, device, epochs=10, tf32=False, mode="fused", **overrides):
    """A default-recipe run. TF32 runs in a fresh process: CuPy reads CUPY_TF32 when it is
    imported, so ``select_backend(tf32=True)`` must come before the import."""
    if tf32 and "cupy" in sys.modules:
        code = ("import json; from xptrain.bench.gpu_check import train_run; "
                "from xptrain.data import load_mnist; "
                f"print(json.dumps(train_run(load_mnist({data.source!r}), 'cuda', {epochs}, "
                "tf32=True)))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=900)
        if proc.returncode:
            return {"error": proc.stderr[-800:]}
        return json.loads(proc.stdout.strip().splitlines()[-1])
    backend = select_backend(device, tf32=tf32)
    t = Trainer(TrainConfig(epochs=epochs, kernels=mode, **overrides), data, backend,
                log=lambda s: None)
    bs = t.config.batch_size
    first = float(t.step(backend.asarray(np.arange(bs)), t.data.y_train[:bs], 0.0))
    t = Trainer(TrainConfig(epochs=epochs, kernels=mode, **overrides), data, backend,
                log=lambda s: None)
    history = t.fit()
    seconds = np.cumsum([h["seconds"] for h in history])
    accs = [h["test_accuracy"] for h in history]
    return {"device": device, "mode": mode, "tf32": tf32, "first_step_loss": first,
            "test_accuracy": accs[-1], "train_seconds": float(seconds[-1]),
            "epoch_seconds": [h["seconds"] for h in history],
            "seconds_to_97": next((float(s) for s, a in zip(seconds, accs) if a >= .97), None),
            "seconds_to_98": next((float(s) for s, a in zip(seconds, accs) if a >= .98), None)}


def throughput(data, batches=(128, 1024, 8192), repeats=5):
    """samples/s of the 784-128-10 sigmoid SGD model per configuration and batch size."""
    rows = []
    gpu_impls = [n for n in kernels.available("cuda") if n != "reference"]
    for batch in batches:
        model = dict(hidden=(128,), activation="sigmoid", optimizer="sgd", lr=0.1,
                     batch_size=batch)
        backend = select_backend("cuda")
        runners = {"cupy-reference": EngineRunner(data, backend, "reference", **model)}
        for impl in gpu_impls:  # each twin, held by its own runner
            runners[f"cupy-fused[{impl}]"] = EngineRunner(data, backend, impl, **model)
        if gpu_impls:  # zero-column windows (read-all is the GPU default until this says)
            runners[f"cupy-fused[{gpu_impls[0]}]-skip"] = EngineRunner(
                data, backend, gpu_impls[0], zero_columns="skip", **model)
        if peers.available("torch"):
            runners["torch-eager-cuda"] = peers.TorchRunner(data, "cuda", **model)
        times = interleaved({k: r.train_epoch for k, r in runners.items()}, repeats, warmup=1)
        for name in runners:
            s = summary(times[name])
            rows.append({"config": name, "batch": batch, "epoch_seconds": s["median"],
                         "spread": s["spread"],
                         "samples_per_second": len(data.y_train) / s["median"]})
    return add_ratio_to_peer(rows, "samples_per_second", lambda row, r: (
        r["config"] == "torch-eager-cuda" and r["batch"] == row["batch"]))


STAGES = ("tests", "kernels", "training", "cnn", "throughput", "nccl")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir")
    p.add_argument("--json", default=os.path.join(os.environ.get("OUT", "."),
                                                  "gpu_check.json"))
    p.add_argument("--only", nargs="+", choices=STAGES, default=STAGES,
                   help="run only these stages (default: all)")
    args = p.parse_args(argv)
    results = {"environment": None, "device": device_info(), "errors": {}}
    print(json.dumps(results["device"], indent=1), flush=True)
    cupy, _, why = probe_cuda()
    if cupy is None:
        print(f"gpu_check: no usable GPU ({why}); nothing to check")
        return 2
    backend = select_backend("cuda")
    results["environment"] = environment(backend, {"threads": os.cpu_count()})
    data = load_mnist(args.data_dir, download=False, progress=False)
    stages = {"tests": lambda: _tests(results, data),
              "kernels": lambda: _kernels(results, backend),
              "training": lambda: _training(results, data),
              "cnn": lambda: _cnn(results, data),
              "throughput": lambda: results.update(throughput=throughput(data)),
              "nccl": lambda: results.update(nccl=nccl_one_rank())}
    for name in args.only:
        start = time.perf_counter()
        try:  # one broken stage must not cost the device time of the others
            stages[name]()
        except Exception:  # noqa: BLE001 - reported in the results and the output
            results["errors"][name] = traceback.format_exc()[-3000:]
            print(f"stage {name} FAILED:\n{results['errors'][name]}", flush=True)
        print(f"stage {name}: {time.perf_counter() - start:.0f}s", flush=True)
        write_results(args.json, results)  # what is done survives a later time-out
    print(render(results))
    failed = results["errors"] or results.get("tests", {}).get("returncode", 0)
    return 1 if failed else 0


def _tests(results, data):
    results["tests"] = run_tests(data.source)
    print("tests:", results["tests"]["summary"], *results["tests"]["failures"], sep="\n",
          flush=True)


def _kernels(results, backend):
    results["kernels"] = kernel_table(backend, repeats=100)
    print(format_kernel_table(results["kernels"]), flush=True)


def _training(results, data):
    runs = [train_run(data, "cuda"), train_run(data, "cuda", mode="reference"),
            train_run(data, "cuda", tf32=True), train_run(data, "cpu")]
    results["training"] = runs
    gpu, cpu = runs[0], runs[3]
    results["agreement"] = {
        "first_step_loss_rel_diff": abs(gpu["first_step_loss"] - cpu["first_step_loss"])
        / abs(cpu["first_step_loss"]),
        "accuracy_diff_points": 100 * abs(gpu["test_accuracy"] - cpu["test_accuracy"])}


def _cnn(results, data):
    from .harness import cnn_comparison

    results["cnn"] = train_run(data, "cuda", epochs=3, model="cnn")
    print(f"CNN on CUDA: {results['cnn']['test_accuracy']:.2%} in "
          f"{results['cnn']['train_seconds']:.1f}s", flush=True)
    results["cnn_vs_torch"] = cnn_comparison(data, ["cuda"])


def render(r):
    """The summary tables of whatever stages ran, the throughput table last."""
    lines = []
    if "training" in r:
        lines += ["", "Training runs (default recipe: 784-512-10 relu, Adam, cosine, 10 epochs)",
                  table(r["training"], [("device", "device", "{}"), ("mode", "kernels", "{}"),
                                        ("tf32", "tf32", "{}"),
                                        ("test_accuracy", "test acc", "{:.2%}"),
                                        ("train_seconds", "train s", "{:.2f}"),
                                        ("seconds_to_98", "to 98% s", "{:.2f}"),
                                        ("first_step_loss", "first loss", "{:.6f}")]),
                  f"CPU vs GPU: first-step loss rel diff "
                  f"{r['agreement']['first_step_loss_rel_diff']:.2e} (target <= 1e-5), "
                  f"accuracy diff {r['agreement']['accuracy_diff_points']:.2f} points "
                  "(target <= 0.3)"]
    if "cnn" in r:
        lines += [f"CNN (conv32-pool-conv64-pool-fc128, 3 epochs) on CUDA: "
                  f"{r['cnn']['test_accuracy']:.2%} test accuracy (target >= 99.0%), "
                  f"{r['cnn']['train_seconds']:.1f}s; vs PyTorch: " + ", ".join(
                      f"{x['config']} {x['epoch_seconds']:.2f}s/epoch"
                      for x in r["cnn_vs_torch"])]
    if "throughput" in r:
        lines += ["", f"Throughput on {r['device']['gpu']} (784-128-10 sigmoid, SGD lr 0.1)",
                  table(r["throughput"], [("config", "config", "{}"), ("batch", "batch", "{}"),
                                          ("samples_per_second", "samples/s", "{:,.0f}"),
                                          ("epoch_seconds", "epoch s", "{:.4f}"),
                                          ("spread", "spread", "{:.0%}"),
                                          ("vs_torch", "vs torch", "{:.2f}x")])]
    if r["errors"]:
        lines += ["", "FAILED stages: " + ", ".join(r["errors"])]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())


def nccl_one_rank():
    """A one-rank NCCL all-reduce through xptrain's NcclGroup (NCCL refuses two ranks on
    one GPU): the communicator set-up and a queued all-reduce of a device buffer."""
    import types

    import cupy
    from cupy.cuda import nccl

    from ..parallel import NcclGroup

    if not getattr(nccl, "available", False):
        return {"available": False}
    one = types.SimpleNamespace(rank=0, size=1, local_rank=0, local_size=1,
                                comm=types.SimpleNamespace(bcast=lambda x, root=0: x))
    group = NcclGroup(one, cupy, nccl)
    buf = cupy.arange(1000, dtype=cupy.float32)
    group.allreduce_device(buf)
    cupy.cuda.get_current_stream().synchronize()
    return {"available": True, "sum_unchanged": bool((buf.get() == np.arange(1000)).all())}
