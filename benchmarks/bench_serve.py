"""Serving benchmark: batch-1 requests/s and p50/p99 latency of `deploykit serve` against a
minimal hand-written Flask + onnxruntime app on the same ONNX model, same WSGI server
(waitress, 4 threads), same client, in the same run, alternating rounds.

    .venv/bin/python benchmarks/bench_serve.py [--requests 2000] [--clients 4] [--rounds 3]

Also reports start-up to first answer of an ONNX-only bundle.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

import deploykit

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int) -> tuple[subprocess.Popen, float]:
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/predict"
    while True:
        try:
            r = requests.post(url, json={"instances": [[0.0] * 64]}, timeout=1)
            if r.ok:
                return proc, time.perf_counter() - t
        except requests.ConnectionError:
            time.sleep(0.02)
        if time.perf_counter() - t > 60:
            proc.kill()
            raise RuntimeError(f"{cmd} did not start")


def load(url: str, rows: np.ndarray, n: int, clients: int) -> tuple[float, list[float]]:
    lat: list[float] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        s = requests.Session()
        mine = []
        for i in range(k, n, clients):
            body = {"instances": rows[i % len(rows)][None].tolist()}
            t = time.perf_counter()
            r = s.post(url, json=body)
            mine.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
        with lock:
            lat.extend(mine)

    start_t = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return n / (time.perf_counter() - start_t), lat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        deploykit.train("sklearn", "digits", f"{tmp}/m", quiet=True)
        bundle = deploykit.export(f"{tmp}/m", ["onnx"], out=f"{tmp}/b", quiet=True).bundle
        onnx = bundle / deploykit.load_bundle(bundle).artifact("onnx").path
        rows = deploykit.load_bundle(bundle).probe().inputs["x"]
        apps = {
            "deploykit serve": lambda p: [sys.executable, "-m", "deploykit", "serve", str(bundle),
                                          "--port", str(p), "--threads", "4"],
            "Flask+onnxruntime": lambda p: [sys.executable, str(HERE / "baseline_app.py"),
                                            str(onnx), str(p)],
        }
        results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in apps}
        startup = []
        for _ in range(args.rounds):
            for name, cmd in apps.items():
                port = free_port()
                proc, up = start(cmd(port), port)
                if name == "deploykit serve":
                    startup.append(up)
                try:
                    rps, lat = load(f"http://127.0.0.1:{port}/predict", rows, args.requests,
                                    args.clients)
                finally:
                    proc.terminate()
                    proc.wait()
                q = np.percentile(np.array(lat) * 1000, [50, 99])
                results[name].append((rps, q[0], q[1]))
                print(f"{name:20s} {rps:8.1f} req/s  p50 {q[0]:6.2f} ms  p99 {q[1]:6.2f} ms",
                      flush=True)
    print(f"\nmedian of {args.rounds} rounds, {args.requests} batch-1 requests, "
          f"{args.clients} clients:")
    med = {k: [statistics.median(col) for col in zip(*v, strict=True)] for k, v in
           results.items()}
    for k, (rps, p50, p99) in med.items():
        print(f"{k:20s} {rps:8.1f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms")
    ratio = med["deploykit serve"][0] / med["Flask+onnxruntime"][0]
    print(f"throughput ratio deploykit/baseline: {ratio:.2f}x")
    print(f"deploykit start-up to first answer (process start, ONNX-only bundle): "
          f"median {statistics.median(startup):.2f} s")


if __name__ == "__main__":
    main()
