"""The README's "From Python" section, run as a newcomer would paste it: every ``python``
block of the section, in order, as one script, in an empty folder (relative paths and all).
The blocks carry their own asserts; this test also checks what they print against the
models, computed here."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # exports three models, verifies, serves

ROOT = Path(__file__).resolve().parents[1]


def python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## From Python\n"):]
    section = section[:section.index("\n## ", 1)]
    blocks = section.split("```python\n")[1:]
    return [b[:b.index("```")] for b in blocks]


def test_the_blocks_are_complete_python():
    blocks = python_blocks()
    assert len(blocks) >= 6
    for b in blocks:
        ast.parse(b)  # each block on its own is valid Python


def test_from_python_runs_as_written(tmp_path):
    script = "\n".join(python_blocks())
    (tmp_path / "readme.py").write_text(script)
    r = subprocess.run([sys.executable, "readme.py"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    lines = r.stdout.splitlines()
    statuses = ast.literal_eval(next(ln for ln in lines if ln.startswith("{'onnx'")))
    assert statuses == {"onnx": "pass", "tflite": "pass", "executorch": "pass"}
    diffs = {ln.split()[0]: float(ln.split()[-1]) for ln in lines if " max |diff| " in ln}
    assert set(diffs) == set(statuses) and max(diffs.values()) < 1e-5, diffs  # vs torch
    torch_bundle = json.loads((tmp_path / "bundles" / "iris-torch" / "manifest.json").read_text())
    tflite = next(a for a in torch_bundle["artifacts"] if a["target"] == "tflite")
    assert tflite["batch"] == 1  # a fixed batch, verified (and predicted above) in chunks
    assert tflite["parity"]["batches"] == {"1": "ok", "7": "ok", "40": "ok"}
    names = ["setosa", "versicolor", "virginica"]
    from sklearn.datasets import load_iris

    _, y = load_iris(return_X_y=True)
    first_three = str([names[i] for i in y[:3]])  # the true classes; the model gets these
    assert any(ln.endswith(first_three) for ln in lines), lines
    assert str([names[i] for i in y[:2]]) in lines  # the server's answer
    for bundle in ("iris-sklearn", "iris-keras", "iris-torch", "iris-trained"):
        manifest = json.loads((tmp_path / "bundles" / bundle / "manifest.json").read_text())
        assert manifest["artifacts"] and all(a["parity"]["passed"]
                                             for a in manifest["artifacts"])
    assert (tmp_path / "models" / "iris-sklearn" / "deploykit-model.json").is_file()
