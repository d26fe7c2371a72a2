"""Data-parallel training: real multi-process jobs under mpiexec (2 and 3 ranks, more ranks
than cores), started from a subprocess with a timeout so a hang fails instead of stalling.
They skip with the reason where mpi4py cannot load an MPI library."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

TESTS = Path(__file__).resolve().parent
HERE = os.path.join(os.path.dirname(sys.executable), "mpiexec")
MPIEXEC = HERE if os.access(HERE, os.X_OK) else None


def _mpi_missing():
    if MPIEXEC is None:
        return "no mpiexec beside this Python (pip install '.[mpi]')"
    proc = subprocess.run([sys.executable, "-c", "from mpi4py import MPI"],
                          capture_output=True, text=True, timeout=60)
    return None if proc.returncode == 0 else f"mpi4py cannot load MPI: {proc.stderr[-300:]}"


WHY = _mpi_missing()
pytestmark = pytest.mark.skipif(WHY is not None, reason=str(WHY))

STEPS = """
import sys
import numpy as np
sys.path.insert(0, {tests!r})
from datasets import make_digits
from xptrain import Dataset, TrainConfig, Trainer, select_backend
from xptrain.backend import to_host

x, y = make_digits(66 + 20, seed=4)
x = x.reshape(len(x), -1)
data = Dataset(x[:66], y[:66].astype(np.int64), x[66:], y[66:].astype(np.int64), "t", False)
t = Trainer(TrainConfig(**{config!r}), data, select_backend("cpu"), log=lambda s: None)
out = []
for epoch in range(2):
    for s, idx, labels in t.batches.epoch(epoch):  # 32, 32 and 2 rows: a rank may get none
        t.step(idx, labels, t.config.lr, t.batches.step_key(epoch, s))
        out.append(to_host(t.model.params).copy())
if t.group.rank == 0:
    np.save({out!r}, np.array(out))
"""


def run(argv, ranks=None, timeout=180, env=None):
    cmd = ([MPIEXEC, "-n", str(ranks)] if ranks else []) + argv
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


def steps_of(tmp_path, config, ranks):
    out = tmp_path / f"steps{ranks}.npy"
    script = tmp_path / f"steps{ranks}.py"
    script.write_text(STEPS.format(tests=str(TESTS), config=config, out=str(out)))
    proc = run([sys.executable, str(script)], ranks if ranks > 1 else None)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.load(out)


@pytest.mark.parametrize("config", [
    dict(optimizer="sgd", momentum=0.9, lr=0.05, hidden=(16,), batch_size=32,
         schedule="constant"),
    dict(optimizer="adam", lr=2e-3, hidden=(12, 8), batch_size=32, dropout=0.3),
    dict(optimizer="adam", lr=2e-3, hidden=(12,), batch_size=32, augment=True, elastic=1.0),
    # 784 x 128 weights: one rank folds the momentum step into the gradient product, N
    # ranks reduce the gradient first and update apart
    dict(optimizer="sgd", momentum=0.9, lr=0.05, hidden=(128,), batch_size=32,
         schedule="constant"),
])
def test_two_and_three_ranks_follow_one_rank(tmp_path, config):
    """After each of 6 steps (an uneven last batch of 2 rows: with 3 ranks one gets none)
    the parameters of 2 and 3 ranks equal one rank's to float32 summation tolerance;
    dropout masks and augmentation warps are the same rows of one batch's draws."""
    one = steps_of(tmp_path, config, 1)
    assert one.shape[0] == 6 and not np.allclose(one[0], one[-1])
    for ranks in (2, 3):
        np.testing.assert_allclose(steps_of(tmp_path, config, ranks), one, rtol=1e-5,
                                   atol=1e-6)


def _train(tmp_path, name, ranks, *extra):
    data = tmp_path / "data"
    if not data.exists():
        sys.path.insert(0, str(TESTS))
        from datasets import write_dataset

        write_dataset(data, n_train=300, n_test=100)
    out = tmp_path / name
    proc = run([sys.executable, "-m", "xptrain", "train", "--device", "cpu", "--data-dir",
                str(data), "--batch-size", "32", "--hidden", "24", "--out", str(out),
                "--json", *extra], ranks)
    return proc, out


def test_cli_under_mpiexec_matches_one_rank(tmp_path):
    single, _ = _train(tmp_path, "one", None, "--epochs", "2")
    double, out = _train(tmp_path, "two", 2, "--epochs", "2")
    assert single.returncode == double.returncode == 0, double.stderr[-2000:]
    a, b = json.loads(single.stdout), json.loads(double.stdout)  # one JSON object each
    assert len(double.stdout.strip().splitlines()) == 1 and b["ranks"] == 2
    assert abs(a["test_accuracy"] - b["test_accuracy"]) <= 0.002
    assert b["test_loss"] == pytest.approx(a["test_loss"], rel=0.02)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.npz", "history.json"]
    assert double.stderr.count("epoch   2/2") == 1  # logs from rank 0 only


