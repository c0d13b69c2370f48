"""Browser targets: TF.js graph models and ONNX on onnxruntime-web, checked in Node (by the
runners, during export) and in a real headless Chromium (by the page itself)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import shared

import deploykit
from deploykit._tensors import tensor_from_json, tensor_json
from deploykit.formats.web import web_dir

pytestmark = pytest.mark.slow  # the shared digits bundles in Node and Chromium

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def digits_bundles():
    """TF core, Keras on both backends, scikit-learn and PyTorch, trained on digits and exported
    to every target (shared with the other test files); Node parity was checked by export."""
    return shared.digits()


@pytest.mark.parametrize("path", ["tensorflow", "keras-tensorflow", "keras-torch", "sklearn",
                                  "torch"])
def test_tfjs_matches_the_original_in_node(digits_bundles, path):
    cells = digits_bundles[path]["cells"]
    for target in ("tfjs", "tfjs-fp16", "onnx-web"):
        c = cells[target]
        assert c["status"] == "pass", (target, c["reason"])
        assert set(c["parity"]["batches"]) == {"1", "7", "360"}
    tfjs = deploykit.load_bundle(digits_bundles[path]["bundle"]).artifact("tfjs")
    assert tfjs.profile == "fp32" and tfjs.runs == "browser" and tfjs.parity.max_abs < 1e-4


def test_a_pytorch_program_reaches_tfjs_through_the_onnx_bridge(digits_bundles):
    tfjs = deploykit.load_bundle(digits_bundles["torch"]["bundle"]).artifact("tfjs")
    assert tfjs.route == ("torch", "onnx", "keras", "saved_model", "tfjs"), tfjs.route
    assert tfjs.parity.passed and tfjs.parity.max_abs < 1e-4, tfjs.parity.failures
    assert {"torch", "onnx", "keras", "tensorflow"} <= set(tfjs.converter_versions)  # the route


@pytest.mark.parametrize("path", ["tensorflow", "keras-tensorflow", "keras-torch", "sklearn",
                                  "torch"])
def test_page_computes_parity_in_headless_chromium(digits_bundles, path):
    from deploykit.browser import check

    bundle = digits_bundles[path]["bundle"]
    shot = ARTIFACTS / f"browser-{path}.png"
    results = check(bundle, screenshot=shot)
    want = {a.target for a in deploykit.load_bundle(bundle).artifacts
            if a.passed and a.runs == "browser"}
    assert {r["target"] for r in results} == want and want
    for r in results:
        assert r["pass"], r
        assert set(r["batches"]) == {"1", "7", "360"} and set(r["batches"].values()) == {"ok"}
        assert r["labelAgreement"] >= (1.0 if r["profile"] == "fp32" else 0.99)
        assert r["maxAbs"] < (1e-4 if r["profile"] == "fp32" else 1e-2)
    assert shot.stat().st_size > 10_000  # a real rendered page


def _idle_pids() -> set[int]:
    from deploykit.formats import web

    return {n.proc.pid for idle in web._IDLE.values() for n in idle if n.alive()}


def _kill_idle() -> None:
    from deploykit.formats import web

    for idle in web._IDLE.values():
        for n in idle:
            n.proc.kill()
            n.proc.wait()


def test_a_closed_runners_node_process_runs_the_next_artifact(digits_bundles):
    """Browser runners share Node processes one artifact at a time: a closed runner's process
    drops its model and runs the next artifact (of either engine), answering as the original
    did; an open runner's process is its own; a process that died is not handed out again."""
    from deploykit import formats
    from deploykit.errors import RunnerError

    b = deploykit.load_bundle(digits_bundles["keras-tensorflow"]["bundle"])
    probe = b.probe()
    want = probe.reference["probabilities"]

    def run(target):
        r = formats.open_artifact(b, target)
        np.testing.assert_allclose(r.predict(probe.inputs)["probabilities"], want,
                                   atol=2e-2 if target == "tfjs-fp16" else 1e-4)
        return r

    first = run("onnx-web")
    pid, node = first.node.proc.pid, first.node
    other = run("tfjs")  # the first still open: a process of its own
    other_pid = other.node.proc.pid
    assert other_pid != pid
    first.close()
    assert pid in _idle_pids()
    with pytest.raises(RunnerError, match="no model loaded"):  # it dropped the model
        node.call({"op": "predict", "inputs": {}}, "onnx-web", timeout=30)
    with pytest.raises(RunnerError, match="was closed"):
        first.predict(probe.inputs)
    again = run("tfjs-fp16")
    assert again.node.proc.pid == pid
    again.close()
    other.close()
    _kill_idle()
    fresh = run("onnx-web")
    assert fresh.node.proc.pid not in (pid, other_pid) and fresh.node.alive()
    fresh.close()


