"""The bring-your-own-model pass rate: the test zoo through the CLI (a measurement, not a test).

    .venv/bin/python benchmarks/bench_zoo.py [--out DIR] [--only NAME,...]

Builds the zoo of ``tests/zoo.py`` (public model definitions, no downloads), exports each
model with ``deploykit export MODEL --to all --sample SAMPLE``, and prints every cell, its
reason when it did not pass, the time per model and the pass rate of reachable cells
(constant-output models, which must be ``vacuous``, are left out of the rate). Exits 1 when
the rate is below 90 % or any command printed a traceback.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import zoo  # noqa: E402
import zoo_check  # noqa: E402

TRACEBACK = re.compile(r"Traceback \(most recent call last\)")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", help="output folder (default: a temporary one)")
    ap.add_argument("--only", help="comma-separated zoo names")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-zoo-") as tmp:
        out = Path(args.out or tmp).resolve()
        subprocess.run([sys.executable, str(ROOT / "tests" / "zoo.py"), str(out / "zoo")],
                       check=True, capture_output=True)
        made = zoo.json.loads((out / "zoo" / "zoo.json").read_text())
        names = args.only.split(",") if args.only else list(made)
        results, clean = {}, True
        for name in names:
            start = time.perf_counter()
            code, text, cells = zoo.export_cli(name, made[name], out / "bundles",
                                               zoo.subprocess_cli(zoo_check.DEPLOYKIT))
            clean &= not TRACEBACK.search(text)
            results[name] = cells
            print(f"{name:28s} exit {code}  {time.perf_counter() - start:5.0f} s", flush=True)
            for target, (status, why) in cells.items():
                if status != "pass":
                    print(f"    {target:12s} {status:8s} {why[:160]}")
        print("\n" + zoo_check.table(results))
        rate_line = zoo_check.table(results).splitlines()[-1]
        rate = float(rate_line.split("(")[1].split("%")[0]) / 100
        print(f"tracebacks printed: {'none' if clean else 'YES'}")
        return 0 if clean and rate >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
