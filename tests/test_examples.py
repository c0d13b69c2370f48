"""Each example script runs end to end (small data and few epochs keep it quick).

The scripts run as ``__main__`` in the test process (:func:`runpy.run_path`), so their
``deploykit.workers()`` block joins the session's workers: each example then skips the
framework imports a fresh interpreter pays, and the code run is the script's own.
"""

from __future__ import annotations

import runpy
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
def test_example_runs(script, tmp_path, monkeypatch, capsys):
    args = [str(script), "--data", "iris", "--out", str(tmp_path / "m"), "--to", "onnx"]
    if script.stem != "path_sklearn":
        args += ["--epochs", "2"]
    monkeypatch.setattr(sys, "argv", args)
    runpy.run_path(str(script), run_name="__main__")  # raises if the script fails
    out = capsys.readouterr().out
    assert "match the trained model" in out
    assert "every exported artifact predicts like the original" in out
    assert (tmp_path / "m-bundle" / "manifest.json").is_file()
    assert (tmp_path / "m" / "deploykit-model.json").is_file()
