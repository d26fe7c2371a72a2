"""Data-parallel throughput on this host: ``python -m xptrain.bench.workers [--workers 1,2]
[--batches 128,1024] [--rounds 2] [--data-dir DIR]``.

Each configuration is the real ``xptrain train`` command under ``mpiexec -n N`` (1 rank
runs plain), the 784-128-10 sigmoid SGD model for 2 epochs, with the cores split between
the ranks (N ranks x cores/N BLAS threads); the second epoch is timed. Rounds interleave
the configurations. Prints JSON rows: samples/s, the all-reduce time per step, and the
ratio to 1 rank at the same batch.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

MODEL = ["--hidden", "128", "--activation", "sigmoid", "--optimizer", "sgd", "--momentum",
         "0", "--lr", "0.1", "--schedule", "constant", "--epochs", "2"]


def run_one(batch, ranks, data_dir):
    threads = str(max(1, (os.cpu_count() or 1) // ranks))
    env = dict(os.environ, OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads)
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "xptrain", "train", "--device", "cpu", "--batch-size",
               str(batch), "--out", out, "--json", *MODEL]
        if data_dir:
            cmd += ["--data-dir", data_dir]
        if ranks > 1:
            cmd = [os.path.join(os.path.dirname(sys.executable), "mpiexec"), "-n", str(ranks),
                   *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    result = json.loads(proc.stdout)
    epoch = result["history"][-1]
    return {"samples_per_second": epoch["samples_per_second"],
            "allreduce_ms_per_step": 1e3 * (result["allreduce_seconds_per_step"] or 0.0)}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m xptrain.bench.workers")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--batches", default="128,1024")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--data-dir")
    args = p.parse_args(argv)
    configs = [(int(b), int(n)) for b in args.batches.split(",")
               for n in args.workers.split(",")]
    runs = {c: [] for c in configs}
    for _ in range(args.rounds):
        for c in configs:
            runs[c].append(run_one(*c, args.data_dir))
    rows = []
    for (batch, ranks), rs in runs.items():
        rate = statistics.median(r["samples_per_second"] for r in rs)
        ar = statistics.median(r["allreduce_ms_per_step"] for r in rs)
        rows.append({"batch": batch, "ranks": ranks,
                     "threads_per_rank": max(1, (os.cpu_count() or 1) // ranks),
                     "samples_per_second": round(rate), "allreduce_ms_per_step": round(ar, 3)})
    for row in rows:
        base = next(r for r in rows if r["batch"] == row["batch"] and r["ranks"] == 1)
        row["vs_1_rank"] = round(row["samples_per_second"] / base["samples_per_second"], 3)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
