"""The server, run for real (waitress, loopback), and its Flask app in-process."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import shared
from conftest import HEAVY, run_cli

import deploykit

pytestmark = pytest.mark.slow  # exports and serves the shared digits models



@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """The shared digits models, exported to a few targets each (one of them fixed-batch)."""
    root = tmp_path_factory.mktemp("serve")
    models = {flow: d["model"] for flow, d in shared.digits(["sklearn", "torch"]).items()}
    sk = deploykit.export(models["sklearn"], ["onnx", "onnx-web"], out=root / "sk", quiet=True)
    tt = deploykit.export(models["torch"], ["onnx", "tflite", "torchscript"], out=root / "torch",
                          quiet=True)
    assert sk.ok and tt.ok
    return {"sk": root / "sk", "torch": root / "torch"}


@pytest.fixture(scope="module")
def server(bundles, tmp_path_factory):
    """`deploykit serve` on a copy of both bundles (so a test may tamper with the copy)."""
    root = tmp_path_factory.mktemp("served")
    copies = [shutil.copytree(b, root / b.name) for b in bundles.values()]
    proc, url = shared.serve(copies, "--max-batch", "500", "--max-body-mb", "1")
    yield {"url": url, "copies": copies, "proc": proc}
    proc.terminate()
    proc.wait(timeout=30)


def _probe(bundle: Path):
    b = deploykit.load_bundle(bundle)
    p = b.probe()
    return p.inputs["x"], p.reference, b.manifest["name"]


def test_binds_to_loopback_by_default(server):
    line = server["proc"].stdout.readline()
    assert "on http://127.0.0.1:" in line, line
    one = r"[\w.-]+ \([\w-]+(, [\w-]+)*\)"  # a model and the targets it serves
    assert re.match(rf"serving {one}; {one} on http", line), line  # both bundles


def test_v2_metadata_health_and_infer(server, bundles):
    url = server["url"]
    assert requests.get(url + "/v2").json()["name"] == "deploykit"
    assert requests.get(url + "/v2/health/live").json() == {"live": True}
    x, ref, name = _probe(bundles["torch"])
    meta = requests.get(f"{url}/v2/models/{name}").json()
    assert set(meta["versions"]) == {"onnx", "tflite", "torchscript"}
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]
    assert requests.get(f"{url}/v2/models/{name}/ready").json()["ready"]
    for target in meta["versions"]:
        body = {"inputs": [{"name": "x", "shape": [5, 64], "datatype": "FP32",
                            "data": x[:5].reshape(-1).tolist()}]}
        r = requests.post(f"{url}/v2/models/{name}/versions/{target}/infer", json=body)
        assert r.status_code == 200, r.text
        out = r.json()["outputs"][0]
        assert out["name"] == "probabilities" and out["shape"] == [5, 10]
        np.testing.assert_allclose(np.array(out["data"]).reshape(5, 10), ref["probabilities"][:5],
                                   atol=1e-5, rtol=1e-4)


def test_official_triton_client_gets_correct_predictions(server, bundles):
    import tritonclient.http as httpclient

    x, ref, name = _probe(bundles["sk"])
    client = httpclient.InferenceServerClient(server["url"].removeprefix("http://"))
    assert client.is_server_live() and client.is_model_ready(name)
    inp = httpclient.InferInput("x", [7, 64], "FP32")
    inp.set_data_from_numpy(x[:7])
    res = client.infer(name, [inp], outputs=[httpclient.InferRequestedOutput("label"),
                                             httpclient.InferRequestedOutput("probabilities")])
    np.testing.assert_array_equal(res.as_numpy("label"), ref["label"][:7])
    np.testing.assert_allclose(res.as_numpy("probabilities"), ref["probabilities"][:7], atol=1e-5)


def test_predict_gives_labels(server, bundles):
    x, ref, name = _probe(bundles["torch"])
    r = requests.post(f"{server['url']}/predict?model={name}&target=tflite",
                      json={"instances": x[:9].tolist()})
    assert r.status_code == 200, r.text
    assert r.json()["labels"] == [str(i) for i in ref["probabilities"][:9].argmax(axis=1)]
    assert r.json()["target"] == "tflite"  # a fixed-batch-1 artifact, run row by row


@pytest.mark.parametrize("method, path, body, status, words", [
    ("post", "/predict?model={sk}", b"{not json", 400, "must be a JSON object"),
    ("post", "/predict?model={sk}", b'{"rows": []}', 400, 'expected {"instances"'),
    ("post", "/predict?model={sk}", b'{"instances": []}', 400, "empty batch"),
    ("post", "/predict?model={sk}", b'{"instances": 5}', 400, "one number, not a batch"),
    ("post", "/predict?model={sk}", b'{"instances": [[1, 2, 3]]}', 400, "expected shape"),
    ("post", "/predict?model={sk}", b'{"instances": [["a"]]}', 400, "list of numbers"),
    ("post", "/predict?model={sk}", b'{"instances": [[1], [1, 2]]}', 400, "list of numbers"),
    ("post", "/predict?model={sk}", b'{"instances": [[NaN' + b", 0" * 63 + b"]]}", 400,
     "NaN or Inf"),
    ("post", "/predict?model={sk}", b'{"instances": [[1e999' + b", 0" * 63 + b"]]}", 400,
     "NaN or Inf"),
    ("post", "/predict?model={sk}&target=tfjs", b'{"instances": [[0]]}', 404, "no served target"),
    ("post", "/predict", b'{"instances": [[0]]}', 400, "several models are served"),
    ("post", "/v2/models/nope/infer", b"{}", 404, "unknown model 'nope'"),
    ("post", "/v2/models/{sk}/versions/../../etc/infer", b"{}", 404, ""),
    ("post", "/v2/models/{sk}/infer", b'{"inputs": [{"name": "y", "shape": [1, 64], '
     b'"datatype": "FP32", "data": []}]}', 400, "unknown input 'y'"),
    ("post", "/v2/models/{sk}/infer", b'{"inputs": [{"name": "x", "shape": [1, 64], '
     b'"datatype": "FP16", "data": []}]}', 400, "datatype 'FP16'"),
    ("post", "/v2/models/{sk}/infer", b'{"inputs": [{"name": "x", "shape": [2, 64], '
     b'"datatype": "FP32", "data": [1, 2]}]}', 400, "do not fill shape"),
    ("get", "/bundles/{sk}/../manifest.json", None, 404, ""),
    ("get", "/bundles/{sk}/artifacts/onnx-web/%2e%2e/onnx/model.onnx", None, 404,
     "not a browser artifact"),
    ("post", "/predict?model={sk}", b'{"instances":' + b"[" * 50000 + b"]" * 50000 + b"}", 400,
     "nested too deeply"),
    ("post", "/v2/models/{sk}/infer", b'{"inputs": [{"name": "x", "shape": [true, 64], '
     b'"datatype": "FP32", "data": []}]}', 400, "shape must be a list"),
    ("post", "/v2/models/{sk}/infer", b'{"inputs": [{"name": "x", "shape": [' + b"1, " * 64 +
     b'1], "datatype": "FP32", "data": [1.0]}]}', 400, "not one an array can have"),
    ("post", "/v2/models/{sk}/infer", b'{"inputs": [{"name": "x", "shape": '
     b'[9223372036854775808, 0], "datatype": "FP32", "data": []}]}', 400,
     "not one an array can have"),
    ("post", "/v2/models/{sk}/infer", b'{"inputs": [{"name": "x", "shape": [1, 64], '
     b'"datatype": ["FP32"], "data": []}]}', 400, "datatype"),
    ("post", "/v2/models/{sk}/infer", b'{"inputs": [{"name": "x", "shape": [1, 1], '
     b'"datatype": "FP32", "data": [1], "parameters": [1]}]}', 400, "'parameters' must be"),
    ("post", "/v2/models/{sk}/infer", b'{"inputs": [{"name": "x", "shape": [1, 1], '
     b'"datatype": "INT64", "data": [1.5]}]}', 400, "must be integers"),
    ("get", "/bundles/{sk}/artifacts/onnx/model.onnx", None, 404, "not a browser artifact"),
    ("post", "/v2/models/{sk}/infer", b'{"inputs": [{"name": "x", "shape": [1, 64], '
     b'"datatype": "FP32", "parameters": {"binary_data_size": "256"}}]}', 400,
     "binary_data_size must be a byte count, got '256'"),  # said "binary_data_size None"
    ("post", "/v2/models/{sk}/infer", b'{"inputs": [{"name": "x", "shape": [1, 64], '
     b'"datatype": "FP32", "data": [' + b"0, " * 63 + b'0], "parameters": '
     b'{"binary_data_size": 0}}]}', 400, "not both"),  # its data was silently ignored
])
def test_bad_input_is_a_4xx_json_error(server, bundles, method, path, body, status, words):
    _, _, name = _probe(bundles["sk"])
    r = requests.request(method, server["url"] + path.replace("{sk}", name), data=body,
                         headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    if words:
        assert words in r.json()["error"]
    assert requests.get(server["url"] + "/v2/health/live").ok


def test_an_output_asked_for_twice_is_answered_once(server, bundles):
    x, ref, name = _probe(bundles["sk"])
    r = requests.post(f"{server['url']}/v2/models/{name}/infer", json={
        "inputs": [{"name": "x", "shape": [2, 64], "datatype": "FP32",
                    "data": x[:2].ravel().tolist()}],
        "outputs": [{"name": "label"}, {"name": "probabilities"}, {"name": "label"}]})
    assert r.status_code == 200, r.text
    outs = r.json()["outputs"]
    assert [o["name"] for o in outs] == ["label", "probabilities"], outs  # label came twice
    assert outs[0]["data"] == ref["label"][:2].tolist()


def test_nan_outputs_are_an_error_not_invalid_json(server, bundles):
    _, _, name = _probe(bundles["torch"])
    r = requests.post(f"{server['url']}/predict?model={name}&target=onnx",
                      json={"instances": [[3e38] * 64]})
    assert r.status_code == 422 and "NaN or Inf" in r.json()["error"]
    assert "NaN" not in r.text.replace("NaN or Inf", "")


def test_a_failing_runtime_is_a_json_500_naming_it(bundles, monkeypatch):
    """A runtime that fails at request time (a crashed session, a dead helper process) is
    the server's fault: a 500 whose JSON names the runtime and its error, no traceback."""
    from deploykit.errors import RunnerError
    from deploykit.serve import create_app

    app = create_app([bundles["sk"]])
    served = next(iter(app.extensions["deploykit"]["models"].values()))
    for target, one in served.served.items():
        def fail(inputs, target=target):
            raise RunnerError(f"{target}: the session was closed")
        monkeypatch.setattr(one.runner, "predict", fail)
    r = app.test_client().post("/predict", json={"instances": np.zeros((1, 64)).tolist()})
    assert r.status_code == 500, r.get_data(as_text=True)
    error = r.get_json()["error"]
    assert "runtime failed: onnx: the session was closed" in error and "Traceback" not in error


