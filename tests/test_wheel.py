"""deploykit as a user installs it: a wheel in a fresh virtual environment, no checkout.

The device runners live in ``targets/`` at the repository root; the wheel must carry them
(as ``deploykit.targets``) or ``deploykit package`` has nothing to copy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(*args: str, cwd: Path | None = None, timeout: float = 900):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                       timeout=timeout)
    assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-3000:])
    return r


def test_wheel_in_a_fresh_venv_packages_for_edge(tmp_path):
    # made in the dev venv; ONNX only, which the base install packages without [edge]
    from sources_for_tests import sample, sklearn_model

    import deploykit

    bundle = deploykit.export(sklearn_model(), ["onnx"], out=tmp_path / "bundle",
                              sample=sample(), quiet=True).bundle
    # a copy of the checkout's tracked files: building in place would leave build/ behind
    files = _run("git", "ls-files", cwd=ROOT).stdout.split()
    for f in files:
        (tmp_path / "src" / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, tmp_path / "src" / f)
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", tmp_path / "dist", tmp_path / "src")
    wheel = next((tmp_path / "dist").glob("deploykit-*.whl"))
    import zipfile

    assert "deploykit/py.typed" in zipfile.ZipFile(wheel).namelist()  # typed for checkers
    _run(sys.executable, "-m", "venv", tmp_path / "venv")
    python = tmp_path / "venv" / "bin" / "python"
    _run(python, "-m", "pip", "install", "--quiet", "-c", ROOT / "constraints.txt", wheel)
    where = _run(python, "-c", "import deploykit, deploykit.targets as t; "
                 "print(deploykit.__file__); print(t.folder())", cwd=tmp_path).stdout.split()
    assert all(str(tmp_path / "venv") in w for w in where), where  # the wheel, not the checkout
    r = _run(tmp_path / "venv" / "bin" / "deploykit", "package", bundle, "--for", "edge",
             "--out", "pkg", cwd=tmp_path)
    assert "package: pkg" in r.stdout
    pkg = tmp_path / "pkg"
    assert (pkg / "run.py").read_bytes() == (ROOT / "targets" / "edge" / "run.py").read_bytes()
    assert (pkg / "requirements.txt").is_file()
    meta = json.loads((pkg / "package.json").read_text())
    assert [a["target"] for a in meta["artifacts"]] == ["onnx"]
    assert set(meta["profiles"]) == {"fp32", "fp16", "int8"}
    shown = _run(tmp_path / "venv" / "bin" / "deploykit", "formats", cwd=tmp_path).stdout
    assert "tflite-int8" in shown and "onnx_to_onnx_web" in shown
