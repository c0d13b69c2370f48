"""deploykit phone runner: load an android/ios package the way the app does, in Python.

Each step below is one step of the integration notes (targets/mobile/README.md, and the
package's README): check the file's sha256, load the model with the phone runtime (LiteRT
``Interpreter`` for ``.tflite``, ExecuTorch ``Module``/``forward`` for ``.pte``), feed ONE row
as a float32 [1, n] tensor (int8 models: quantize with the input's scale and zero point), read
the output, and name the top class from the labels the app ships (for ``.tflite``: the
``labels.txt`` packed inside the model by its TFLite metadata). It re-runs the package's probe
set row by row and prints parity against the original framework's predictions.

    python phone.py PACKAGE --verify [--runtime litert|executorch]

Runs next to ``run.py`` (the package has both) and needs numpy plus ai-edge-litert and/or
executorch; it never imports deploykit.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run.py sits beside us in a package
from run import (  # noqa: E402
    _dequantize,
    _quantize,
    compare,
    load_package,
    native_stderr_quiet,
    one_line,
    read_probe,
)


class LiteRtPhone:
    """Android: ``Interpreter(modelFile)``; ``run(input, output)`` on one row at a time."""

    modules = ("ai_edge_litert", "tflite_runtime")

    def __init__(self, path: Path, meta: dict) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            from tflite_runtime.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path))
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        # the main output by its signature name (an app: runSignature's output map); the
        # tensor order differs (a classifier's label came last, where its scores were read)
        by_name = self.interpreter.get_signature_runner().get_output_details()
        self.output = by_name.get(meta["main_output"]) or \
            self.interpreter.get_output_details()[-1]
        self.labels = embedded_labels(path)

    def __call__(self, row: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input["index"], _quantize(row[None], self.input))
        self.interpreter.invoke()
        return _dequantize(self.interpreter.get_tensor(self.output["index"]), self.output)[0]


class ExecuTorchPhone:
    """Android/iOS: ``Module.load(path)``; ``forward(Tensor.fromBlob(row, [1, n]))``."""

    modules = ("executorch",)

    def __init__(self, path: Path, meta: dict) -> None:
        import torch  # the ExecuTorch Python binding takes torch tensors
        from executorch.runtime import Runtime

        self.torch = torch
        self.method = Runtime.get().load_program(str(path)).load_method("forward")
        self.labels = None  # ExecuTorch has no metadata: the app ships labels.txt
        # outputs come in the signature's order and have no names: the main one by position
        self.output = [o["name"] for o in meta["signature"]["outputs"]].index(meta["main_output"])

    def __call__(self, row: np.ndarray) -> np.ndarray:
        out = self.method.execute([self.torch.from_numpy(np.ascontiguousarray(row[None]))])
        return out[self.output].numpy()[0]


PHONES = {"tflite": ("litert", LiteRtPhone), "executorch": ("executorch", ExecuTorchPhone)}


def embedded_labels(path: Path) -> list[str] | None:
    """The labels file the TFLite metadata packs into the model (a zip after the flatbuffer),
    as Android's MetadataExtractor.getAssociatedFile reads it."""
    data = path.read_bytes()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return z.read("labels.txt").decode().splitlines()
    except (zipfile.BadZipFile, KeyError):
        return None


def verify(root: Path, meta: dict, runtime: str | None) -> bool:
    x, ref = read_probe(root, meta)
    app_labels = (root / "labels.txt").read_text().splitlines()
    ok, ran = True, 0
    for art in meta["artifacts"]:
        name, cls = PHONES.get(art["runtime"], (None, None))
        if cls is None or (runtime and runtime != name):
            continue
        if not any(importlib.util.find_spec(m) for m in cls.modules):
            print(f"{art['target']:12s} skipped: {name} is not installed here")
            continue
        ran += 1
        try:
            with native_stderr_quiet():  # runtimes print C++ notes on load and first run
                phone = cls(root / art["path"], meta)
                first = phone(x[0]).reshape(-1)
        except Exception as e:
            ok = False
            print(f"{art['target']:12s} FAIL  {name} cannot load it: {one_line(e)}")
            continue
        got = np.stack([first, *[phone(row).reshape(-1) for row in x[1:]]])
        passed, summary = compare(got, ref, art["profile"], meta)
        labels = phone.labels or app_labels
        if labels != app_labels:
            passed = False
            summary += "; the labels inside the model differ from labels.txt"
        ok &= passed
        print(f"{art['target']:12s} {'PASS' if passed else 'FAIL'}  {name}, {len(x)} rows one "
              f"by one, {summary}, first row -> '{labels[int(got[0].argmax())]}' (labels from "
              f"{'model metadata' if phone.labels else 'labels.txt'})")
    if ran == 0:
        print("no artifact of this package runs here: install ai-edge-litert and/or executorch")
        return False
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("package", type=Path)
    ap.add_argument("--verify", action="store_true", required=True)
    ap.add_argument("--runtime", choices=["litert", "executorch"])
    a = ap.parse_args()
    return 0 if verify(a.package, load_package(a.package), a.runtime) else 1


if __name__ == "__main__":
    sys.exit(main())