def test_the_openapi_document_lists_every_route_the_server_answers(bundles):
    """Built from the app's own URL map, so a new route without its entry fails (the
    versions/{target} metadata and readiness routes, /, /report and /openapi.json were
    missing). Only file routes (/web, /bundles: static assets of the page) are left out."""
    import re

    from deploykit.serve import create_app

    app = create_app([bundles["sk"]])
    doc = app.test_client().get("/openapi.json").get_json()
    files = ("/web/", "/bundles/", "/static/")
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(files):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule).replace("{name}", "{model}")
        assert path in doc["paths"], path
        methods = {m.lower() for m in rule.methods} - {"head", "options"}
        assert methods <= set(doc["paths"][path]), (path, methods)


def test_two_versions_of_one_model_are_served_under_the_names_they_are_given(bundles, tmp_path):
    """Two bundles of one manifest name (v1/iris and v2/iris, exported from one model folder)
    could not be served together, and the error said nothing of a way out."""
    from deploykit.errors import DeploykitError
    from deploykit.serve import create_app

    x, ref, name = _probe(bundles["sk"])
    with pytest.raises(DeploykitError, match=f"both named '{name}': serve one under another "
                                             f"name, as {name}-2="):
        create_app([bundles["sk"], bundles["sk"]])
    app = create_app([bundles["sk"], f"next={bundles['sk']}"])
    client = app.test_client()
    for model in (name, "next"):
        r = client.post(f"/predict?model={model}", json={"instances": x[:4].tolist()})
        assert r.status_code == 200 and r.get_json()["model"] == model, r.get_data(as_text=True)
        np.testing.assert_allclose(r.get_json()["predictions"], ref["probabilities"][:4],
                                   atol=1e-5)
    assert client.get("/v2/models/next").get_json()["name"] == "next"
    assert 'data-model="next"' in client.get("/").get_data(as_text=True)
    r = run_cli("serve", f"a b={bundles['sk']}", "--port", "1")
    assert r.returncode == 2 and "'a b' cannot name a served model" in r.stderr, r.stderr


