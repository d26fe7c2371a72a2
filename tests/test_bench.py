"""The benchmark code cannot rot: ``xptrain bench --quick`` produces every section of its
report, and its parts compute what they claim (the pytest-benchmark suite is
tests/benchmarks, run once per test in the unit suite)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from xptrain.bench.timing import interleaved, summary
from xptrain.bench.training import flops_per_sample

ROOT = Path(__file__).resolve().parent.parent


def test_flops_per_sample_matches_hand_count():
    # 784-128-10: forward 2*(784*128 + 128*10), backward twice that less x-grad of layer 1
    assert flops_per_sample([784, 128, 10]) == 409_088
    assert flops_per_sample([4, 3]) == 2 * 2 * 4 * 3


def test_runner_flops_leave_out_skipped_columns(cpu):
    from test_zero_columns import bordered_dataset
    from xptrain.bench.training import EngineRunner

    data = bordered_dataset(n_train=64)  # 40 columns with blank borders, 4 batches of 16
    skip = EngineRunner(data, cpu, "fused", hidden=(8,), batch_size=16, zero_columns="skip")
    dense = EngineRunner(data, cpu, "fused", hidden=(8,), batch_size=16, zero_columns="read")
    assert (skip.name, dense.name) == ("numpy-fused-skip", "numpy-fused-dense")
    order = skip.trainer.batches.order(0)
    widths = []
    for s in range(0, 64, 16):
        nz = np.flatnonzero(data.x_train[order[s:s + 16]].any(axis=0))
        widths.append(nz[-1] + 1 - nz[0])
    assert min(widths) < 40 and skip.mean_window == pytest.approx(np.mean(widths))
    # forward x @ W1 and the weight gradient x.T @ gy over the window, 8 outputs each
    skipped = 2 * 2 * 8 * sum(40 - w for w in widths) / len(widths)
    assert skip.flops_per_sample() == pytest.approx(flops_per_sample([40, 8, 10]) - skipped)
    assert dense.flops_per_sample() == flops_per_sample([40, 8, 10])


def test_summary_and_interleaving_order():
    calls = []
    out = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                      rounds=2, warmup=1)
    assert calls == ["a", "b"] * 3 and len(out["a"]) == 2
    calls.clear()
    interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                rounds=3, warmup=0, alternate=True)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    s = summary([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s["median"] == 3.0 and s["min"] == 1.0 and s["spread"] > 0


def test_xptrain_bench_quick(tmp_path, mnist_dir):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "xptrain", "bench", "--quick", "--repeats", "1",
                           "--data-dir", str(mnist_dir), "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    configs = {r["config"] for r in results["throughput"]}
    assert {"numpy-reference", "numpy-fused", "numpy-fused-dense"} <= configs
    for row in results["throughput"]:
        assert row["train_samples_per_second"] > 0 and row["infer_samples_per_second"] > 0
    for peer, module in (("torch-eager-cpu", "torch"), ("sklearn-mlp", "sklearn")):
        present = peer in configs
        absent = any(a.startswith(peer.rsplit("-", 1)[0]) for a in results["absent"])
        assert present != absent, (peer, module)
    flops = {r["config"]: r["flops_per_sample"] for r in results["roofline"]}
    assert flops["numpy-fused-dense"] == flops.get("torch-eager-cpu", 409_088) == 409_088
    # MNIST's blank border: the skipping configs do ~7% fewer FLOPs (a 709 of 784 window)
    assert 0.85 * 409_088 < flops["numpy-fused"] == flops["numpy-reference"] < 0.97 * 409_088
    assert results["environment"]["threads"]["threads"] >= 1
    assert {r["batch"] for r in results["scaling"]["batch"]} == {32, 128, 1024}
    assert "Throughput" in proc.stdout and "Scaling" in proc.stdout


def test_plot_needs_matplotlib_or_writes_png(tmp_path):
    from xptrain.bench.report import plot_scaling

    rows = {"batch": [{"config": "a", "batch": 32, "samples_per_second": 10.0},
                      {"config": "a", "batch": 64, "samples_per_second": 20.0}],
            "hidden": [{"config": "a", "hidden": 128, "samples_per_second": 5.0}]}
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(SystemExit, match="pip install"):
            plot_scaling(tmp_path / "p.png", rows)
        return
    plot_scaling(tmp_path / "p.png", rows)
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gpu_check_without_gpu_says_so(tmp_path):
    from xptrain.backend import probe_cuda

    if probe_cuda()[0] is not None:
        pytest.skip("a GPU is usable here: run bench.gpu_check itself")
    proc = subprocess.run([sys.executable, "-m", "xptrain.bench.gpu_check", "--json",
                           str(tmp_path / "g.json")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "no usable GPU" in proc.stdout


def test_gpu_check_training_run_on_cpu(tiny_data, cpu):
    from xptrain.bench.gpu_check import train_run
    from xptrain.metrics import accuracy
    from xptrain.train import TrainConfig, Trainer

    run = train_run(tiny_data, "cpu", epochs=2, hidden=(16,), batch_size=32)
    t = Trainer(TrainConfig(epochs=2, hidden=(16,), batch_size=32), tiny_data, cpu,
                log=lambda s: None)
    loss, conf = t.evaluate(t.data.x_test, t.data.y_test)
    # the first step's loss is the untrained model's loss on the first 32 rows
    first = t.evaluate(t.data.x_train[:32], t.data.y_train[:32])[0]
    assert run["first_step_loss"] == pytest.approx(first, rel=1e-5)
    t.fit()
    assert run["device"] == "cpu" and run["test_accuracy"] == accuracy(
        t.evaluate(t.data.x_test, t.data.y_test)[1])
    assert len(run["epoch_seconds"]) == 2 and run["tf32"] is False


def test_cnn_comparison_and_profiles(tiny_data):
    """Interleaved blocks of the CNN beside PyTorch (when installed): a ratio that is the
    step times' quotient; the engine's profile names every layer's forward and backward,
    sums to no more than the step, and leaves the trainer unwrapped afterwards."""
    from xptrain.bench import cnn

    rs = cnn.runners(tiny_data)
    rows = cnn.compare(rs, rounds=2, steps=2, epochs=1, whole_epochs=1)
    engine = rows["xptrain"]
    assert engine["step_ms"] > 0 and len(engine["epochs"]) == len(engine["whole_epochs"]) == 1
    # an epoch by blocks is every step of an epoch: about a whole epoch's time
    assert 0.2 < engine["epoch_s"] / engine["whole_epoch_s"] < 5
    if "torch-eager" in rows:
        peer = rows["torch-eager"]
        assert engine["vs_torch_steps"] == pytest.approx(peer["step_ms"] / engine["step_ms"])
        assert engine["vs_torch_epoch"] == pytest.approx(peer["epoch_s"] / engine["epoch_s"])
        torch_profile = cnn.profile_torch(rs["torch-eager"], 3)
        assert any("conv" in key for key in torch_profile)
    t = rs["xptrain"].trainer
    loss_fn = t.loss_fn
    profile = cnn.profile_engine(rs["xptrain"], 3)
    layers = [f"{i} {type(layer).__name__}" for i, layer in enumerate(t.model.layers)]
    assert {f"{name} forward" for name in layers} <= set(profile)
    assert "1 ConvPool backward" in profile and "optimizer" in profile
    parts = sum(v for k, v in profile.items() if k != "step (total)")
    assert 0 < parts <= profile["step (total)"] * 1.01
    assert "forward" not in vars(t.model.layers[1]) and t.loss_fn is loss_fn


def test_cnn_kernel_rows_time_both_twins():
    from xptrain.bench import cnn

    rows = cnn.kernel_rows(rounds=1)
    assert [r["kernel"] for r in rows] == list(cnn.kernel_cases(np.random.default_rng(0)))
    for r in rows:
        assert r["numba_ms"] > 0 and r["speedup"] == pytest.approx(r["reference_ms"]
                                                                   / r["numba_ms"])


def test_fusion_runners_remove_one_fusion_each_and_train_alike(tiny_data, cpu):
    """bench.fusions: each runner lacks exactly its fusion, and a fusion changes no result:
    after an epoch each pair with and without it holds the same parameters."""
    from xptrain.bench.fusions import runners
    from xptrain.kernels import blas

    # 784 x 24 = 18,816 weights: above the size where a fold pays
    model = dict(hidden=(24,), activation="sigmoid", optimizer="sgd", lr=0.1, batch_size=32)
    rs = runners(tiny_data, cpu, model)
    fold = {k: r.trainer.optimizer.fold is not None for k, r in rs.items()}
    can = blas.FOUND is not None
    assert fold == {"all fusions": can, "no column window": can, "no fold": False,
                    "no bias+activation": can, "momentum": can, "momentum, no fold": False}
    kinds = {k: [type(layer).__name__ for layer in r.trainer.model.layers]
             for k, r in rs.items()}
    assert kinds["all fusions"] == ["WindowedDense", "Linear"]
    assert kinds["no column window"] == ["Dense", "Linear"]
    assert kinds["no bias+activation"] == ["WindowedLinear", "Activation", "Linear"]
    for r in rs.values():
        r.train_epoch()
    params = {k: r.trainer.model.params for k, r in rs.items()}
    for other in ("no column window", "no fold", "no bias+activation"):
        np.testing.assert_allclose(params[other], params["all fusions"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(params["momentum, no fold"], params["momentum"], rtol=1e-4,
                               atol=1e-6)
    assert np.abs(params["momentum"] - params["all fusions"]).max() > 1e-3


def test_against_tree_names_a_folder_that_is_not_an_old_tree(tmp_path):
    """bench.against_tree needs a checkout with top-level engine/kernels/bench packages."""
    (tmp_path / "engine").mkdir()
    proc = subprocess.run([sys.executable, "-m", "xptrain.bench.against_tree", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert f"{tmp_path.resolve()} has no kernels, bench package folder" in proc.stderr
