"""How long a small model's export takes, where deploykit's own overhead (worker start,
imports, verification, latency) is all there is.

    .venv/bin/python benchmarks/bench_small_export.py [--rounds 3]

The model is issue 18's: a 4 -> 16 -> 3 PyTorch MLP with a softmax, exported from memory with
``deploykit.export(model, "onnx,tflite,executorch", sample=X[:40])``. Each round runs in a
fresh Python process, as a user's script would (cold: no worker processes yet), and the time
is the ``export`` call's wall time, split by phase (``ExportReport.timings``). Goal
(issue 18): at most 15 s on this machine. A second export in the same process shows what is
left once the workers are warm.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROUND = r"""
import json, sys, time
import numpy as np
import torch
import deploykit

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3),
                            torch.nn.Softmax(dim=1)).eval()
X = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
out = sys.argv[1]
times = []
with deploykit.workers():
    for i in range(2):
        start = time.perf_counter()
        r = deploykit.export(model, "onnx,tflite,executorch", out=f"{out}/b{i}", sample=X[:40],
                             quiet=True)
        times.append({"wall": time.perf_counter() - start, "ok": r.ok, **r.timings})
print(json.dumps(times))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    rounds = ap.parse_args().rounds
    cold, warm = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            r = subprocess.run([sys.executable, "-c", ROUND, str(Path(tmp) / str(i))],
                               capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"round {i + 1} failed:\n{r.stderr[-3000:]}")
            first, second = json.loads(r.stdout.strip().splitlines()[-1])
            if not (first["ok"] and second["ok"]):
                sys.exit(f"round {i + 1}: a target failed: {first}")
            cold.append(first)
            warm.append(second)
            edges = ", ".join(f"{k} {v:.1f}" for k, v in first["edges"].items())
            print(f"round {i + 1}: cold {first['wall']:5.1f} s (convert+verify "
                  f"{first['convert_verify']:.1f}, latency {first['latency']:.1f}; {edges}), "
                  f"warm {second['wall']:5.1f} s", flush=True)
    median = statistics.median(c["wall"] for c in cold)
    print(f"small-model export (onnx, tflite, executorch): cold median {median:.1f} s, warm "
          f"median {statistics.median(w['wall'] for w in warm):.1f} s; goal <= 15 s cold: "
          f"{'met' if median <= 15 else 'NOT met'}")


if __name__ == "__main__":
    main()