def test_two_models_of_one_signature_have_a_document_that_takes_their_requests(bundles):
    """The README serves digits-torch and digits-pt2, which take the same inputs: the body
    schema was ``oneOf`` two identical schemas, which a validator refuses for every request.
    Names a component key cannot tell apart ("c c", "c_c") made one key, losing a model."""
    from jsonschema import Draft202012Validator

    from deploykit.serve import create_app
    from deploykit.serve.openapi import document

    app = create_app([bundles["sk"], bundles["torch"]])
    served = list(app.extensions["deploykit"]["models"].values())
    models = {"c c": served[0], "c_c": served[1]}
    doc = document(models, 64)
    schemas = doc["components"]["schemas"]
    assert len([k for k in schemas if k.startswith("Instances.")]) == 2, sorted(schemas)

    def valid(kind: str, body) -> bool:
        return Draft202012Validator({"$ref": f"#/components/schemas/{kind}", **doc}).is_valid(body)

    row = np.zeros(64).tolist()
    infer = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": row}]}
    assert valid("Instances", {"instances": [row]}) and valid("InferRequest", infer)
    assert valid("Validate", {}) and valid("Validate", {"inputs": {"x": [row]}})
    # and still refuses what no model takes
    assert not valid("Instances", {"instances": [row[:10]]})
    assert not valid("Instances", {"instances": [row], "inputs": {"x": [row]}})


def test_a_bug_in_deploykit_is_a_json_500_and_its_traceback_goes_to_the_log(bundles, monkeypatch,
                                                                          caplog):
    from deploykit.serve import create_app

    app = create_app([bundles["sk"]])
    served = next(iter(app.extensions["deploykit"]["models"].values()))
    for one in served.served.values():
        def bug(inputs):
            raise ZeroDivisionError("planted bug")
        monkeypatch.setattr(one.runner, "predict", bug)
    r = app.test_client().post("/predict", json={"instances": np.zeros((1, 64)).tolist()})
    assert r.status_code == 500 and r.is_json, r.get_data(as_text=True)
    assert "internal error in deploykit; the server's run log" in r.get_json()["error"]
    assert "planted" not in r.get_data(as_text=True)  # nothing of the internals in the answer
    assert "ZeroDivisionError: planted bug" in caplog.text and "Traceback" in caplog.text


