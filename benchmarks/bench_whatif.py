"""The main job's wall time, split by phase (a measurement, not a test).

    .venv/bin/python benchmarks/bench_whatif.py [--data digits] [--out DIR] [--limit 300]

Runs ``deploykit what-if --data digits`` exactly as ``make demo`` does (all five paths, every
target, a fresh output folder), then reads its ``report.json`` and prints where the time
went: training per path, conversion and verification (two cells run at once, so the busy
time of edges and parity checks is shown beside the wall time they took together), latency
measurement (one artifact at a time), and the rest (loading sources, writing bundles,
reports). Then each converter's busy time over the run, with the ONNX → Keras bridge (the
route between the TensorFlow and PyTorch families) marked, and the cells that take it.
Exits 1 when the run fails a cell or takes longer than ``--limit`` seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="digits")
    ap.add_argument("--out", help="output folder (default: a temporary one)")
    ap.add_argument("--limit", type=float, default=300.0, help="seconds the run may take")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-whatif-") as tmp:
        out = Path(args.out or Path(tmp) / "whatif-out")
        cli = Path(sys.executable).with_name("deploykit")
        start = time.perf_counter()
        run = subprocess.run([str(cli), "what-if", "--data", args.data, "--out", str(out)],
                             capture_output=True, text=True)
        wall = time.perf_counter() - start
        report = json.loads((out / "report.json").read_text())
    print(split(report, wall))
    print(per_edge(report))
    if run.returncode != 0:
        print(f"what-if exited {run.returncode}: {run.stderr.strip().splitlines()[-1:]}")
    over = wall > args.limit
    print(f"\nwhat-if wall time: {wall:.0f} s (limit {args.limit:.0f} s): "
          f"{'OVER' if over else 'within'}")
    return 1 if over or run.returncode else 0


def split(report: dict, wall: float) -> str:
    rows = report["rows"]
    train = {r["flow"]: r["train_seconds"] or 0.0 for r in rows}
    ex = [r.get("export_seconds") or {} for r in rows]
    convert_wall = sum(e.get("convert_verify", 0.0) for e in ex)
    latency = sum(e.get("latency", 0.0) for e in ex)
    cells = [c for r in rows for c in r.get("cells") or []]
    busy_convert = sum(sum((e.get("edges") or {}).values()) for e in ex)
    busy_verify = sum(c.get("seconds", {}).get("verify", 0.0) for c in cells)
    passed = sum(c["status"] == "pass" for c in cells)
    reachable = sum(c["status"] != "n/a" for c in cells)
    lines = [f"what-if --data {report['data']}: {passed} of {reachable} reachable cells pass",
             f"  {'training':34s} {sum(train.values()):7.1f} s   "
             + ", ".join(f"{p} {s:.1f}" for p, s in train.items()),
             f"  {'conversion + verification (wall)':34s} {convert_wall:7.1f} s   "
             f"busy: conversion {busy_convert:.1f} s, verification {busy_verify:.1f} s",
             f"  {'latency measurement':34s} {latency:7.1f} s",
             f"  {'sources, bundles, reports, start-up':34s} "
             f"{wall - sum(train.values()) - convert_wall - latency:7.1f} s",
             f"  {'total (wall)':34s} {wall:7.1f} s"]
    return "\n".join(lines)


def per_edge(report: dict) -> str:
    """Each converter's busy time over the run (it runs once per flow that needs it), and the
    cells that cross between the TensorFlow and PyTorch families through ONNX → Keras."""
    totals: dict[str, list[float]] = {}
    for r in report["rows"]:
        for name, s in ((r.get("export_seconds") or {}).get("edges") or {}).items():
            totals.setdefault(name, []).append(s)
    lines = ["\nconversion time per converter (runs x mean = busy total):"]
    for name, times in sorted(totals.items(), key=lambda kv: -sum(kv[1])):
        mark = "   <- the ONNX -> Keras bridge" if name == "onnx_to_keras" else ""
        lines.append(f"  {name:28s} {len(times)} x {sum(times) / len(times):6.2f} s = "
                     f"{sum(times):6.1f} s{mark}")
    bridged = [f"{r['flow']} -> {c['target']} ({c['status']}, convert "
               f"{(c.get('seconds') or {}).get('convert', 0.0):.1f} s)"
               for r in report["rows"] for c in r.get("cells") or [] if _bridged(c["route"])]
    lines.append(f"cells through the bridge ({len(bridged)}): " + "; ".join(bridged))
    return "\n".join(lines)


def _bridged(route: list[str]) -> bool:
    return any(a == "onnx" and b == "keras" for a, b in zip(route, route[1:]))


if __name__ == "__main__":
    sys.exit(main())
