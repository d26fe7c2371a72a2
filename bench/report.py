"""Environment capture, the readable tables, the JSON file and the scaling plot."""

import datetime
import json
import os
import platform
from importlib import metadata

from ..checkpoint import write_json


def environment(backend, threads):
    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "python": platform.python_version(), "machine": platform.machine(),
           "cpu": _cpu_model(), "cores": os.cpu_count(), "threads": threads,
           "device": backend.describe()}
    for dist in ("numpy", "numba", "torch", "scikit-learn", "cupy-cuda12x", "cupy-cuda13x",
                 "numba-cuda", "xptrain"):
        try:
            env[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return env


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def add_ratio_to_peer(rows, rate, is_peer):
    """Set ``row["vs_torch"]`` = row[rate] / the rate of the row ``is_peer(row, other)`` picks
    (None where no peer ran)."""
    for row in rows:
        peer = next((r for r in rows if is_peer(row, r)), None)
        row["vs_torch"] = row[rate] / peer[rate] if peer else None
    return rows


def table(rows, columns):
    """A fixed-width text table; ``columns`` is [(key, header, format)]."""
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        cells.append([("-" if r.get(k) is None else fmt.format(r[k])) for k, _, fmt in columns])
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w)
                               for i, (c, w) in enumerate(zip(row, widths))) for row in cells)


def write_results(path, results):
    write_json(path, json.loads(json.dumps(results, default=float)))


def plot_scaling(path, scaling):
    """Throughput against batch size and hidden width per configuration, as one PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit('--plot needs matplotlib: pip install "xptrain[plot]"') from None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((axes[0], "batch", "batch size"), (axes[1], "hidden", "hidden width")):
        for config in sorted({r["config"] for r in scaling[key]}):
            pts = [r for r in scaling[key] if r["config"] == config]
            ax.plot([r[key] for r in pts], [r["samples_per_second"] for r in pts], "o-",
                    label=config)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("training samples/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    axes[0].set_title("throughput vs batch (hidden 128)")
    axes[1].set_title("throughput vs width (batch 128)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
