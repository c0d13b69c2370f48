"""What Ray costs on one machine, and what two nodes convert per minute.

    .venv/bin/python benchmarks/bench_ray.py [--rounds 1] [--flows sklearn,torch,...]

1. The what-if on digits (the main job: every flow, every target), with and without ``--ray``
   on this one machine, alternating, each in a fresh output folder. Ray's overhead is the
   ratio of the wall times (goal, issue 16: at most 1.15).
2. ``deploykit export MODELS... --ray`` of the trained models to every target on a 2-node
   local cluster (``ray.cluster_utils.Cluster``, one CPU per node, both on this machine):
   conversions (graph edges run) per minute.

Both use the CLI as a user would; the times are wall times of whole commands.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = [sys.executable, "-m", "deploykit"]


def whatif(out: Path, flows: str, ray: str | None) -> float:
    args = [*CLI, "what-if", "--data", "digits", "--flows", flows, "--out", str(out), "--quiet"]
    start = time.perf_counter()
    r = subprocess.run(args + (["--ray", ray] if ray else []), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if r.returncode != 0:
        sys.exit(f"what-if failed ({' '.join(args)}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return seconds


def one_node(address: str, rounds: int, flows: str, tmp: Path) -> dict:
    times: dict[str, list[float]] = {"local": [], "ray": []}
    for i in range(rounds):
        for mode in ("local", "ray"):
            s = whatif(tmp / f"{mode}-{i}", flows, address if mode == "ray" else None)
            times[mode].append(s)
            print(f"  what-if {mode:5s} round {i + 1}: {s:6.1f} s", flush=True)
    local, ray = statistics.median(times["local"]), statistics.median(times["ray"])
    return {"local_s": round(local, 1), "ray_s": round(ray, 1), "ratio": round(ray / local, 3)}


def two_nodes(models: list[Path], tmp: Path) -> dict:
    import os

    from ray.cluster_utils import Cluster

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # keep every node on 127.0.0.1

    c = Cluster(initialize_head=True, connect=False, head_node_args={
        "num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False})
    c.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    c.wait_for_nodes()
    try:
        start = time.perf_counter()
        r = subprocess.run([*CLI, "export", *map(str, models), "--to", "all", "--out",
                            str(tmp / "fleet"), "--quiet", "--ray", c.address],
                           capture_output=True, text=True)
        seconds = time.perf_counter() - start
    finally:
        c.shutdown()
    edges = 0
    for bundle in (tmp / "fleet").iterdir():
        manifest = json.loads((bundle / "manifest.json").read_text())
        edges += len({e for a in manifest["artifacts"] for e in a["placement"]["edges"]})
    return {"models": len(models), "seconds": round(seconds, 1), "conversions": edges,
            "per_minute": round(edges / seconds * 60, 1), "exit": r.returncode}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--flows", default="sklearn,tensorflow,keras-tensorflow,keras-torch,torch")
    a = ap.parse_args()
    from deploykit.cluster import connect

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as t:
        tmp = Path(t)
        import ray

        connect(None)  # one Ray instance on this machine for every --ray round
        address = ray.get_runtime_context().gcs_address
        print(f"1. what-if on digits ({a.flows}), {a.rounds} round(s), Ray at {address}")
        single = one_node(address, a.rounds, a.flows, tmp)
        ray.shutdown()
        print(f"   local {single['local_s']} s, on Ray {single['ray_s']} s: "
              f"ratio {single['ratio']}")
        models = sorted((tmp / "local-0" / "models").iterdir())
        print(f"2. export of {len(models)} models to every target on a 2-node local cluster")
        fleet = two_nodes(models, tmp)
        print(f"   {fleet['conversions']} conversions in {fleet['seconds']} s: "
              f"{fleet['per_minute']} per minute (exit {fleet['exit']})")
    print(json.dumps({"one_machine": single, "two_nodes": fleet}))


if __name__ == "__main__":
    main()
