"""Peak memory of one benchmark configuration, measured in a fresh process.

``python -m xptrain.bench.memory CONFIG [--threads N] [--data-dir DIR]`` prints the MiB one
epoch of CONFIG adds; :func:`peak_memory` runs it for ``xptrain bench``.
"""

import argparse
import subprocess
import sys


def peak_memory(config, argv):
    """Peak memory (MiB) one epoch of ``config`` adds, measured in a fresh process."""
    cmd = [sys.executable, "-m", "xptrain.bench.memory", config, *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    try:
        return float(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return None


def memory_probe(config, data, devices):
    """Print the peak resident memory (MiB) one epoch of ``config`` adds to the process
    (on CUDA: the device memory its allocator holds after the epoch).

    The baseline is taken after importing the libraries this config needs and loading the
    data; the kernel's high-water mark is reset there (Linux ``clear_refs``), so loading
    the data does not count.
    """
    if config.startswith("torch"):
        import torch  # noqa: F401 - part of the baseline, like NumPy for the others
    elif config.startswith("sklearn"):
        import sklearn.neural_network  # noqa: F401
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    base = _status_mib("VmRSS")
    from .harness import MODEL, device_of, make_runners

    runners, _ = make_runners(data, devices, MODEL, names={config})
    runners[config].train_epoch()
    if device_of(config) == "cuda":  # device memory: what the allocator holds after an epoch
        if config.startswith("torch"):
            import torch

            print(torch.cuda.max_memory_reserved() / 2**20)
        else:
            import cupy

            print(cupy.get_default_memory_pool().total_bytes() / 2**20)
        return
    print(max(_status_mib("VmHWM") - base, 0.0))


def _status_mib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise OSError(f"/proc/self/status has no {key}")



def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m xptrain.bench.memory")
    parser.add_argument("config")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)
    from ..data import load_mnist
    from .harness import device_of
    from .timing import set_threads

    set_threads(args.threads)
    data = load_mnist(args.data_dir, download=False, progress=False)
    memory_probe(args.config, data, ["cuda" if device_of(args.config) == "cuda" else "cpu"])


if __name__ == "__main__":
    main()
