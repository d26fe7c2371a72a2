"""Benchmarks: kernel timings, training steps, peers (PyTorch, scikit-learn), GPU check.

``xptrain bench`` (or ``python -m bench``) runs the throughput comparison; ``pytest bench/
--benchmark-only`` runs the pytest-benchmark suite; ``python -m bench.gpu_check`` is the one
command for a machine with a GPU.
"""