def test_batch_and_body_limits(server, bundles):
    _, _, name = _probe(bundles["sk"])
    big = {"instances": np.zeros((501, 64)).tolist()}
    r = requests.post(f"{server['url']}/predict?model={name}", json=big)
    assert r.status_code == 413 and "exceeds the limit of 500" in r.json()["error"]
    huge = b'{"instances": [' + b"[" + b"0," * 600_000 + b"0]]}"
    r = requests.post(f"{server['url']}/predict?model={name}", data=huge,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "larger than the limit" in r.json()["error"]


def test_chunked_bodies_keep_the_limit_and_bad_chunks_are_400s(server, bundles):
    """A body without Content-Length (chunked) is held to the same limit: Werkzeug stopped
    reading it at the limit without a word, so a body padded past it with spaces was
    answered 200. A malformed chunk is the client's fault, not an internal error."""
    x, ref, name = _probe(bundles["sk"])
    url = f"{server['url']}/predict?model={name}"
    row = json.dumps({"instances": x[:2].tolist()}).encode()

    def chunked(body: bytes):
        yield from (body[i:i + 65536] for i in range(0, len(body), 65536))

    r = requests.post(url, data=chunked(row))  # a generator: Transfer-Encoding: chunked
    assert r.status_code == 200, r.text
    assert r.json()["labels"] == [str(i) for i in ref["probabilities"][:2].argmax(1)]
    r = requests.post(url, data=chunked(row[:-1] + b" " * (1 << 20) + b"}"))
    assert r.status_code == 413 and "larger than the limit" in r.json()["error"], r.text
    host, port = server["url"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST /predict?model={name} HTTP/1.1\r\nHost: {host}\r\nTransfer-"
                     f"Encoding: chunked\r\nConnection: close\r\n\r\nZZ\r\n{{}}\r\n0\r\n\r\n"
                     .encode())
        answer = b"".join(iter(lambda: sock.recv(65536), b"")).decode()
    head, _, body = answer.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 400"), answer
    assert "request body could not be read" in json.loads(body)["error"], answer


def test_concurrent_mixed_clients_get_no_5xx_and_correct_answers(server, bundles):
    x, ref, name = _probe(bundles["torch"])
    url = f"{server['url']}/predict?model={name}"
    want = ref["probabilities"].argmax(axis=1)
    problems: list[str] = []
    deadline = time.time() + 60

    def client(k: int) -> None:
        s = requests.Session()
        for i in range(40):
            if time.time() > deadline:
                return
            row = (k * 40 + i) % len(x)
            if i % 3 == 2:  # every third request is bad
                r = s.post(url, json={"instances": [[1.0, 2.0]]})
                if r.status_code != 400:
                    problems.append(f"bad request got {r.status_code}")
                continue
            r = s.post(url, json={"instances": x[row:row + 2].tolist()})
            if r.status_code != 200:
                problems.append(f"valid request got {r.status_code}: {r.text[:200]}")
            elif r.json()["labels"] != [str(v) for v in want[row:row + 2]]:
                problems.append(f"wrong answer for rows {row}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not problems, problems[:5]


def test_validate_on_posted_rows_says_when_they_are_too_few_to_prove_anything(server, bundles):
    """Posted rows: the default artifact's answers are the reference. Two rows cannot detect
    a fault: every artifact said passed: false with no failure and no reason."""
    x, ref, name = _probe(bundles["sk"])
    url = f"{server['url']}/validate?model={name}"
    r = requests.post(url, json={"instances": x[:2].tolist()}).json()
    assert not r["passed"] and r["artifacts"], r
    for a in r["artifacts"]:
        assert a["status"] == "vacuous" and not a["failures"], a
        assert "the probe set has 2 rows" in a["vacuous"], a
        assert "post more rows to /validate" in a["vacuous"] and "--sample" not in a["vacuous"]
    r = requests.post(url, json={"instances": x[:40].tolist()}).json()
    assert r["passed"] and {a["status"] for a in r["artifacts"]} == {"pass"}, r
    # inputs the CNN overflows on: the reference is NaN, a 422 as /predict answers, not an
    # artifact failing against itself
    _, _, cnn = _probe(bundles["torch"])
    huge = {"instances": np.full((20, 64), 3e38).tolist()}
    for route in ("validate", "predict"):
        r = requests.post(f"{server['url']}/{route}?model={cnn}", json=huge)
        assert r.status_code == 422 and "NaN or Inf" in r.json()["error"], (route, r.text)


def test_validate_passes_then_catches_an_artifact_tampered_after_start(server, bundles):
    _, _, name = _probe(bundles["torch"])
    r = requests.post(f"{server['url']}/validate?model={name}").json()
    assert r["passed"] and {a["target"] for a in r["artifacts"]} == {"onnx", "tflite",
                                                                     "torchscript"}
    copy = next(c for c in server["copies"] if json.loads((c / "manifest.json").read_text())[
        "name"] == name)
    onnx = copy / "artifacts" / "onnx" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-1] + b"\x00")
    r = requests.post(f"{server['url']}/validate?model={name}").json()
    by = {a["target"]: a for a in r["artifacts"]}
    assert not r["passed"] and not by["onnx"]["passed"]
    assert "changed since start" in by["onnx"]["failures"][0]
    assert by["tflite"]["passed"] and by["torchscript"]["passed"]
    assert requests.get(server["url"] + "/v2/health/live").ok


