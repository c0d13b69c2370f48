"""Bundles: atomic writes, hash checks, and planted faults that parity must catch."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from sources_for_tests import sample, torch_model

import deploykit
from deploykit.bundle import (
    MANIFEST,
    SELF_DIGEST,
    _combined,
    file_hashes,
    load_bundle,
    manifest_digest,
)
from deploykit.errors import BundleError, ExportError


@pytest.fixture(scope="module")
def torch_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "bundle"
    r = deploykit.export(torch_model(), ["onnx", "torchscript"], out=out, sample=sample(),
                         quiet=True)
    assert r.ok, [c.reason for c in r.cells]
    return out


def _copy(bundle: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "copy"
    shutil.copytree(bundle, dest)
    return dest


def _replant(bundle: Path, target: str) -> None:
    """Re-hash an artifact we modified on purpose, as a buggy converter would have written it."""
    m = json.loads((bundle / MANIFEST).read_text())
    art = next(a for a in m["artifacts"] if a["target"] == target)
    art["files"] = file_hashes(bundle, f"artifacts/{target}")
    art["sha256"] = _combined(art["files"])
    m[SELF_DIGEST] = manifest_digest(m)
    (bundle / MANIFEST).write_text(json.dumps(m))


def _verify_fails(bundle: Path, target: str, words: str) -> None:
    r = run_cli("verify", str(bundle))
    assert r.returncode == 1, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith(f"FAIL {target}:")]
    assert lines and any(words in ln for ln in lines), r.stderr
    others = [ln for ln in r.stderr.splitlines() if ln.startswith("FAIL ")
              and not ln.startswith(f"FAIL {target}:")]
    assert not others, others


def test_fresh_bundle_verifies(torch_bundle):
    r = run_cli("verify", str(torch_bundle))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("PASS") == 2


def _onnx(bundle: Path):
    import onnx

    art = load_bundle(bundle).artifact("onnx")
    return onnx, bundle / art.path


def test_perturbed_onnx_weights_fail_parity(torch_bundle, tmp_path):
    b = _copy(torch_bundle, tmp_path)
    onnx, path = _onnx(b)
    model = onnx.load(path)
    from onnx import numpy_helper

    init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    w = numpy_helper.to_array(init).copy()
    w.flat[0] += 0.05  # one weight, slightly
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    onnx.save(model, path)
    _replant(b, "onnx")
    _verify_fails(b, "onnx", "max_abs")


def test_swapped_outputs_fail_parity(torch_bundle, tmp_path):
    b = _copy(torch_bundle, tmp_path)
    onnx, path = _onnx(b)
    from onnx import helper, numpy_helper

    model = onnx.load(path)
    out = model.graph.output[0]
    old = out.name
    swapped = old + "_swapped"
    idx = numpy_helper.from_array(np.array([1, 0, 2], dtype=np.int64), "swap_idx")
    model.graph.initializer.append(idx)
    for node in model.graph.node:  # rename the producer's output, then gather classes 1,0,2
        node.output[:] = [swapped if o == old else o for o in node.output]
    model.graph.node.append(helper.make_node("Gather", [swapped, "swap_idx"], [old], axis=1))
    onnx.save(model, path)
    _replant(b, "onnx")
    _verify_fails(b, "onnx", "max_abs")


def test_fixed_batch_size_fails_parity(torch_bundle, tmp_path):
    import torch

    b = _copy(torch_bundle, tmp_path)
    _, path = _onnx(b)
    torch.onnx.export(torch_model(), (torch.zeros(7, 12),), str(path), dynamo=False,
                      input_names=["x"], output_names=["probabilities"])  # batch baked to 7
    _replant(b, "onnx")
    _verify_fails(b, "onnx", "batch size 1")


def test_perturbed_torchscript_fails_parity(torch_bundle, tmp_path):
    import torch

    b = _copy(torch_bundle, tmp_path)
    path = b / load_bundle(b).artifact("torchscript").path
    m = torch.jit.load(str(path))
    with torch.no_grad():
        next(iter(m.parameters())).add_(0.05)
    torch.jit.save(m, str(path))
    _replant(b, "torchscript")
    _verify_fails(b, "torchscript", "max_abs")


def test_tampered_or_truncated_artifact_is_refused(torch_bundle, tmp_path):
    b = _copy(torch_bundle, tmp_path)
    _, path = _onnx(b)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(BundleError, match="does not match its sha256"):
        load_bundle(b)
    r = run_cli("verify", str(b))
    assert r.returncode == 2 and "does not match its sha256" in r.stderr


def test_unknown_target_and_missing_route(tmp_path, monkeypatch):
    from sources_for_tests import tf_module

    from deploykit import formats, graph

    with pytest.raises(ExportError, match="unknown target"):
        deploykit.export(tf_module(), ["tfjs-nope"], out=tmp_path / "x", quiet=True)
    formats.load()  # every built-in target is reachable from every source: add one that is not
    monkeypatch.setitem(graph.NODES, "island", graph.Node("island", "onnx", column=98))
    r = deploykit.export(tf_module(), ["tflite", "island"], out=tmp_path / "b",
                         sample=sample(), quiet=True)
    cells = {c.target: c for c in r.cells}
    assert cells["tflite"].status == "pass"
    assert cells["island"].status == "n/a" and "reachable from 'saved_model': " in \
        cells["island"].reason and "tflite" in cells["island"].reason
    assert deploykit.verify(tmp_path / "b").ok


def test_killed_export_leaves_no_bundle(tmp_path):
    out = tmp_path / "bundle"
    np.save(tmp_path / "x.npy", sample())
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            "import deploykit, numpy as np; from sources_for_tests import keras_model; "
            f"deploykit.export(keras_model(), 'all', out={str(out)!r}, "
            f"sample=np.load({str(tmp_path / 'x.npy')!r}), quiet=True)")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(tmp_path.glob(".bundle.partial-*/artifacts")):
        time.sleep(0.2)
    assert list(tmp_path.glob(".bundle.partial-*")), "export never started writing"
    import os

    os.killpg(proc.pid, signal.SIGKILL)  # the exporter and its converter workers
    proc.wait()
    assert not out.exists()
    r = run_cli("verify", str(out))
    assert r.returncode == 2 and "an interrupted export leaves none" in r.stderr
    # the next export there clears the killed one's work folder (it stayed for good)
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    assert deploykit.export(LogisticRegression(max_iter=500).fit(X.astype(np.float32), y), "onnx",
                            out=out, quiet=True).ok
    assert not list(tmp_path.glob(".bundle.partial-*")) and (out / "manifest.json").is_file()


def test_a_crashing_converter_fails_only_its_own_cells(tmp_path, monkeypatch, tests_on_path):
    """A converter that segfaults in its worker: its cells say so, the others complete."""
    import deploykit.building as ex
    from deploykit.worker import run_in_worker

    real = ex.run_edge_in_worker

    def crash_onnx(e, src, out, ctx, timeout):
        if e.dst == "onnx":
            out.mkdir(parents=True)
            return run_in_worker("_worker_targets:segfault", timeout=60)
        return real(e, src, out, ctx, timeout)

    monkeypatch.setattr(ex, "run_edge_in_worker", crash_onnx)
    r = deploykit.export(torch_model(), ["onnx", "torchscript"], out=tmp_path / "b",
                         sample=sample(), quiet=True)
    cells = {c.target: c for c in r.cells}
    assert cells["onnx"].status == "error" and "SIGSEGV" in cells["onnx"].reason
    assert "about to crash" in cells["onnx"].log_tail  # what the converter printed is kept
    assert cells["torchscript"].status == "pass"
    assert not r.ok
    b = load_bundle(tmp_path / "b")
    assert [a.target for a in b.artifacts] == ["torchscript"]
    failed = b.manifest["failed"]  # the bundle keeps the whole reason, beside its artifacts
    assert [f["target"] for f in failed] == ["onnx"]
    assert failed[0]["reason"] == cells["onnx"].reason and "about to crash" in failed[0]["log_tail"]
    shown = run_cli("inspect", str(tmp_path / "b"))
    assert "ERROR onnx" in shown.stdout and "SIGSEGV" in shown.stdout and "about to crash" in \
        shown.stdout


def test_a_reason_names_the_file_where_the_bundle_is(tmp_path, monkeypatch):
    """An artifact its runtime cannot load: the reason named it in the bundle's work folder,
    which is gone once the bundle is in place."""
    import deploykit.building as ex

    real = ex.run_edge_in_worker

    def broken_onnx(e, src, out, ctx, timeout):
        made = real(e, src, out, ctx, timeout)
        if e.dst == "onnx":
            (out / made["file"]).write_bytes(b"not an onnx model")
        return made

    monkeypatch.setattr(ex, "run_edge_in_worker", broken_onnx)
    r = deploykit.export(torch_model(), ["onnx"], out=tmp_path / "b", sample=sample(),
                         quiet=True)
    reason = r.cells[0].reason
    assert r.cells[0].status == "fail" and "cannot load" in reason, reason
    assert f"{(tmp_path / 'b').resolve()}/artifacts/onnx/model.onnx" in reason, reason
    assert ".partial" not in reason and (tmp_path / "b/artifacts/onnx/model.onnx").is_file()
    assert load_bundle(tmp_path / "b").manifest["failed"][0]["reason"] == reason


def test_a_bundle_without_artifacts_does_not_verify(tmp_path, monkeypatch):
    """Every cell failed: the bundle keeps why, and `verify` has nothing to prove (it printed
    an empty table and exited 0)."""
    import deploykit.building as ex

    def refuse(e, src, out, ctx, timeout):
        raise ExportError(f"{e.name}: planted failure")

    monkeypatch.setattr(ex, "run_edge_in_worker", refuse)
    r = deploykit.export(torch_model(), ["onnx"], out=tmp_path / "b", sample=sample(),
                         quiet=True)
    assert not r.ok and not load_bundle(tmp_path / "b").artifacts
    assert not deploykit.verify(tmp_path / "b").ok
    shown = run_cli("verify", str(tmp_path / "b"))
    assert shown.returncode == 1 and "holds no artifact to verify" in shown.stderr, shown.stderr


def test_a_hanging_converter_fails_only_its_own_cells(tmp_path, monkeypatch, tests_on_path):
    """A converter that never returns is killed at its time limit; the others complete."""
    import deploykit.building as ex
    from deploykit import worker

    real = ex.run_edge_in_worker

    def hang_onnx(e, src, out, ctx, timeout):
        if e.dst == "onnx":
            out.mkdir(parents=True)
            return worker.run("_worker_targets:hang", timeout=3, label=e.name)
        return real(e, src, out, ctx, timeout)

    monkeypatch.setattr(ex, "run_edge_in_worker", hang_onnx)
    r = deploykit.export(torch_model(), ["onnx", "onnx-web", "torchscript"], out=tmp_path / "b",
                         sample=sample(), quiet=True)
    cells = {c.target: c for c in r.cells}
    assert cells["onnx"].status == "error" and "timed out after 3 s" in cells["onnx"].reason
    assert cells["onnx-web"].status == "error"  # it needed the ONNX file
    assert cells["onnx-web"].reason == cells["onnx"].reason
    assert cells["torchscript"].status == "pass"


def test_an_edited_manifest_is_refused(torch_bundle, tmp_path):
    """A label renamed by hand in manifest.json was served (and verified) as if exported."""
    b = _copy(torch_bundle, tmp_path)
    m = json.loads((b / MANIFEST).read_text())
    m["task"]["labels"][0] = "zero"
    (b / MANIFEST).write_text(json.dumps(m, indent=2))
    with pytest.raises(BundleError, match="manifest.json was changed after export"):
        load_bundle(b)
    r = run_cli("verify", str(b))
    assert r.returncode == 2 and "was changed after export" in r.stderr, r.stderr
    (b / MANIFEST).write_bytes(bytes(range(128, 256)))  # no text at all: an internal error
    with pytest.raises(BundleError, match="manifest.json is not valid JSON"):
        load_bundle(b)


def test_manifest_that_leaves_files_out_is_refused(torch_bundle, tmp_path):
    b = _copy(torch_bundle, tmp_path)
    (b / "artifacts" / "onnx" / "extra.js").write_text("alert(1)")
    with pytest.raises(BundleError, match="unlisted: \\['artifacts/onnx/extra.js'\\]"):
        load_bundle(b)
