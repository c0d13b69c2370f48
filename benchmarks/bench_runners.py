"""Runner overhead at batch 1: deploykit's Runner.predict against the raw runtime call on the
same artifact, same thread settings (one math thread, as the server runs them), in one run.

    .venv/bin/python benchmarks/bench_runners.py [--bundle DIR] [--calls 3000]

Without --bundle it trains the digits CNN along the torch flow (3 epochs) and exports it to
onnx, tflite and executorch first (about two minutes). The goal (issue 15): at most 1.5x.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import deploykit
from deploykit import formats

TARGETS = ("onnx", "tflite", "executorch")


def per_call_us(fns: list, calls: int) -> list[float]:
    """Each function's best of 9 rounds of ``calls`` calls, in microseconds per call; the
    functions take turns within each round, so drift in the machine hits them alike."""
    for fn in fns:
        for _ in range(300):
            fn()
    best = [float("inf")] * len(fns)
    for _ in range(9):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            for _ in range(calls):
                fn()
            best[i] = min(best[i], (time.perf_counter() - t) / calls * 1e6)
    return best


def raw_call(target: str, path: Path, x: np.ndarray):
    """The runtime's own batch-1 call, the way a hand-written app makes it (numpy arrays in,
    numpy arrays out)."""
    if target == "onnx":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = s.get_inputs()[0].name
        return lambda: s.run(None, {name: x})
    if target == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(path), num_threads=1)
        it.allocate_tensors()
        i = it.get_input_details()[0]["index"]
        outs = [d["index"] for d in it.get_output_details()]

        def call():
            it.set_tensor(i, x)
            it.invoke()
            return [it.get_tensor(o) for o in outs]
        return call
    import torch
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")
    return lambda: [o.numpy() for o in method.execute([torch.from_numpy(x)])]  # arrays out


def bundle_for_benchmark(tmp: Path) -> Path:
    model = tmp / "model"
    deploykit.train("torch", "digits", model, epochs=3, quiet=True)
    return deploykit.export(model, list(TARGETS), out=tmp / "bundle", quiet=True).bundle


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", help="a bundle with onnx, tflite and executorch artifacts")
    ap.add_argument("--calls", type=int, default=3000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.bundle) if args.bundle else bundle_for_benchmark(Path(tmp))
        b = deploykit.load_bundle(root)
        feed = b.probe().rows(slice(0, 1))  # {input name: one row}
        x = next(iter(feed.values()))
        print(f"{'target':12s} {'raw µs':>8s} {'runner µs':>10s} {'ratio':>6s}")
        worst = 0.0
        for target in TARGETS:
            runner = formats.open_artifact(b, target, threads=1)
            raw, ours = per_call_us([raw_call(target, root / b.artifact(target).path, x),
                                     lambda r=runner: r.predict(feed)], args.calls)
            worst = max(worst, ours / raw)
            print(f"{target:12s} {raw:8.1f} {ours:10.1f} {ours / raw:5.2f}x", flush=True)
        print(f"worst ratio {worst:.2f}x (goal: at most 1.5x)")


if __name__ == "__main__":
    main()