def test_tampered_bundle_is_refused_at_start(bundles, tmp_path):
    b = shutil.copytree(bundles["sk"], tmp_path / "b")
    f = b / "artifacts" / "onnx" / "model.onnx"
    f.write_bytes(f.read_bytes() + b"x")
    r = run_cli("serve", str(b), "--port", str(shared.free_port()), timeout=60)
    assert r.returncode == 2 and "does not match its sha256" in r.stderr


@pytest.mark.parametrize("bundle, targets", [("sk", None), ("torch", ["onnx", "tflite"])])
def test_onnx_and_tflite_serving_imports_no_framework(bundles, bundle, targets):
    code = f"""
import sys, time
t = time.perf_counter()
from deploykit.serve import create_app
app = create_app([{str(bundles[bundle])!r}], targets={targets!r})
for target in {targets or [None]!r}:
    r = app.test_client().post('/predict' + (f'?target={{target}}' if target else ''),
                               json={{'instances': [[0.0] * 64] * 3}})
    assert r.status_code == 200, r.json
heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})
assert not heavy, heavy
print(round(time.perf_counter() - t, 3))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    float(r.stdout)  # start-up to first answer, reported by the benchmark, not asserted


def test_runtimes_serve_with_the_threads_they_are_given(bundles):
    """One math thread per runtime by default (workers fill the cores), N when asked; the
    ONNX session also stops spinning between calls. Each in a fresh process: torch's and
    ExecuTorch's pools are per process."""
    code = f"""
import sys, torch
from deploykit.serve import create_app
threads = int(sys.argv[1])
app = create_app([{str(bundles['torch'])!r}], runtime_threads=threads)
served = next(iter(app.extensions['deploykit']['models'].values())).served
opts = served['onnx'].runner.session.get_session_options()
spin = opts.get_session_config_entry('session.intra_op.allow_spinning')
print(opts.intra_op_num_threads, spin, torch.get_num_threads())
"""
    for n in (1, 2):
        r = subprocess.run([sys.executable, "-c", code, str(n)], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [str(n), "0", str(n)], r.stdout


# Valid requests the server may still refuse: 404 (a documented model name's target that the
# model lacks, from a doc that lists every model's targets) and 422 (documented: the model
# gives NaN or Inf for these inputs, e.g. values near float32's limit through a CNN).
ST_CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "404", "422"]
"""


def test_openapi_matches_the_server_under_schemathesis(bundles, tmp_path):
    """schemathesis (its own venv: its anyio wants a typing-extensions litert-torch refuses)
    fuzzes every operation against the document, all checks on, with a fixed seed and a
    bounded number of examples; it must find nothing."""
    st = shared.venv("schemathesis==4.32.5").with_name("st")
    (tmp_path / "schemathesis.toml").write_text(ST_CONFIG)
    proc, url = shared.serve(bundles["torch"], "--workers", "2")
    try:
        doc = requests.get(f"{url}/openapi.json").json()
        operations = sum(len(methods) for methods in doc["paths"].values())
        r = subprocess.run([str(st), "run", f"{url}/openapi.json", "--checks", "all",
                            "--max-examples", "25", "--seed", "7", "--no-color"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "SCHEMATHESIS_HOOKS": "st_hooks",
                                "PYTHONPATH": str(Path(__file__).parent)})
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert r.returncode == 0 and "No issues found" in r.stdout, r.stdout[-6000:]
    # every operation it selected ran; schemathesis 4.32 counts one operation of this document
    # fewer than it holds (15 documented, 14 selected; which one depends on its filters)
    selected = re.search(r"Selected: +(\d+)/(\d+)", r.stdout)
    assert selected and selected[1] == selected[2] and int(selected[1]) >= operations - 1, \
        (operations, r.stdout[-2000:])
    assert re.search(rf"Tested: +{selected[1]}\b", r.stdout), r.stdout[-2000:]


HTTP_FAULTS = [  # (request, status, a word of the error), answered by the HTTP server itself
    (b"GARBAGE\r\n\r\n", 400, "line"),
    (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400,
     "content-length"),
]
# gunicorn limits each header field to 8190 bytes; waitress limits the whole head to 256 KB,
# and closes a connection past it with the rest unread, which resets it (no answer to read)
FIELD_TOO_LARGE = (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
                   431, "large")


@pytest.mark.parametrize("workers", ["2", "1"])  # gunicorn, waitress
def test_http_faults_are_json_errors_naming_them(server, bundles, workers):
    """What the HTTP server answers before the app sees a request is a JSON error as the
    app's are: gunicorn wrote an HTML page, waitress a text one."""
    if workers == "1":
        proc, url = shared.serve(bundles["torch"], "--workers", "1", "--targets", "onnx")
    else:
        proc, url = server["proc"], server["url"]
    try:
        for request, status, word in HTTP_FAULTS + ([FIELD_TOO_LARGE] if workers == "2" else []):
            with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), 30) as s:
                s.sendall(request)
                answer = b"".join(iter(lambda s=s: s.recv(65536), b""))
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.split()[1] == str(status).encode(), answer[:300]
            assert b"content-type: application/json" in head.lower(), answer[:300]
            assert word in json.loads(body)["error"].lower(), answer[:300]
    finally:
        if workers == "1":
            proc.terminate()
            proc.wait(timeout=30)


