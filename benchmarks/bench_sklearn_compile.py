"""Latency of compiled scikit-learn models (a measurement, not a test).

    .venv/bin/python benchmarks/bench_sklearn_compile.py [--repeats 200]

Fits a 100-tree random forest and a 100-stage gradient boosting classifier on digits,
compiles each with ``deploykit.sklearn_compile`` and exports it to TFLite and ONNX (through
the Keras edges), exports the same estimator with skl2onnx, and times, in this one run,
batch-1 and batch-256 predictions of: scikit-learn's own ``predict_proba``, the compiled
TFLite (LiteRT interpreter), the compiled ONNX and skl2onnx's ONNX (onnxruntime, one
intra-op thread each, as the server runs them). Medians of ``--repeats`` calls; the last
column is the ratio to scikit-learn. Parity of every artifact was checked by the export.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def _onnx(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})


def _tflite(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path), num_threads=1).get_signature_runner()
    name = next(iter(runner.get_input_details()))
    return lambda x: runner(**{name: x})


def _artifacts(est, X, root: Path) -> dict[str, Path]:
    import deploykit
    from deploykit.sklearn_compile import to_keras

    compiled = deploykit.export(to_keras(est, X.shape[1], classify=True), "tflite,onnx",
                                out=root / "compiled", sample=X[:200], quiet=True)
    direct = deploykit.export(est, "onnx", out=root / "skl2onnx", sample=X[:200], quiet=True)
    for report in (compiled, direct):
        bad = [(c.target, c.reason) for c in report.cells if c.status != "pass"]
        if bad:
            raise SystemExit(f"export failed: {bad}")
    return {"compiled TFLite": root / "compiled" / "artifacts" / "tflite" / "model.tflite",
            "compiled ONNX": root / "compiled" / "artifacts" / "onnx" / "model.onnx",
            "skl2onnx ONNX": root / "skl2onnx" / "artifacts" / "onnx" / "model.onnx"}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    from sklearn.datasets import load_digits
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    models = {"random forest (100 trees)": RandomForestClassifier(100, random_state=0),
              "gradient boosting (100 stages)": GradientBoostingClassifier(n_estimators=100,
                                                                           random_state=0)}
    print(f"{'model':32s} {'runtime':16s} {'batch 1 ms':>10s} {'batch 256 ms':>12s} "
          f"{'speed-up vs sklearn (1 / 256)':>30s}")
    for label, est in models.items():
        est.fit(X, y)
        with tempfile.TemporaryDirectory(prefix="bench-sk-") as tmp:
            runs = {"scikit-learn": est.predict_proba}
            for name, path in _artifacts(est, X, Path(tmp)).items():
                runs[name] = (_tflite if path.suffix == ".tflite" else _onnx)(path)
            base = None
            for name, fn in runs.items():
                ms = [_median_ms(lambda b=b: fn(X[:b]), args.repeats) for b in (1, 256)]
                base = base or ms
                print(f"{label:32s} {name:16s} {ms[0]:10.3f} {ms[1]:12.3f} "
                      f"{base[0] / ms[0]:10.1f}x / {base[1] / ms[1]:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
