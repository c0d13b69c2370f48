"""Each example script runs end to end (small data and few epochs keep it quick)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each example trains and exports

EXAMPLES = Path(__file__).parent.parent / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))


def test_one_example_per_path():
    # named path_*.py: a script called torch.py would shadow the torch package
    assert {s.stem for s in SCRIPTS} == {f"path_{p}" for p in (
        "sklearn", "tensorflow", "torch", "keras_tensorflow", "keras_torch")}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.stem)
def test_example_runs(script, tmp_path):
    args = [sys.executable, str(script), "--data", "iris", "--out", str(tmp_path / "m"),
            "--to", "onnx"]
    if script.stem != "path_sklearn":
        args += ["--epochs", "2"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "match the trained model" in r.stdout
    assert "every exported artifact predicts like the original" in r.stdout
    assert (tmp_path / "m-bundle" / "manifest.json").is_file()
    assert (tmp_path / "m" / "deploykit-model.json").is_file()