def test_an_ipv6_loopback_address_is_served_and_printed_as_a_url(bundles):
    """gunicorn took ``--host ::1`` as host ':' and port ':1' (it needs ``[::1]:PORT``), and
    the URL printed was ``http://::1:PORT/``."""
    proc, url = shared.serve(bundles["torch"], "--workers", "2", "--targets", "onnx", host="::1")
    try:
        assert url.startswith("http://[::1]:")
        assert f"on {url}/ (2 worker processes)" in proc.stdout.readline()
        r = requests.post(url + "/predict", json={"instances": np.zeros((2, 64)).tolist()})
        assert r.status_code == 200 and len(r.json()["labels"]) == 2, r.text
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("threads", [(), ("--batch-window-ms", "5")], ids=["sync", "threaded"])
def test_a_client_that_stops_sending_gets_a_408_and_keeps_the_workers(bundles, tmp_path, threads):
    """A sync worker waited on a stalled body until gunicorn's timeout killed it (30 s, then a
    500 and a worker loading its models again); now its reads time out first. A threaded
    worker (batching takes threads) held a request thread for good, and its stop for
    gunicorn's whole graceful timeout."""
    bundle = shutil.copytree(bundles["torch"], tmp_path / "torch")  # its run log: ours alone
    proc, url = shared.serve(bundle, "--workers", "2", "--targets", "onnx", "--read-timeout", "1",
                             *threads)
    port = int(url.rsplit(":", 1)[1])
    try:
        body = b" HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"inst"  # then stops
        for sent, status in ((b"POST /predict" + body, b" 408 "),  # the fast path
                             (b"POST /validate" + body, b" 408 "),  # Flask (Werkzeug: a 400)
                             (b"POST /predict HTTP/1.1\r\nHost: x\r\n", b"")):  # the head
            with socket.create_connection(("127.0.0.1", port), 20) as s:
                s.sendall(sent)
                answer = b"".join(iter(lambda s=s: s.recv(65536), b""))
            assert status in answer.split(b"\r\n")[0] if status else answer == b"", answer
            if status:
                assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == \
                    "the request body stopped arriving before its end"
        assert requests.get(url + "/v2/health/ready", timeout=10).ok
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)  # no thread still held by a stalled client
    assert out.count(" ready (") == 2, out  # no worker killed and started again
    log = "".join(p.read_text() for p in (tmp_path / "logs").glob("serve-*.log"))
    assert "Traceback" not in err + log and "stopped sending its request" in log, log


def test_a_hundred_idle_connections_do_not_lock_out_a_single_process_server(bundles):
    """waitress takes 100 connections by default and keeps an idle one for 120 s: a client
    holding 100 sockets open made every other request wait for minutes."""
    proc, url = shared.serve(bundles["torch"], "--workers", "1", "--targets", "onnx")
    port = int(url.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port), 10) for _ in range(150)]
    try:
        r = requests.post(url + "/predict", json={"instances": np.zeros((1, 64)).tolist()},
                          timeout=20)
        assert r.status_code == 200, r.text
    finally:
        for s in idle:
            s.close()
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("threads", ["1", "2"])  # gunicorn's sync and threaded workers
def test_workers_share_one_port_and_finish_a_request_in_flight_on_sigterm(bundles, threads):
    proc, url = shared.serve(bundles["torch"], "--workers", "2", "--threads", threads,
                             "--targets", "onnx")
    assert "(2 worker processes)" in proc.stdout.readline()
    ready = [proc.stdout.readline() for _ in range(2)]
    assert len({re.search(r"worker (\d+) ready \(\d+ MB resident\)", line)[1]
                for line in ready}) == 2, ready
    _finishes_a_request_in_flight_on_sigterm(proc, url, bundles["torch"])


def test_one_waitress_process_finishes_a_request_in_flight_on_sigterm(bundles):
    """``--workers 1`` (waitress) stops as gunicorn's workers do; waitress's own default was
    to die with the request half-answered."""
    proc, url = shared.serve(bundles["torch"], "--workers", "1", "--targets", "onnx")
    assert "(1 process," in proc.stdout.readline()
    _finishes_a_request_in_flight_on_sigterm(proc, url, bundles["torch"])


def _finishes_a_request_in_flight_on_sigterm(proc, url: str, bundle: Path) -> None:
    """A request whose body is still arriving when SIGTERM comes gets its answer (the
    original model's labels) while a new connection is refused; then the server exits 0."""
    b = deploykit.load_bundle(bundle)
    x, reference = b.probe().inputs["x"][:3], b.probe().reference
    want = [b.manifest["task"]["labels"][i] for i in next(iter(reference.values()))[:3].argmax(1)]
    body = json.dumps({"instances": x.tolist()}).encode()
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body[:10])
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.5)
        with pytest.raises(requests.ConnectionError) as refused:  # closed while it finishes
            requests.get(url + "/v2/health/live", timeout=2)
        assert "refused" in str(refused.value), refused.value  # not left waiting in a backlog
        s.sendall(body[10:])
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["labels"] == want
    assert proc.wait(timeout=60) == 0
    with pytest.raises(requests.ConnectionError):  # no worker left holding the port
        requests.get(url + "/v2/health/live", timeout=2)
    log = max((bundle.parent / "logs").glob("serve-*.log"), key=lambda p: p.stat().st_mtime)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def test_batching_server_gives_each_concurrent_request_its_own_answer(bundles):
    from deploykit.serve import create_app

    b = deploykit.load_bundle(bundles["torch"])
    x = b.probe().inputs["x"][:12]
    plain = create_app([bundles["torch"]], targets=["onnx"]).test_client()
    want = [plain.post("/predict", json={"instances": x[i:i + 1 + i % 3].tolist()}).get_json()
            for i in range(8)]
    app = create_app([bundles["torch"]], targets=["onnx"], batch_window_ms=100)
    runner = app.extensions["deploykit"]["models"][b.name].served["onnx"].runner
    calls, run = [], runner.predict
    runner.predict = lambda arrays: calls.append(1) or run(arrays)
    got: dict[int, dict] = {}

    def ask(i):
        r = app.test_client().post("/predict", json={"instances": x[i:i + 1 + i % 3].tolist()})
        got[i] = r.get_json()
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    for i in range(8):
        assert got[i]["labels"] == want[i]["labels"]
        np.testing.assert_allclose(got[i]["predictions"], want[i]["predictions"], atol=1e-6)
    assert len(calls) < 8  # coalesced into fewer runtime calls than requests


