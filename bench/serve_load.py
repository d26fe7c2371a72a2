"""Load on ``xptrain serve``: concurrent clients, per-request latency.

``python -m xptrain.bench.serve_load CHECKPOINT [--clients 8] [--requests 200]
[--body png|json] [--data-dir DIR]`` starts the server in its own process; each client
(a process of its own) sends its requests over one keep-alive connection (real test
digits: a 280 x 280 PNG as the page sends, or the JSON pixels); it prints the latency
percentiles, the errors and the request rate as JSON.
"""

import argparse
import http.client
import io
import json
import signal
import subprocess
import sys
import time

import numpy as np


def bodies(data, kind, n=16):
    """``n`` request bodies and their Content-Type, from the first test images."""
    if kind == "json":
        return [json.dumps({"pixels": (x / 255).round(4).tolist()}).encode()
                for x in data.x_test[:n]], "application/json"
    from PIL import Image

    out = []
    for x in data.x_test[:n]:
        buf = io.BytesIO()
        Image.fromarray(x.reshape(28, 28)).resize((280, 280)).save(buf, "PNG")
        out.append(buf.getvalue())
    return out, "image/png"


def _client(args):
    """One client: its requests over one keep-alive connection; (latencies, failures)."""
    port, payloads, ctype, k, requests = args
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies, failures = [], []
    for r in range(requests):
        body = payloads[(k + r) % len(payloads)]
        start = time.perf_counter()
        conn.request("POST", "/predict", body, {"Content-Type": ctype})
        resp = conn.getresponse()
        data = resp.read()
        latencies.append(time.perf_counter() - start)
        if resp.status != 200 or "top" not in json.loads(data):
            failures.append(resp.status)
    conn.close()
    return latencies, failures


def run_clients(port, payloads, ctype, clients, requests):
    """Latencies (seconds) of every request, the failures and the wall time: ``clients``
    processes at once (threads of one process would queue at its GIL, not at the server)."""
    from multiprocessing import Pool

    with Pool(clients) as pool:
        start = time.perf_counter()
        results = pool.map(_client, [(port, payloads, ctype, k, requests)
                                     for k in range(clients)])
        wall = time.perf_counter() - start
    return ([t for lat, _ in results for t in lat], [f for _, fl in results for f in fl],
            wall)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m xptrain.bench.serve_load")
    p.add_argument("checkpoint")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--body", choices=("png", "json"), default="png")
    p.add_argument("--data-dir")
    args = p.parse_args(argv)
    from ..data import load_mnist

    payloads, ctype = bodies(load_mnist(args.data_dir, download=False, progress=False),
                             args.body)
    server = subprocess.Popen([sys.executable, "-m", "xptrain", "serve", args.checkpoint,
                               "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline().split("http://127.0.0.1:")[1].split("/")[0])
        run_clients(port, payloads, ctype, 2, 10)  # warm-up
        lat, failures, wall = run_clients(port, payloads, ctype, args.clients, args.requests)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=10)
    ms = np.array(lat) * 1e3
    print(json.dumps({"clients": args.clients, "requests_per_client": args.requests,
                      "body": args.body, "errors": len(failures), "requests": len(lat),
                      "p50_ms": float(np.percentile(ms, 50)),
                      "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()),
                      "requests_per_second": len(lat) / wall}, indent=1))


if __name__ == "__main__":
    main()
