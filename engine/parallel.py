"""Data-parallel training over MPI (mpi4py; the ``mpi`` extra).

``mpiexec -n N xptrain train ...`` runs N ranks. Every rank loads the data, builds the same
model and walks the same global batches; each computes the gradient of its contiguous
slice of a batch (a slice may be empty), and one all-reduce per step of one host buffer
holding the summed gradients, the summed loss, the row count and a stop flag gives every
rank the same mean gradient, so every rank applies the same update. Initial parameters
are broadcast from rank 0 and verified. Outside MPI (no ``mpiexec`` in the environment)
nothing here imports mpi4py.

A peer that does not join a collective within ``XPTRAIN_PEER_TIMEOUT`` seconds (default
300) ends the whole job with an error naming the waiting rank (a watchdog thread: the
collectives themselves stay MPI's blocking ones, the fastest wait).
"""

import contextlib
import hashlib
import os
import sys
import threading
import time

import numpy as np

from .errors import UserError

# variables the MPI launchers set in every rank's environment (MPICH's Hydra, Open MPI, PMIx)
MPI_ENV = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK")
INSTALL = 'data-parallel training needs mpi4py and an MPI: pip install "xptrain[mpi]"'
ABORT_GRACE_S = 1.0  # for the launcher to forward the last lines before MPI_Abort


def launched_by_mpi():
    return any(name in os.environ for name in MPI_ENV)


class Single:
    """One process: every collective is the identity."""

    rank, size, local_rank, local_size = 0, 1, 0, 1

    def allreduce(self, buf):
        return buf

    def bcast(self, buf):
        return buf

    def allgather(self, value):
        return [value]

    def abort(self, code):
        pass


class MPIGroup:
    """COMM_WORLD through mpi4py; collectives on host (NumPy) buffers, in place."""

    def __init__(self, timeout=None):
        try:
            from mpi4py import MPI
        except (ImportError, RuntimeError) as exc:  # RuntimeError: no MPI library found
            raise UserError(f"{INSTALL} ({type(exc).__name__}: {exc})") from None
        self.MPI, self.comm = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        self.timeout = float(timeout or os.environ.get("XPTRAIN_PEER_TIMEOUT", 300))
        self._deadline, self._watchdog = None, None

    def allreduce(self, buf):
        """Sum ``buf`` (contiguous NumPy) over the ranks, in place."""
        with self._watch("all-reduce"):
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf

    def bcast(self, buf):
        """``buf`` from rank 0, in place."""
        with self._watch("broadcast"):
            self.comm.Bcast(buf, root=0)
        return buf

    def allgather(self, value):
        with self._watch("all-gather"):
            return self.comm.allgather(value)

    def abort(self, code):
        """End every rank of the job. What this rank printed is flushed and given a moment
        to pass through the launcher first: mpiexec's forwarder drops lines still in
        flight when MPI_Abort tears the job down (seen with MPICH's hydra under load)."""
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        time.sleep(ABORT_GRACE_S)
        self.comm.Abort(code)

    @contextlib.contextmanager
    def _watch(self, what):
        """The blocking collective (MPI's own fast wait) under a deadline: a watchdog
        thread ends the job, naming this rank, if it has not returned in time."""
        self._deadline = (time.monotonic() + self.timeout, what)
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch_loop, daemon=True)
            self._watchdog.start()
        try:
            yield
        finally:
            self._deadline = None

    def _watch_loop(self):
        while True:
            time.sleep(min(1.0, self.timeout / 10))
            pending = self._deadline
            if pending is not None and time.monotonic() > pending[0]:
                print(f"xptrain: error: rank {self.rank} of {self.size}: a peer did not join "
                      f"the {pending[1]} within {self.timeout:g} s (XPTRAIN_PEER_TIMEOUT); "
                      "ending the job", file=sys.stderr, flush=True)
                self.abort(1)


_group = []


def group():
    """The process group: MPI when launched by mpiexec with more than one rank, else
    :class:`Single`; made once."""
    if not _group:
        made = MPIGroup() if launched_by_mpi() else Single()
        _group.append(made if made.size > 1 else Single())
        if made.size > 1:
            _share_cores(made)
    return _group[0]