FAST_PATH_BODIES = [
    b'{"instances": [[0.5, 1, 2.0' + b", 0" * 61 + b"]]}",
    b'{"instances": [[true' + b", 0" * 63 + b"]]}",
    b'{"instances": [[1e39' + b", 0" * 63 + b"]]}",
    b'{"instances": [[NaN' + b", 0" * 63 + b"]]}",
    b'{"instances": []}', b'{"instances": [[]]}', b'[1, 2]', b'{"nope": 1}', b"{not json",
    b'{"instances": [[0]], "inputs": {"x": [[0]]}}',
    b'{"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [' +
    b", ".join([b"0.25"] * 64) + b"]}]}",
    b'{"inputs": [{"name": "x", "shape": [2, 64], "datatype": "FP32", "data": [1]}]}',
    b'{"inputs": [{"name": "x", "shape": [1, 64], "datatype": "BOOL", "data": [true]}]}',
    b'{"id": 3, "inputs": []}', b'{"inputs": [{"name": {"a": 1}}]}',
    b'{"instances":' + b"[" * 5000 + b"]" * 5000 + b"}",
]


@pytest.mark.parametrize("body", FAST_PATH_BODIES)
def test_fast_path_answers_as_flask_does(bundles, body):
    """/predict and /infer are answered before Flask; a query string sends the same request
    through Flask. Status and body must be the same, for good requests and bad."""
    from deploykit.serve import create_app

    name = deploykit.load_bundle(bundles["torch"]).name
    client = create_app([bundles["torch"]], targets=["onnx"]).test_client()
    for path in ("/predict", f"/v2/models/{name}/infer"):
        fast = client.post(path, data=body)
        flask = client.post(path + "?via=flask", data=body)
        assert (fast.status_code, fast.get_json()) == (flask.status_code, flask.get_json()), path


def _binary(n_bytes: int, declared: int, header: str | None = None) -> tuple[bytes, dict]:
    head = json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32",
                                   "parameters": {"binary_data_size": declared}}]}).encode()
    data = np.linspace(0, 16, 64, dtype="<f4").tobytes()[:n_bytes]
    return head + data, {"Inference-Header-Content-Length": header or str(len(head))}


@pytest.mark.parametrize("n_bytes, declared, header", [
    (256, 256, None), (255, 256, None), (256, 256, "99999"), (256, 256, "x")])
def test_fast_path_takes_the_binary_extension_as_flask_does(bundles, n_bytes, declared, header):
    from deploykit.serve import create_app

    name = deploykit.load_bundle(bundles["torch"]).name
    client = create_app([bundles["torch"]], targets=["onnx"]).test_client()
    body, headers = _binary(n_bytes, declared, header)
    path = f"/v2/models/{name}/infer"
    fast = client.post(path, data=body, headers=headers)
    flask = client.post(path + "?via=flask", data=body, headers=headers)
    assert (fast.status_code, fast.get_json()) == (flask.status_code, flask.get_json())
    assert fast.status_code == (200 if (n_bytes, header) == (256, None) else 400), fast.get_json()


def test_405_names_the_allowed_methods_and_wrong_field_types_are_400(bundles):
    from deploykit.serve import create_app

    client = create_app([bundles["sk"]]).test_client()
    r = client.delete("/predict")
    assert r.status_code == 405 and r.headers["Allow"].split(", ") and "POST" in r.headers["Allow"]
    assert r.is_json
    name = deploykit.load_bundle(bundles["sk"]).name
    body = {"id": 5, "inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32",
                                 "data": [0.0] * 64}]}
    r = client.post(f"/v2/models/{name}/infer", json=body)
    assert r.status_code == 400 and "'id' must be a JSON string" in r.get_json()["error"]


