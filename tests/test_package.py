"""Device packages, checked in device-like virtual environments that hold only numpy and one
runtime (no deploykit, TensorFlow or PyTorch)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import deploykit
from deploykit.errors import BundleError
from deploykit.package import package


def _venv(root: Path, *packages: str) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
    r = subprocess.run([str(root / "bin" / "pip"), "install", "--quiet", *packages],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    probe = ("import importlib.util as u, sys; "
             "sys.exit(any(u.find_spec(m) for m in ('deploykit', 'tensorflow', 'torch')))")
    assert subprocess.run([str(root / "bin" / "python"), "-c", probe]).returncode == 0
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    print(f"device venv {packages}: {size / 2**20:.0f} MB on disk")  # reported, not asserted
    return root / "bin" / "python"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("pkg")
    out = {}
    for path in ("torch", "keras-tensorflow"):
        deploykit.train(path, "digits", root / f"m-{path}", quiet=True)
        r = deploykit.export(root / f"m-{path}", ["tflite", "tflite-int8", "onnx", "executorch"],
                             out=root / path, quiet=True)
        assert r.ok, [c.reason for c in r.cells]
        out[path] = r.bundle
    return out


@pytest.fixture(scope="module")
def litert_python(tmp_path_factory):
    return _venv(tmp_path_factory.mktemp("venv") / "litert", "numpy", "ai-edge-litert")


@pytest.fixture(scope="module")
def ort_python(tmp_path_factory):
    return _venv(tmp_path_factory.mktemp("venv") / "ort", "numpy", "onnxruntime")


def _verify(python: Path, pkg: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), str(pkg / "run.py"), str(pkg), "--verify"],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("path", ["torch", "keras-tensorflow"])
def test_edge_package_verifies_with_only_litert(bundles, litert_python, tmp_path, path):
    pkg = package(bundles[path], "edge", tmp_path / "pkg")
    r = _verify(litert_python, pkg)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines() if ln.strip()}
    assert "PASS" in lines["tflite"] and "PASS" in lines["tflite-int8"]
    assert "skipped" in lines["onnx"]  # no onnxruntime in this device


@pytest.mark.parametrize("path", ["torch", "keras-tensorflow"])
def test_edge_package_verifies_with_only_onnxruntime(bundles, ort_python, tmp_path, path):
    pkg = package(bundles[path], "edge", tmp_path / "pkg")
    r = _verify(ort_python, pkg)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines() if ln.strip()}
    assert "PASS" in lines["onnx"] and "skipped" in lines["tflite"]


def test_packages_are_deterministic_and_carry_checked_hashes(bundles, litert_python, tmp_path):
    a = package(bundles["torch"], "edge", tmp_path / "a" / "pkg")
    b = package(bundles["torch"], "edge", tmp_path / "b" / "pkg")
    assert a.with_suffix(".zip").read_bytes() == b.with_suffix(".zip").read_bytes()
    meta = json.loads((a / "package.json").read_text())
    assert set(meta["sha256"]) >= {"run.py", "labels.txt", "models/tflite/model.tflite"}
    int8 = next(x for x in meta["artifacts"] if x["target"] == "tflite-int8")
    assert int8["size_vs_fp32"] < 0.5 and int8["metric_change"] is not None
    model = a / "models" / "tflite" / "model.tflite"
    model.write_bytes(model.read_bytes()[:-4])
    r = _verify(litert_python, a)
    assert r.returncode != 0 and "does not match its sha256" in r.stderr


def test_android_package_and_bad_requests(bundles, tmp_path):
    pkg = package(bundles["torch"], "android", tmp_path / "android")
    meta = json.loads((pkg / "package.json").read_text())
    assert {a["target"] for a in meta["artifacts"]} == {"tflite", "tflite-int8", "executorch"}
    assert "executorch-android" in (pkg / "README.md").read_text()
    with pytest.raises(BundleError, match="unknown device"):
        package(bundles["torch"], "watch", tmp_path / "w")
    with pytest.raises(BundleError, match="no passing artifact for web"):
        package(bundles["torch"], "web", tmp_path / "w")
