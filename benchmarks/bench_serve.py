"""Serving benchmark, all servers in one run, alternating rounds, loopback only:

* `deploykit serve BUNDLE --targets onnx` with 2 worker processes;
* the hand-written Flask + onnxruntime app (baseline_app.py) on gunicorn -w 2, tuned (one
  intra-op thread, spinning off) and untuned (onnxruntime's defaults);
* MLflow's `mlflow models serve` on the same ONNX model (--mlflow; installs MLflow into its
  own venv under test-artifacts/, a few minutes the first time).

Load: wrk (Debian's package; installed with apt if missing), 2 threads, 16 connections, batch-1
JSON rows of the digits probe set. Reports req/s, p50 and p99; then a soak: 64 connections for
60 s against deploykit's 2 workers, counting errors and the workers' resident memory growth.

    .venv/bin/python benchmarks/bench_serve.py [--bundle DIR] [--rounds 2] [--seconds 8]
                                               [--mlflow] [--batching] [--soak-seconds 60]

Without --bundle it trains the digits CNN along the torch flow and exports its ONNX artifact.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

import deploykit
from deploykit.serve.run import resident_mb

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
CACHE = HERE.parent / "test-artifacts" / "bench-venvs"
MLFLOW = "mlflow==3.17.2"  # 3.18.0 needs an mlflow-tracing the registry lacks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(proc: subprocess.Popen, url: str, body: dict, limit: float = 120) -> float:
    t = time.perf_counter()
    while time.perf_counter() - t < limit:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if requests.post(url, json=body, timeout=2).ok:
                return time.perf_counter() - t
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server at {url} did not answer in {limit} s")


def wrk(url: str, body: dict, seconds: int, connections: int, threads: int = 2) -> dict:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = {json.dumps(json.dumps(body))}\n")
    try:
        out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s",
                              "--latency", "-s", str(script), url], capture_output=True,
                             text=True, check=True).stdout
    finally:
        script.unlink()
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),
            "p50": _ms(re.search(r"50%\s+([\d.]+\w+)", out)[1]),
            "p99": _ms(re.search(r"99%\s+([\d.]+\w+)", out)[1]),
            "errors": _errors(out)}


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def _errors(out: str) -> int:
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return (int(non2xx[1]) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    print("installing wrk (Debian package)...", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                   stdout=subprocess.DEVNULL)


def mlflow_python() -> Path:
    """A venv holding MLflow (and onnxruntime), built once."""
    venv = CACHE / "mlflow"
    python, done = venv / "bin" / "python", venv / ".installed"
    if not done.exists():
        print(f"installing {MLFLOW} into {venv} (first run only)...", flush=True)
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", MLFLOW, "onnx",
                        "onnxruntime"], check=True)
        done.touch()
    return python


def mlflow_server(onnx: Path, tmp: Path) -> tuple[list[str], dict]:
    python = mlflow_python()
    model = tmp / "mlflow-model"
    if not model.exists():
        subprocess.run([str(python), "-c", "import mlflow.onnx, onnx, sys; mlflow.onnx."
                        "save_model(onnx.load(sys.argv[1]), sys.argv[2])", str(onnx),
                        str(model)], check=True, capture_output=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"file://{tmp / 'mlruns'}",
           "PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}"}  # it execs uvicorn
    return [str(python.with_name("mlflow")), "models", "serve", "-m", str(model), "--env-manager",
            "local", "-w", "2", "-h", "127.0.0.1", "-p", "{port}"], env


def servers(bundle: Path, onnx: Path, tmp: Path, with_mlflow: bool) -> dict[str, tuple]:
    """name -> (command with {port}, path, environment, body maker)."""
    gunicorn = str(VENV_BIN / "gunicorn")
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    instances = ("/predict", lambda row: {"instances": [row]})
    apps = {
        "deploykit serve --workers 2": (
            [str(VENV_BIN / "deploykit"), "serve", str(bundle), "--targets", "onnx",
             "--workers", "2", "--port", "{port}"], *instances, os.environ),
        "Flask+onnxruntime tuned, gunicorn -w 2": (
            [gunicorn, "-w", "2", "-b", "127.0.0.1:{port}", "--log-level", "warning",
             f"baseline_app:create({str(onnx)!r}, tuned=True)"], *instances, env),
        "Flask+onnxruntime untuned, gunicorn -w 2": (
            [gunicorn, "-w", "2", "-b", "127.0.0.1:{port}", "--log-level", "warning",
             f"baseline_app:create({str(onnx)!r}, tuned=False)"], *instances, env),
    }
    if with_mlflow:
        cmd, menv = mlflow_server(onnx, tmp)
        apps["mlflow models serve -w 2"] = (cmd, "/invocations",
                                            lambda row: {"inputs": [row]}, menv)
    return apps


def one_round(apps: dict, row: list, seconds: int, results: dict, startup: list) -> None:
    for name, (cmd, path, body_of, env) in apps.items():
        port = free_port()
        proc = subprocess.Popen([c.replace("{port}", str(port)) for c in cmd], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}{path}"
            up = wait_ready(proc, url, body_of(row))
            if name.startswith("deploykit"):
                startup.append(up)
            r = wrk(url, body_of(row), seconds, 16)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        results.setdefault(name, []).append(r)
        print(f"{name:42s} {r['rps']:8.0f} req/s  p50 {r['p50']:6.2f} ms  p99 "
              f"{r['p99']:6.2f} ms  errors {r['errors']}", flush=True)


def batching(bundle: Path, row: list, seconds: int) -> None:
    """Dynamic batching on and off, 64 connections (where coalescing has company)."""
    print("\ndynamic batching, 2 workers x 8 threads, wrk -c64:")
    for window in ("0", "1", "4"):
        port = free_port()
        proc = subprocess.Popen([str(VENV_BIN / "deploykit"), "serve", str(bundle), "--targets",
                                 "onnx", "--workers", "2", "--threads", "8",
                                 "--batch-window-ms", window, "--port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/predict"
        try:
            wait_ready(proc, url, {"instances": [row]})
            r = wrk(url, {"instances": [row]}, seconds, 64)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        print(f"--batch-window-ms {window:2s} {r['rps']:8.0f} req/s  p50 {r['p50']:6.2f} ms  "
              f"p99 {r['p99']:6.2f} ms  errors {r['errors']}", flush=True)


def soak(bundle: Path, row: list, seconds: int) -> None:
    port = free_port()
    proc = subprocess.Popen([str(VENV_BIN / "deploykit"), "serve", str(bundle), "--targets",
                             "onnx", "--workers", "2", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/predict"
    try:
        wait_ready(proc, url, {"instances": [row]})
        workers = _children(proc.pid)
        wrk(url, {"instances": [row]}, 5, 64)  # warm: caches and allocator arenas settle
        before = [resident_mb(p) for p in workers]
        r = wrk(url, {"instances": [row]}, seconds, 64)
        after = [resident_mb(p) for p in workers]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    growth = max((a - b) / b for a, b in zip(after, before, strict=True))
    print(f"\nsoak: 64 connections, {seconds} s, 2 workers: {r['rps']:.0f} req/s, "
          f"{r['errors']} errors, p99 {r['p99']:.2f} ms; worker memory "
          f"{', '.join(f'{b:.0f}→{a:.0f} MB' for b, a in zip(before, after, strict=True))} "
          f"(largest growth {growth * 100:+.1f} %, goal < 5 %)")


def _children(pid: int) -> list[int]:
    deadline = time.time() + 30
    while time.time() < deadline:
        kids = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        if len(kids) >= 2:
            return kids
        time.sleep(0.2)
    raise RuntimeError("the workers did not start")


def report(results: dict, startup: list, rounds: int) -> None:
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("rps", "p50", "p99")}
           for k, v in results.items()}
    print(f"\nmedian of {rounds} rounds (batch-1 JSON, wrk -t2 -c16):")
    print("| server | req/s | p50 | p99 |\n|---|---|---|---|")
    for k, m in med.items():
        print(f"| {k} | {m['rps']:,.0f} | {m['p50']:.1f} ms | {m['p99']:.1f} ms |")
    ours, tuned = med["deploykit serve --workers 2"], med["Flask+onnxruntime tuned, gunicorn -w 2"]
    print(f"\ndeploykit / tuned hand-written: {ours['rps'] / tuned['rps']:.2f}x req/s, p99 "
          f"{ours['p99']:.1f} vs {tuned['p99']:.1f} ms")
    print(f"deploykit start-up to first answer (2 workers, ONNX only): median "
          f"{statistics.median(startup):.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", help="a bundle with an onnx artifact (default: train one)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--mlflow", action="store_true", help="also MLflow's model server")
    ap.add_argument("--soak-seconds", type=int, default=60, help="0: no soak")
    ap.add_argument("--batching", action="store_true", help="also: --batch-window-ms on/off")
    args = ap.parse_args()
    ensure_wrk()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.bundle:
            bundle = Path(args.bundle).resolve()
        else:
            deploykit.train("torch", "digits", tmp / "model", epochs=3, quiet=True)
            bundle = deploykit.export(tmp / "model", ["onnx"], out=tmp / "b", quiet=True).bundle
        b = deploykit.load_bundle(bundle)
        onnx = bundle / b.artifact("onnx").path
        row = next(iter(b.probe().inputs.values()))[0].tolist()
        apps = servers(bundle, onnx, tmp, args.mlflow)
        results: dict[str, list] = {}
        startup: list[float] = []
        for _ in range(args.rounds):
            one_round(apps, row, args.seconds, results, startup)
        report(results, startup, args.rounds)
        if args.batching:
            batching(bundle, row, args.seconds)
        if args.soak_seconds:
            soak(bundle, row, args.soak_seconds)


if __name__ == "__main__":
    main()