def test_page_and_openapi(server, bundles):
    html = requests.get(server["url"] + "/").text
    assert "digits-sklearn" in html and "onnx-web" in html and "PASS" in html
    for b in map(deploykit.load_bundle, bundles.values()):  # each bundle's report, linked
        assert f'href="/report/{b.name}"' in html
        r = requests.get(f"{server['url']}/report/{b.name}")
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
        for a in b.artifacts:  # the same cells, on the page and in the report
            cell = (f'data-flow="{b.name}" data-target="{a.target}" '
                    f'data-status="{a.parity.status}"')
            assert cell in html and f'data-target="{a.target}" data-status=' \
                f'"{a.parity.status}"' in r.text
            assert " → ".join(a.route) in html
    r = requests.get(server["url"] + "/report/nothing")
    assert r.status_code == 404 and "unknown model 'nothing'" in r.json()["error"]
    doc = requests.get(server["url"] + "/openapi.json").json()
    assert doc["openapi"].startswith("3.") and "/v2/models/{model}/infer" in doc["paths"]
    r = requests.get(server["url"] + "/web/engines.mjs")
    assert r.status_code == 200 and "loadArtifact" in r.text


def test_the_page_button_predicts_on_every_artifact_in_chromium(server, bundles):
    """The server page's button, clicked in a real browser: every served artifact and every
    browser artifact names the class the original model gave the example row."""
    from playwright.sync_api import sync_playwright

    from deploykit.browser import CHROMIUM, CHROMIUM_ARGS

    b = deploykit.load_bundle(bundles["sk"])
    want = json.dumps([str(int(np.argmax(b.probe().reference["probabilities"][0])))])
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server["url"] + "/")
            section = page.locator(f'section[data-model="{b.name}"]')
            section.locator("button").click()
            answers = section.locator(".answers")
            answers.filter(has_text="browser").wait_for(timeout=120_000)
            lines = answers.text_content().splitlines()
        finally:
            browser.close()
    assert sorted(line.split(":")[0] for line in lines) == \
        ["browser onnx-web", "server onnx"], lines
    assert all(line.endswith(": " + want) for line in lines), (want, lines)


def test_validate_refuses_a_body_of_unknown_fields_and_an_empty_target(server, bundles):
    """``{"instance": rows}`` (a typo) re-checked the probe set and said passed; ``?target=``
    (empty) answered with the default target."""
    name = deploykit.load_bundle(bundles["torch"]).name
    r = requests.post(f"{server['url']}/validate?model={name}",
                      json={"instance": np.zeros((2, 64)).tolist()})
    assert r.status_code == 400 and "unknown field(s) ['instance']" in r.json()["error"], r.text
    r = requests.post(f"{server['url']}/predict?model={name}&target=",
                      json={"instances": np.zeros((2, 64)).tolist()})
    assert r.status_code == 404 and "no served target ''" in r.json()["error"], r.text


@pytest.mark.parametrize("workers", ["2", "1"])
def test_a_runtime_that_cannot_load_stops_the_server_with_one_error(bundles, workers, tmp_path):
    """An artifact whose runtime cannot open (here onnxruntime, shadowed by a package that
    fails to import): gunicorn's workers exited 2, not its boot-failure 3, so the master forked
    them again and again (about 5 a second, forever); waitress said the error twice."""
    fake = tmp_path / "site" / "onnxruntime"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('simulated: no onnxruntime here')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(fake.parent), *filter(None, [os.environ.get("PYTHONPATH")])])}
    r = subprocess.run([sys.executable, "-m", "deploykit", "serve", str(bundles["torch"]),
                        "--port", str(shared.free_port()), "--workers", workers,
                        "--targets", "onnx"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2, r.stderr[-3000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    loads = [e for e in errors if "onnx: cannot load" in e and "no onnxruntime here" in e]
    if workers == "1":
        assert errors == loads and len(loads) == 1, errors
    else:  # each worker that booted says why, then the master stops them all
        assert 1 <= len(loads) <= 2 and len(errors) == len(loads) + 1, errors
        assert errors[-1] == "error: the workers stopped (gunicorn exit code 3)", errors
    assert "Traceback" not in r.stderr, r.stderr[-3000:]


def _answer_before_sending(port: int, head: bytes, piece: bytes, most: int) -> tuple[bytes, int]:
    """Send ``head`` then ``piece`` after ``piece`` (up to ``most`` bytes) until the server
    answers: its answer, and how much of the body it had been sent."""
    import select

    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head)
        while sent < most:
            readable, writable, _ = select.select([s], [s], [], 10)
            if readable:
                return s.recv(65536), sent
            if writable:
                s.sendall(piece)
                sent += len(piece)
        s.settimeout(20)
        return s.recv(65536), sent


def test_one_waitress_process_refuses_a_body_over_the_limit_as_it_arrives(bundles):
    """waitress buffered a whole body (to a temporary file, up to its own 1 GB) before the
    app could refuse it: a 200 MB post was received in full before its 413."""
    proc, url = shared.serve(bundles["torch"], "--workers", "1", "--targets", "onnx",
                             "--max-body-mb", "1")
    port, block = int(url.rsplit(":", 1)[1]), b" " * 65536
    try:
        for head, piece in ((b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                             % (200 << 20), block),
                            (b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                             b"chunked\r\n\r\n", b"10000\r\n" + block + b"\r\n")):
            answer, sent = _answer_before_sending(port, head, piece, 100 << 20)
            assert answer.startswith(b"HTTP/1.1 413"), (answer[:200], sent)
            assert sent < 20 << 20, sent  # refused long before the end
            assert b"application/json" in answer.split(b"\r\n\r\n")[0].lower(), answer[:300]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