def test_workers_shortcut_runs_the_same_job(tmp_path):
    proc, _ = _train(tmp_path, "w", None, "--epochs", "1", "--workers", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["ranks"] == 2


def test_a_checkpoint_of_two_ranks_resumes_on_one(tmp_path):
    from xptrain import checkpoint

    full, full_out = _train(tmp_path, "full", None, "--epochs", "2", "--schedule", "constant")
    half, half_out = _train(tmp_path, "half", 2, "--epochs", "1", "--schedule", "constant")
    assert full.returncode == half.returncode == 0, half.stderr[-2000:]
    resumed = run([sys.executable, "-m", "xptrain", "train", "--device", "cpu", "--data-dir",
                   str(tmp_path / "data"), "--resume", str(half_out / "checkpoint.npz"),
                   "--epochs", "2", "--json"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    p_full = checkpoint.load(full_out / "checkpoint.npz")[0]
    p_res = checkpoint.load(half_out / "checkpoint.npz")[0]
    for key in p_full:
        np.testing.assert_allclose(p_res[key], p_full[key], rtol=1e-5, atol=1e-6)


FAIL_ON_RANK_1 = """
import sys
from xptrain import cli, parallel, train

fit = train.Trainer.fit
def fit_or_fail(self):
    if parallel.group().rank == 1:
        raise RuntimeError("simulated failure on rank 1")
    return fit(self)
train.Trainer.fit = fit_or_fail
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_rank_that_raises_ends_the_job(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(FAIL_ON_RANK_1)
    _train(tmp_path, "prep", None, "--epochs", "1")  # writes the data set
    start = time.monotonic()
    proc = run([sys.executable, str(script), "train", "--device", "cpu", "--data-dir",
                str(tmp_path / "data"), "--epochs", "500", "--hidden", "24"], 2, timeout=60)
    assert proc.returncode != 0 and time.monotonic() - start < 30
    assert "simulated failure on rank 1" in proc.stderr


def test_a_stalled_peer_times_out_naming_the_rank(tmp_path):
    script = tmp_path / "stall.py"
    script.write_text("""
import sys, time
from xptrain import cli, parallel
if parallel.group().rank == 1:
    time.sleep(60)  # never joins the start-up broadcast in time
sys.exit(cli.main(sys.argv[1:]))
""")
    _train(tmp_path, "prep", None, "--epochs", "1")
    start = time.monotonic()
    proc = run([sys.executable, str(script), "train", "--device", "cpu", "--data-dir",
                str(tmp_path / "data"), "--epochs", "1"], 2, timeout=60,
               env={"XPTRAIN_PEER_TIMEOUT": "3"})
    assert proc.returncode != 0 and time.monotonic() - start < 30
    assert "rank 0 of 2: a peer did not join the broadcast within 3 s" in proc.stderr


def _rank_pids(rank):
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            cmd = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if b"xptrain" in cmd and f"PMI_RANK={rank}".encode() in env:
            pids.append(int(entry.name))
    return pids


def test_a_killed_rank_ends_the_job_within_seconds(tmp_path):
    _train(tmp_path, "prep", None, "--epochs", "1")
    job = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, "-m", "xptrain", "train",
                            "--device", "cpu", "--data-dir", str(tmp_path / "data"),
                            "--epochs", "2000", "--hidden", "24", "--out",
                            str(tmp_path / "long")], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "long" / "checkpoint.npz").exists():  # mid-training
            assert time.monotonic() < deadline and job.poll() is None
            time.sleep(0.2)
        victims = _rank_pids(1)
        assert victims
        os.kill(victims[0], signal.SIGKILL)
        start = time.monotonic()
        code = job.wait(timeout=30)
        assert code != 0 and time.monotonic() - start < 10
    finally:
        job.kill()


STAND_IN = """
import sys
import numpy as np
sys.path.insert(0, {tests!r})
from datasets import make_digits
from xptrain import Dataset, TrainConfig, Trainer, parallel, select_backend
from xptrain.backend import to_host


class StandIn:
    '''A device-reducing group (as NCCL is) whose "device" arrays are NumPy's, summed over
    MPI: the step's control flow of the GPU path, without a GPU.'''

    def __init__(self, g):
        self.g, self.rank, self.size = g, g.rank, g.size
        self.local_rank, self.local_size, self.device_calls = g.local_rank, g.local_size, 0

    def allreduce_device(self, buf):
        self.device_calls += 1
        return self.g.allreduce(buf)

    def __getattr__(self, name):
        return getattr(self.g, name)


x, y = make_digits(66 + 20, seed=4)
x = x.reshape(len(x), -1)
data = Dataset(x[:66], y[:66].astype(np.int64), x[66:], y[66:].astype(np.int64), "t", False)
group = StandIn(parallel.group())
t = Trainer(TrainConfig(**{config!r}), data, select_backend("cpu"), log=lambda s: None,
            group=group)
assert type(t.reduce).__name__ == "DeviceGradientReduce"
out = []
for epoch in range(2):
    for s, idx, labels in t.batches.epoch(epoch):
        t.step(idx, labels, t.config.lr, t.batches.step_key(epoch, s))
        out.append(to_host(t.model.params).copy())
assert group.device_calls == 6
if t.group.rank == 0:
    np.save({out!r}, np.array(out))
"""


def test_the_device_reduce_path_with_a_stand_in_communicator(tmp_path):
    """The GPU ranks' step (one device buffer all-reduced, the stop flag on the host) with
    NumPy standing in for the device: 2 ranks equal 1 rank after each step."""
    config = dict(optimizer="adam", lr=2e-3, hidden=(12, 8), batch_size=32, dropout=0.3)
    one = steps_of(tmp_path, config, 1)
    script = tmp_path / "stand_in.py"
    out = tmp_path / "stand_in.npy"
    script.write_text(STAND_IN.format(tests=str(TESTS), config=config, out=str(out)))
    proc = run([sys.executable, str(script)], 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_allclose(np.load(out), one, rtol=1e-5, atol=1e-6)


NCCL_SETUP = """
import json, sys, types
from xptrain import parallel

calls = []
cuda = types.SimpleNamespace(
    Device=lambda i: types.SimpleNamespace(use=lambda: calls.append(("device", i))),
    get_current_stream=lambda: types.SimpleNamespace(ptr=4242))
cupy = types.SimpleNamespace(cuda=cuda)


class Communicator:
    def __init__(self, size, uid, rank):
        calls.append(("communicator", size, uid, rank))

    def allReduce(self, *args):  # noqa: N802 - NCCL's name
        calls.append(("allReduce",) + args)


nccl = types.SimpleNamespace(get_unique_id=lambda: "uid-of-rank-0", NcclCommunicator=Communicator,
                             NCCL_FLOAT32=7, NCCL_FLOAT64=8, NCCL_SUM=0)
g = parallel.NcclGroup(parallel.group(), cupy, nccl)
buf = types.SimpleNamespace(data=types.SimpleNamespace(ptr=1000 + g.rank), size=5, itemsize=4)
g.allreduce_device(buf)
with open(f"{sys.argv[1]}/calls-{g.rank}.json", "w") as f:  # two ranks' stdout may interleave
    json.dump(calls, f)
"""


def test_nccl_group_exchanges_the_id_and_uses_the_local_gpu(tmp_path):
    """The NCCL set-up with stand-ins for CuPy and NCCL: each rank selects the GPU of its
    local rank first, every rank gets rank 0's unique id over MPI, and the all-reduce is
    queued on the current stream with the buffer's pointer, size and dtype."""
    script = tmp_path / "nccl.py"
    script.write_text(NCCL_SETUP)
    proc = run([sys.executable, str(script), str(tmp_path)], 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in range(2):
        calls = json.loads((tmp_path / f"calls-{rank}.json").read_text())
        assert calls[0] == ["device", rank]  # one host: local rank = rank
        assert calls[1] == ["communicator", 2, "uid-of-rank-0", rank]
        assert calls[2] == ["allReduce", 1000 + rank, 1000 + rank, 5, 7, 0, 4242]


def test_ctrl_c_to_mpiexec_saves_one_checkpoint(tmp_path):
    """SIGINT to mpiexec reaches every rank; they stop after the same step (the stop flag
    rides in the step's all-reduce), rank 0 saves once, the job exits 130."""
    from xptrain import checkpoint

    _train(tmp_path, "prep", None, "--epochs", "1")
    out = tmp_path / "stopped"
    job = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, "-m", "xptrain", "train",
                            "--device", "cpu", "--data-dir", str(tmp_path / "data"),
                            "--epochs", "2000", "--hidden", "24", "--out", str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "checkpoint.npz").exists():
            assert time.monotonic() < deadline and job.poll() is None
            time.sleep(0.2)
        time.sleep(0.5)
        job.send_signal(signal.SIGINT)
        _, err = job.communicate(timeout=30)
        assert job.returncode == 130, err[-2000:]
        assert err.count("interrupted at epoch") == 1 and "--resume" in err
        meta = checkpoint.load(out / "checkpoint.npz")[2]
        assert f"epoch {meta['epoch'] + 1}, step {meta['step_in_epoch']}/" in err
    finally:
        job.kill()