def _share_cores(g):
    """BLAS threads per rank so that the ranks of one host do not oversubscribe it."""
    from .kernels import blas

    blas.set_threads(max(1, (os.cpu_count() or 1) // g.local_size))


def my_rows(n, g):
    """The contiguous slice ``[lo, hi)`` of ``n`` rows that rank ``g.rank`` takes."""
    chunk = -(-n // g.size)
    lo = min(g.rank * chunk, n)
    return lo, min(lo + chunk, n)


def broadcast_parameters(model, g):
    """Rank 0's parameters on every rank, checked by count and SHA-256."""
    from .backend import to_host

    host = np.ascontiguousarray(to_host(model.params))
    g.bcast(host)
    model.params[...] = model.xp.asarray(host)
    mine = (int(host.size), hashlib.sha256(host.tobytes()).hexdigest())
    seen = g.allgather(mine)
    if any(s != seen[0] for s in seen):
        raise RuntimeError(f"rank {g.rank}: parameters differ across ranks after the "
                           f"broadcast: {seen}")


class GradientReduce:
    """The step's one all-reduce: [summed gradients, summed loss, rows, stop flag], in the
    model's dtype (float32: half the bytes of float64, within float32 summation
    tolerance of one rank's sums)."""

    def __init__(self, model, g):
        self.model, self.g = model, g
        self.buf = np.zeros(model.n_params + 3, model.dtype)
        self.seconds, self.calls = 0.0, 0  # spent in the all-reduce itself

    def __call__(self, n_rows, mean_loss, stop):
        """Turn this rank's mean gradient over ``n_rows`` rows into the global mean
        (``mean_loss``: its mean loss, a number or a 0-d array); return (the global mean
        loss, whether any rank asked to stop)."""
        from .backend import to_host

        m, n, buf = self.model, self.model.n_params, self.buf
        grads = m.grads if m.xp is np else to_host(m.grads)  # MPI takes host buffers
        np.multiply(grads, buf.dtype.type(n_rows), out=buf[:n])
        buf[n:] = float(mean_loss) * n_rows, n_rows, float(stop)
        start = time.perf_counter()
        self.g.allreduce(buf)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        total = buf[n + 1]
        if m.xp is np:
            np.divide(buf[:n], total, out=m.grads)
        else:
            m.grads[...] = m.xp.asarray(buf[:n] / total)
        return float(buf[n]) / float(total), buf[n + 2] > 0


def current():
    """The group if one was made, else :class:`Single` (never imports mpi4py)."""
    return _group[0] if _group else Single()


def relaunch(n, argv):
    """Run ``xptrain`` with ``argv`` under ``n`` ranks of the mpiexec beside this Python
    (the ``mpi`` extra's) or on PATH; return its exit status."""
    import shutil
    import subprocess

    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    mpiexec = here if os.access(here, os.X_OK) else shutil.which("mpiexec")
    if mpiexec is None:
        raise UserError(f"--workers needs an mpiexec: {INSTALL}")
    threads = str(max(1, (os.cpu_count() or 1) // n))
    env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads,
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return subprocess.call([mpiexec, "-n", str(n), sys.executable, "-m", "xptrain", *argv],
                           env=env)


class NcclGroup:
    """GPU ranks: the step's gradient buffer is summed by NCCL on the device, on CuPy's
    current stream (no host sync); MPI carries only NCCL's unique id and small host values.
    Each rank uses the GPU of its local rank. ``cupy`` and ``nccl`` are the modules (a
    stand-in in tests)."""

    def __init__(self, mpi_group, cupy, nccl):
        self.mpi, self.cupy, self.nccl = mpi_group, cupy, nccl
        self.rank, self.size = mpi_group.rank, mpi_group.size
        self.local_rank, self.local_size = mpi_group.local_rank, mpi_group.local_size
        cupy.cuda.Device(self.local_rank).use()  # before any allocation on this rank
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = mpi_group.comm.bcast(uid, root=0)
        self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)

    def allreduce_device(self, buf):
        """Sum the contiguous CuPy array ``buf`` over the ranks, in place, queued on the
        current stream."""
        dtype = {4: self.nccl.NCCL_FLOAT32, 8: self.nccl.NCCL_FLOAT64}[buf.itemsize]
        stream = self.cupy.cuda.get_current_stream().ptr
        self.comm.allReduce(buf.data.ptr, buf.data.ptr, buf.size, dtype, self.nccl.NCCL_SUM,
                            stream)
        return buf

    def allreduce(self, buf):
        return self.mpi.allreduce(buf)

    def bcast(self, buf):
        return self.mpi.bcast(buf)

    def allgather(self, value):
        return self.mpi.allgather(value)

    def abort(self, code):
        self.mpi.abort(code)


def for_device(g, backend):
    """The group a trainer on ``backend`` uses: on CUDA with several ranks, NCCL where
    CuPy has it (else the host copies over MPI)."""
    if g.size == 1 or backend.name != "cuda":
        return g
    try:
        from cupy.cuda import nccl
    except ImportError:  # a CuPy built without NCCL
        return g
    if not getattr(nccl, "available", False):
        return g
    return NcclGroup(g, backend.xp, nccl)


class DeviceGradientReduce:
    """:class:`GradientReduce` for device arrays with a device all-reduce (NCCL): the
    buffer [gradients x rows, loss x rows, rows] stays on the device, and the stop flag
    goes through a one-number host all-reduce, so a step reads nothing back."""

    def __init__(self, model, g):
        self.model, self.g = model, g
        self.buf = model.xp.zeros(model.n_params + 2, model.dtype)
        self.flag = np.zeros(1, np.float64)
        self.seconds, self.calls = 0.0, 0  # time to queue the all-reduce (it is async)

    def __call__(self, n_rows, loss, stop):
        """``loss``: this rank's mean loss as a 0-d device array (or 0 without rows);
        returns (the global mean loss as a 0-d device array, whether any rank stops)."""
        m, n, buf, xp = self.model, self.model.n_params, self.buf, self.model.xp
        xp.multiply(m.grads, m.dtype.type(n_rows), out=buf[:n])
        buf[n] = loss * m.dtype.type(n_rows) if n_rows else 0
        buf[n + 1] = n_rows
        start = time.perf_counter()
        self.g.allreduce_device(buf)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        xp.divide(buf[:n], buf[n + 1], out=m.grads)
        self.flag[0] = float(stop)
        self.g.allreduce(self.flag)
        return buf[n] / buf[n + 1], self.flag[0] > 0


def reducer(model, g):
    """The step's all-reduce for ``model`` in group ``g``: on the device where the group
    reduces device buffers (NCCL), else through a host buffer over MPI."""
    if hasattr(g, "allreduce_device"):
        return DeviceGradientReduce(model, g)
    return GradientReduce(model, g)
