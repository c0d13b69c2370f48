"""Training time per flowchart path on digits (a measurement, not a test).

    .venv/bin/python benchmarks/bench_train.py [--data digits] [--repeat 1]

Prints wall-clock seconds per path (including the worker start-up of the Keras paths)
and each path's time relative to the scikit-learn path measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from deploykit.flows import FLOWS
from deploykit.training import train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="digits")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    seconds: dict[str, list[float]] = {p: [] for p in FLOWS}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            for path in FLOWS:
                start = time.perf_counter()
                r = train(path, args.data, f"{tmp}/{path}-{i}", quiet=True)
                seconds[path].append(time.perf_counter() - start)
                metric = next(iter(r.metrics["test"].items()))
                print(f"{path:17s} run {i}: {seconds[path][-1]:6.1f} s  test {metric[0]} "
                      f"{metric[1]:.4f}", flush=True)
    base = statistics.median(seconds["sklearn"])
    print(f"\n{'path':17s} {'median s':>9s} {'x sklearn':>10s}")
    for path, s in seconds.items():
        print(f"{path:17s} {statistics.median(s):9.1f} {statistics.median(s) / base:10.2f}")


if __name__ == "__main__":
    main()