def test_a_node_process_whose_call_failed_or_was_interrupted_is_not_reused(digits_bundles,
                                                                          tmp_path):
    """A failed load (the engine may be broken) or an interrupted call (its reply left
    unread) stops the process instead of handing it to the next artifact."""
    from deploykit import formats
    from deploykit.errors import RunnerError

    b = deploykit.load_bundle(digits_bundles["sklearn"]["bundle"])
    art = b.artifact("onnx-web")
    _kill_idle()
    (tmp_path / "model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(RunnerError, match="onnx-web"):
        formats.open_runner("onnx-web", tmp_path / "model.onnx", art.signature(b.signature))
    assert not _idle_pids()

    r = formats.open_artifact(b, "onnx-web")
    node = r.node

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    node.replies.get = interrupted
    with pytest.raises(KeyboardInterrupt):
        r.predict(b.probe().inputs)
    assert not node.alive()
    r.close()
    assert node.proc.pid not in _idle_pids()


def test_the_page_runs_as_many_rows_in_small_batches_as_parity_does():
    """The page's runs at batch 1 and 7 cover the rows deploykit's parity covers (its numbers are
    compared with the manifest's)."""
    import re

    from deploykit.parity import SMALL_BATCH_ROWS

    app = (web_dir() / "page" / "app.js").read_text()
    assert re.search(r"const SMALL_BATCH_ROWS = (\d+);", app).group(1) == str(SMALL_BATCH_ROWS)


def test_the_page_compares_a_classifiers_scores_by_name(tmp_path):
    """The page compared the artifact's last output with the probe's first: an ONNX model
    giving an embedding and then its scores failed in the browser at every batch, though it
    passed in Node at export."""
    from sources_for_tests import two_headed_onnx

    from deploykit.browser import check

    x = np.random.default_rng(0).normal(size=(60, 6)).astype(np.float32)
    probs = two_headed_onnx(tmp_path / "m.onnx")(x)
    r = deploykit.export(tmp_path / "m.onnx", "onnx-web", out=tmp_path / "b", sample=x,
                         quiet=True)
    assert r.ok and len(set(probs.argmax(1))) > 1, [(c.target, c.reason) for c in r.cells]
    (result,) = check(tmp_path / "b")
    assert result["pass"] and set(result["batches"].values()) == {"ok"}, result
    assert result["labelAgreement"] == 1 and result["maxAbs"] < 1e-4, result


def test_node_one_shot_cli_writes_outputs(digits_bundles, tmp_path):
    bundle = digits_bundles["keras-tensorflow"]["bundle"]
    x = np.load(bundle / "probe" / "inputs.npz")["x"][:5]
    (tmp_path / "in.json").write_text(json.dumps({"inputs": {"x": tensor_json(x)}}))
    r = subprocess.run(["node", "run.mjs", str(bundle), "tfjs", str(tmp_path / "in.json"),
                        str(tmp_path / "out.json")], cwd=web_dir(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads((tmp_path / "out.json").read_text())["outputs"]
    got = tensor_from_json(next(iter(out.values())))
    ref = np.load(bundle / "probe" / "reference.npz")["probabilities"][:5]
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-4)


def test_op_tfjs_lacks_is_refused_by_name(tmp_path):
    import tensorflow as tf

    class Odd(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.ones((4, 2), np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def serve(self, x):
            return {"predictions": tf.math.lgamma(tf.abs(x @ self.w) + 1.0)}

    x = np.random.default_rng(0).normal(size=(9, 4)).astype(np.float32)
    r = deploykit.export(Odd(), ["tfjs", "onnx"], out=tmp_path / "b", sample=x, task="regression",
                         quiet=True)
    cells = {c.target: c for c in r.cells}
    assert cells["tfjs"].status == "error"
    assert "tfjs cannot run op(s) Lgamma" in cells["tfjs"].reason
    assert not (tmp_path / "b" / "artifacts" / "tfjs").exists()  # no broken model.json shipped


def test_a_web_package_runs_on_its_own_in_headless_chromium(digits_bundles, tmp_path):
    """``package --for web``: the browser artifacts, the parity page and the runtimes they were
    verified with; the package's own serve.py serves it and the page, in Chromium, finds every
    artifact within its profile of the original model's outputs."""
    import re
    import sys

    from deploykit.browser import run_page
    from deploykit.package import package

    flow = digits_bundles["sklearn"]
    pkg = package(flow["bundle"], "web", tmp_path / "web")
    meta = json.loads((pkg / "package.json").read_text())
    assert {a["target"] for a in meta["artifacts"]} == {"tfjs", "tfjs-fp16", "onnx-web"}
    assert not (pkg / "run.py").exists()  # a browser gets no Python runner
    fp16 = next(a for a in meta["artifacts"] if a["target"] == "tfjs-fp16")
    assert fp16["size_vs_fp32"] < 0.75 and fp16["metric"] == "accuracy"
    npm = {name: json.loads((web_dir() / "node_modules" / name / "package.json").read_text())
           for name in ("@tensorflow/tfjs", "onnxruntime-web")}
    assert {k: meta["runtime_versions"][k] for k in npm} == {k: v["version"] for k, v in npm.items()}
    for f in ("index.html", "app.js", "engines.mjs", "serve.py", "models/tfjs/model.json",
              "runtime/tf.fesm.min.js", "runtime/ort-wasm-simd-threaded.wasm", "probe/probe.json"):
        assert f in meta["sha256"], f
    imports = json.loads(re.search(r'type="importmap">(.*?)</script>',
                                   (pkg / "index.html").read_text(), re.S)[1])["imports"]
    assert all(v.startswith("./") and (pkg / v).is_file() for v in imports.values()), imports
    # the reference the page checks against is what the original model predicts
    x = np.load(pkg / "probe" / "inputs.npz")["x"]
    original = deploykit.load_model(flow["model"]).predict(x)["probabilities"]
    np.testing.assert_allclose(np.load(pkg / "probe" / "reference.npz")["probabilities"],
                               original, rtol=1e-6, atol=1e-7)
    server = subprocess.Popen([sys.executable, str(pkg / "serve.py"), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+/", server.stdout.readline())[0]
        results = run_page(url, screenshot=ARTIFACTS / "browser-web-package.png")
    finally:
        server.terminate()
        rest = server.communicate(timeout=30)[0]
    assert {r["target"] for r in results} == {"tfjs", "tfjs-fp16", "onnx-web"}
    for r in results:
        assert r["pass"] and set(r["batches"].values()) == {"ok"}, r
        assert r["maxAbs"] < (1e-4 if r["profile"] == "fp32" else 1e-2), r
    assert not rest.strip(), rest  # serve.py logs only requests that failed
    # a damaged copy: one byte of the tfjs weights flipped passed (within fp32's tolerance)
    shard = next((pkg / "models" / "tfjs").glob("*.bin"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 1
    shard.write_bytes(bytes(data))
    server = subprocess.Popen([sys.executable, str(pkg / "serve.py"), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+/", server.stdout.readline())[0]
        damaged = {r["target"]: r for r in run_page(url)}
    finally:
        server.terminate()
        server.communicate(timeout=30)
    rel = shard.relative_to(pkg).as_posix()
    assert not damaged["tfjs"]["pass"] and f"{rel} does not match its sha256" in \
        damaged["tfjs"]["error"], damaged["tfjs"]
    assert damaged["onnx-web"]["pass"], damaged  # only the damaged artifact fails


def test_tfjs_refuses_int64_values_past_int32_instead_of_wrapping_them(tmp_path):
    """TF.js computes int64 inputs in int32: a code of 2**33 + 1 came back as if it were 1,
    with no error, while every other runtime answered right."""
    import tensorflow as tf

    from deploykit.errors import InputError

    class Codes(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.int64)])
        def __call__(self, x):
            return tf.cast(x, tf.float32) * 2.0 + 1.0

    codes = np.random.default_rng(0).integers(-100, 100, (40, 3))
    r = deploykit.export(Codes(), "tfjs", out=tmp_path / "b", sample=codes, quiet=True)
    assert r.ok, [c.reason for c in r.cells]
    with deploykit.load_bundle(tmp_path / "b") as bundle:
        fits = bundle.predict(codes[:5], target="tfjs").outputs["predictions"]
        np.testing.assert_array_equal(fits, (codes[:5] * 2 + 1).astype(np.float32))
        with pytest.raises(InputError, match=r"input 'x': values from 1 to 8589934593 do not "
                                             r"fit int32, which TF.js computes int64 inputs in"):
            bundle.predict(np.array([[2**33 + 1, 1, 2]]), target="tfjs")
