"""Device packages, checked in device-like virtual environments that hold only numpy and one
runtime (no deploykit, TensorFlow or PyTorch), in tflite-runtime 2.14, and in the phone
runtimes' Python builds."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import shared
from conftest import run_cli
from sources_for_tests import log_features_module

import deploykit
from deploykit.errors import BundleError
from deploykit.package import package, tflite_compat

pytestmark = pytest.mark.slow  # packages the shared digits bundles, builds device venvs

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
PATHS = ("sklearn", "tensorflow", "torch", "keras-tensorflow", "keras-torch")
TFLITE = ("tflite", "tflite-fp16", "tflite-int8")


def _venv(*packages: str) -> Path:
    python = shared.venv(*packages)
    probe = ("import importlib.util as u, sys; "
             "sys.exit(any(u.find_spec(m) for m in ('deploykit', 'tensorflow', 'torch')))")
    assert subprocess.run([str(python), "-c", probe]).returncode == 0
    root = python.parents[1]
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    ARTIFACTS.mkdir(exist_ok=True)  # reported at the end of the run (conftest), not asserted
    with (ARTIFACTS / "device-venvs.txt").open("a") as f:
        f.write(f"{' + '.join(packages)}: {size / 2**20:.0f} MB on disk\n")
    return python


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """A digits bundle from each of the five flows (shared with the other test files), plus
    a user model tflite-runtime 2.14 cannot fully run (its int8 variant needs LOG version 2)."""
    out = {flow: d["bundle"] for flow, d in shared.digits().items()}
    module, sample = log_features_module()
    root = tmp_path_factory.mktemp("pkg")
    r = deploykit.export(module, ["tflite", "tflite-int8"], sample=sample, out=root / "logfeat",
                         quiet=True)
    assert r.ok, [c.reason for c in r.cells]
    out["logfeat"] = r.bundle
    return out


@pytest.fixture(scope="module")
def edge_packages(bundles, tmp_path_factory):
    root = tmp_path_factory.mktemp("edge")
    return {name: package(b, "edge", root / name) for name, b in bundles.items()}


@pytest.fixture(scope="module")
def litert_python():
    return _venv("numpy", "ai-edge-litert")


@pytest.fixture(scope="module")
def ort_python():
    return _venv("numpy", "onnxruntime")


@pytest.fixture(scope="module")
def tflite214_python():
    return _venv("numpy<2", "tflite-runtime==2.14.0")


def _verify(python: Path, pkg: Path, script: str = "run.py") -> subprocess.CompletedProcess:
    return subprocess.run([str(python), str(pkg / script), str(pkg), "--verify"],
                          capture_output=True, text=True, timeout=600)


def _lines(r: subprocess.CompletedProcess) -> dict[str, str]:
    return {ln.split()[0]: ln for ln in r.stdout.splitlines() if ln.strip() and ln[0] != " "}


def _targets(pkg: Path) -> dict[str, dict]:
    return {a["target"]: a for a in json.loads((pkg / "package.json").read_text())["artifacts"]}


@pytest.mark.parametrize("path", PATHS)
def test_every_tflite_artifact_verifies_with_only_litert(edge_packages, litert_python, path):
    pkg = edge_packages[path]
    assert set(TFLITE) <= set(_targets(pkg))
    r = _verify(litert_python, pkg)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = _lines(r)
    for t in TFLITE:
        assert lines[t].split()[1] == "PASS", lines[t]
    assert "skipped" in lines["onnx"]  # no onnxruntime on this device


@pytest.mark.parametrize("path", PATHS)
def test_every_onnx_artifact_verifies_with_only_onnxruntime(edge_packages, ort_python, path):
    pkg = edge_packages[path]
    r = _verify(ort_python, pkg)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = _lines(r)
    assert lines["onnx"].split()[1] == "PASS"
    assert all("skipped" in lines[t] for t in _targets(pkg) if t != "onnx")


def test_tflite_runtime_2_14_loads_each_model_or_package_flagged_it(edge_packages,
                                                                    tflite214_python):
    outcomes = {"passed": [], "flagged": []}
    for name, pkg in edge_packages.items():
        arts = {t: a for t, a in _targets(pkg).items() if a["runtime"] == "tflite"}
        if not arts:
            continue
        r = _verify(tflite214_python, pkg)
        lines, out = _lines(r), r.stdout
        for t, a in arts.items():
            lacks = a["older_runtimes"]["tflite-runtime 2.14"]
            if lacks:  # flagged at package time: the real runtime must indeed refuse it
                assert lines[t].split()[1] == "FAIL", out
                assert ("cannot load it" in lines[t] or "cannot run it" in lines[t]) \
                    and lacks[0] in out, out
                outcomes["flagged"].append((name, t, lacks))
            else:
                assert lines[t].split()[1] == "PASS", out
                outcomes["passed"].append((name, t))
    assert len(outcomes["passed"]) >= 4 * 3 + 2  # the four network paths; sklearn's float ones
    flagged = {(name, t): lacks for name, t, lacks in outcomes["flagged"]}
    assert set(flagged) == {("logfeat", "tflite-int8"), ("sklearn", "tflite-int8")}
    assert flagged["logfeat", "tflite-int8"] == ["LOG version 2 (tflite-runtime 2.14 has "
                                                 "version 1)"]  # an op version it lacks
    [why] = flagged["sklearn", "tflite-int8"]  # a kernel it lacks: the SVM's int8 division
    assert "int8 DIV" in why and "lacks that kernel" in why


def test_package_command_warns_before_the_device_finds_out(bundles, tmp_path):
    r = run_cli("package", str(bundles["logfeat"]), "--for", "edge", "--out",
                str(tmp_path / "p"))
    assert r.returncode == 0, r.stderr
    assert ("warning: tflite-int8 will not run on tflite-runtime 2.14: it needs LOG version 2 "
            "(tflite-runtime 2.14 has version 1)") in r.stderr
    assert "tflite-runtime 2.14: needs LOG version 2" in (tmp_path / "p" / "README.md").read_text()


def _measure_tool():
    spec = importlib.util.spec_from_file_location("measure", ROOT / "tools" / "measure_tflite_ops.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_op_table_is_what_tflite_runtime_2_14_loads(tflite214_python, tmp_path):
    """Re-measure the committed table on the real runtime binary, and check by hand an op
    whose versions do not start at 1 (BROADCAST_TO has 2 and 3 only in 2.14)."""
    tool = _measure_tool()
    committed = json.loads((Path(tflite_compat.__file__).with_name(
        tflite_compat.RUNTIMES["tflite-runtime 2.14"])).read_text())["ops"]
    assert tool.measure(str(tflite214_python)) == committed
    code = committed["BROADCAST_TO"]["code"]
    for version, loads in ((1, False), (2, True), (3, True), (4, False)):
        model = tmp_path / f"b{version}.tflite"
        model.write_bytes(tool.model(code, version))
        lacks = tflite_compat.missing_ops(model)
        r = subprocess.run([str(tflite214_python), "-c", "import sys; from tflite_runtime."
                            "interpreter import Interpreter; Interpreter(model_path=sys.argv[1])",
                            str(model)], capture_output=True, text=True, timeout=60)
        assert (r.returncode == 0) is loads and (lacks == []) is loads, (version, lacks, r.stderr)
    assert lacks == ["BROADCAST_TO version 4 (tflite-runtime 2.14 has version 2 to 3)"]


def test_operator_codes_agree_with_the_schema_reader(edge_packages):
    from ai_edge_litert import schema_py_generated as s

    for pkg in edge_packages.values():
        for a in _targets(pkg).values():
            if a["runtime"] != "tflite":
                continue
            data = (pkg / a["path"]).read_bytes()
            m = s.Model.GetRootAs(data, 0)
            expected = [(max(m.OperatorCodes(i).BuiltinCode(),
                             m.OperatorCodes(i).DeprecatedBuiltinCode()),
                         m.OperatorCodes(i).Version()) for i in range(m.OperatorCodesLength())]
            assert [(o.code, o.version) for o in tflite_compat.operator_codes(data)] == expected
    with pytest.raises(BundleError, match="not a TFLite flatbuffer"):
        tflite_compat.operator_codes(b"\x00" * 64)


def test_operator_code_reader_on_odd_and_damaged_files(edge_packages):
    from ai_edge_litert import schema_py_generated as s

    tool = _measure_tool()
    # a code above 127 lives in builtin_code (the byte field holds 127); version 1 is the
    # schema default, so the writer leaves the field out
    assert tflite_compat.operator_codes(tool.model(199, 1)) == [tflite_compat.OpCode(199, 1)]
    assert tflite_compat.operator_codes(tool.model(9, 7)) == [tflite_compat.OpCode(9, 7)]
    data = (edge_packages["logfeat"] / "models" / "tflite-int8" / "model_int8.tflite").read_bytes()
    good = tflite_compat.operator_codes(data)
    for n in range(len(data)):  # every truncation: a clean BundleError or the same answer
        try:
            assert tflite_compat.operator_codes(data[:n]) == good
        except BundleError:
            pass
    rng = np.random.default_rng(0)
    head = 256  # the operator codes sit near the start
    for _ in range(3000):  # random byte damage: never an unhandled exception
        bad = bytearray(data)
        for i in rng.integers(0, head, size=3):
            bad[i] = int(rng.integers(0, 256))
        try:
            tflite_compat.operator_codes(bytes(bad))
        except BundleError:
            pass
    m = s.ModelT.InitFromObj(s.Model.GetRootAs(tool.model(32, 1), 0))
    m.operatorCodes[0].customCode = "FlexErf"
    import flatbuffers

    b = flatbuffers.Builder(256)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    assert tflite_compat.operator_codes(bytes(b.Output()))[0].custom == "FlexErf"
    assert "custom op 'FlexErf'" in tflite_compat.missing_ops(bytes(b.Output()))[0]


def test_tflite_metadata_is_read_back_by_tflite_support(edge_packages, bundles, tmp_path_factory):
    """tflite-support's MetadataDisplayer (the reference reader) sees labels and normalization."""
    python = _venv("tflite-support==0.4.4")
    pkg = edge_packages["keras-torch"]
    script = ("import json, sys\nfrom tflite_support import metadata as m\n"
              "d = m.MetadataDisplayer.with_model_file(sys.argv[1])\n"
              "print(json.dumps({'meta': json.loads(d.get_metadata_json()), "
              "'files': d.get_packed_associated_file_list(), "
              "'labels': d.get_associated_file_buffer('labels.txt').decode()}))")
    x = np.load(bundles["keras-torch"] / "probe" / "inputs.npz")
    x = x[x.files[0]]
    for t in TFLITE:
        r = subprocess.run([str(python), "-c", script, str(pkg / _targets(pkg)[t]["path"])],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        got = json.loads(r.stdout)
        assert got["files"] == ["labels.txt"]
        assert got["labels"] == (pkg / "labels.txt").read_text()
        assert got["labels"].splitlines() == [str(i) for i in range(10)]
        sub = got["meta"]["subgraph_metadata"][0]
        (inp,), (out,) = sub["input_tensor_metadata"], sub["output_tensor_metadata"]
        norm = inp["process_units"][0]
        assert norm["options_type"] == "NormalizationOptions"
        assert norm["options"] == {"mean": [0.0], "std": [1.0]}
        assert inp["stats"]["min"] == [pytest.approx(float(x.min()))]
        assert inp["stats"]["max"] == [pytest.approx(float(x.max()))]
        assert out["associated_files"][0]["type"] == "TENSOR_AXIS_LABELS"


def _run_phone(pkg: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the package's phone.py --verify and record which frameworks it imported
    (``r.imported``, from deploykit / tensorflow / torch / keras)."""
    code = ("import json, runpy, sys\nsys.argv = ['phone.py', *sys.argv[1:]]\ncode = 0\n"
            "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SystemExit as e:\n    code = e.code\n"
            "print('imported:', json.dumps(sorted({'deploykit', 'tensorflow', 'torch', 'keras'}"
            " & {m.split('.')[0] for m in sys.modules})))\nsys.exit(code)")
    r = subprocess.run([sys.executable, "-c", code, str(pkg), "--verify", *args], cwd=pkg,
                       capture_output=True, text=True, timeout=600)
    tail = [ln for ln in r.stdout.splitlines() if ln.startswith("imported: ")]
    r.imported = json.loads(tail[-1].split(" ", 1)[1]) if tail else None
    return r


@pytest.mark.parametrize("device, flow", [("android", "torch"), ("ios", "torch"),
                                          ("android", "sklearn")])
def test_phone_package_passes_probe_set_in_the_mobile_runners(bundles, tmp_path, device, flow):
    """A scikit-learn classifier's LiteRT model lists its label tensor last: phone.py read
    that as the class scores (33 % agreement); outputs are now taken by name."""
    pkg = package(bundles[flow], device, tmp_path / device)
    assert {"tflite", "executorch"} <= set(_targets(pkg))
    r = _run_phone(pkg)  # phone.py must not lean on deploykit
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "deploykit" not in r.imported
    lines = _lines(r)
    for t in _targets(pkg):
        assert lines[t].split()[1] == "PASS", r.stdout
    assert "labels from model metadata" in lines["tflite"]
    readme = (pkg / "README.md").read_text()
    assert 'org.pytorch:executorch-android:1.' in readme and "swiftpm-" in readme
    assert "com.google.ai.edge.litert:litert:2." in readme


def test_litert_phone_run_imports_no_framework(bundles, tmp_path):
    pkg = package(bundles["logfeat"], "android", tmp_path / "android")
    readme = (pkg / "README.md").read_text()
    assert "litert:litert:" in readme and "executorch" not in readme  # only what it holds
    r = _run_phone(pkg, "--runtime", "litert")
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert r.imported == []
    assert _lines(r)["tflite-int8"].split()[1] == "PASS"


def test_edge_serve_and_input_answer_as_the_original_and_refuse_bad_rows_by_name(
        bundles, edge_packages, litert_python, tmp_path):
    """``run.py --serve`` (what a device runs behind its app) and ``--input``: the probe rows
    get the original framework's answers; rows of the wrong shape or not numbers get a 400
    (``--input``: one error line, exit 2) naming the input and what it takes."""
    pkg, b = edge_packages["torch"], deploykit.load_bundle(bundles["torch"])
    probe = b.probe()
    x, want = probe.inputs["x"][:5], probe.reference["probabilities"][:5]
    post = shared.edge_run(litert_python, pkg)
    try:
        status, body = post({"instances": x.tolist()})
        assert status == 200, body
        np.testing.assert_allclose(body["predictions"], want, atol=1e-4, rtol=1e-3)
        assert body["labels"] == [b.labels[i] for i in want.argmax(1)]
        for bad, says in (({"instances": x[:, :-1].tolist()}, "input 'x': expected shape "
                                                              "[batch, 64], got [5, 63]"),
                          ({"instances": [["a"] * 64]}, "input 'x': expected numbers"),
                          ({"rows": x.tolist()}, "instances"),
                          ([1, 2], "expected {\"instances\""),  # was a TypeError's words
                          ({"instances": np.full((1, 64), 1e39).tolist()}, "beyond float32")):
            status, body = post(bad)
            assert status == 400 and says in body["error"], body
    finally:
        post.stop()
    np.save(tmp_path / "x.npy", x)
    r = subprocess.run([str(litert_python), str(pkg / "run.py"), str(pkg), "--input",
                        str(tmp_path / "x.npy")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(json.loads(r.stdout)["predictions"], want, atol=1e-4, rtol=1e-3)
    np.savez(tmp_path / "x.npz", x=x)  # as export --sample takes it
    r = subprocess.run([str(litert_python), str(pkg / "run.py"), str(pkg), "--input",
                        str(tmp_path / "x.npz")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(json.loads(r.stdout)["predictions"], want, atol=1e-4, rtol=1e-3)
    np.save(tmp_path / "short.npy", x[:, :10])
    r = subprocess.run([str(litert_python), str(pkg / "run.py"), str(pkg), "--input",
                        str(tmp_path / "short.npy")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "[batch, 64]" in r.stderr
    assert "Traceback" not in r.stderr
    np.save(tmp_path / "none.npy", x[:0])
    r = subprocess.run([str(litert_python), str(pkg / "run.py"), str(pkg), "--input",
                        str(tmp_path / "none.npy")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "got [0, 64]" in r.stderr and "Traceback" not in r.stderr


def test_edge_run_picks_the_artifact_target_names(bundles, edge_packages, litert_python,
                                                  tmp_path):
    """``--target``: ``--input`` runs that artifact (the int8 one gives what deploykit's own
    LiteRT runner gives on its file, not the fp32 answers), ``--verify`` checks only it; a
    target the package lacks, or whose runtime is not installed, is one error line naming
    what to do."""
    pkg, b = edge_packages["torch"], deploykit.load_bundle(bundles["torch"])
    x = b.probe().inputs["x"][:6]
    np.save(tmp_path / "x.npy", x)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(litert_python), str(pkg / "run.py"), str(pkg), *args],
                              capture_output=True, text=True, timeout=120)

    r = run("--input", str(tmp_path / "x.npy"), "--target", "tflite-int8")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    want = b.predict(x, target="tflite-int8").outputs["probabilities"]
    assert got["target"] == "tflite-int8"
    np.testing.assert_allclose(got["predictions"], want, atol=1e-6)
    fp32 = b.predict(x, target="tflite").outputs["probabilities"]
    assert not np.allclose(got["predictions"], fp32, atol=1e-6)  # int8 is not fp32
    r = run("--verify", "--target", "tflite-fp16")
    assert r.returncode == 0 and list(_lines(r)) == ["tflite-fp16"], r.stdout
    for args, says in ((["--target", "nope"], "this package has tflite"),
                       (["--target", "onnx"], "runs on onnxruntime, not installed here")):
        r = run("--input", str(tmp_path / "x.npy"), *args)
        assert r.returncode == 2 and r.stderr.startswith("error: --target "), r.stderr
        assert says in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run("--verify", "--target", "onnx")  # said "skipped", then "no artifact can run here"
    assert r.returncode == 2 and "runs on onnxruntime, not installed here" in r.stderr, r.stderr


def test_size_and_metric_change_match_an_independent_count(bundles, edge_packages, litert_python):
    """The int8 metric change in package.json and `deploykit inspect` equals the accuracy
    change measured here: the original model and the packaged int8 file on the held-out split."""
    from deploykit.training import load_model, read_test_split

    folder = shared.digits(["torch"])["torch"]["model"]
    X, y, _ = read_test_split(folder)
    original = float(np.mean(load_model(folder).predict(X)["probabilities"].argmax(1) == y))
    pkg = edge_packages["torch"]
    int8 = _targets(pkg)["tflite-int8"]
    script = ("import sys, numpy as np\nsys.path.insert(0, sys.argv[1])\nimport run, json\n"
              "meta = run.load_package(__import__('pathlib').Path(sys.argv[1]))\n"
              "art = [a for a in meta['artifacts'] if a['target'] == 'tflite-int8'][0]\n"
              "m = run.open_model(__import__('pathlib').Path(sys.argv[1]), art)\n"
              "y = run.predict(m, art, np.load(sys.argv[2]), meta['main_output'])\n"
              "print(json.dumps(y.argmax(1).tolist()))")
    np.save(pkg.parent / "x.npy", X.astype(np.float32))
    r = subprocess.run([str(litert_python), "-c", script, str(pkg), str(pkg.parent / "x.npy")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    quantized = float(np.mean(np.array(json.loads(r.stdout)) == y))
    assert int8["metric"] == "accuracy"
    assert int8["metric_change"] == pytest.approx(quantized - original, abs=1e-4)
    def ratio(root: Path) -> float:
        return ((root / "tflite-int8" / "model_int8.tflite").stat().st_size
                / (root / "tflite" / "model.tflite").stat().st_size)

    assert int8["size_vs_fp32"] == pytest.approx(ratio(pkg / "models"), abs=1e-3)
    q = ratio(Path(bundles["torch"]) / "artifacts")  # inspect shows the bundle's files
    assert q < 0.5
    shown = run_cli("inspect", str(bundles["torch"]))
    row = next(ln for ln in shown.stdout.splitlines() if ln.startswith("│ tflite-int8"))
    assert f"{q:.2f}x" in row and f"accuracy {quantized - original:+.4f}" in row


def test_packages_are_deterministic_and_carry_checked_hashes(bundles, litert_python, tmp_path):
    a = package(bundles["torch"], "edge", tmp_path / "a" / "pkg")
    b = package(bundles["torch"], "edge", tmp_path / "b" / "pkg")
    assert a.with_suffix(".zip").read_bytes() == b.with_suffix(".zip").read_bytes()
    meta = json.loads((a / "package.json").read_text())
    assert set(meta["sha256"]) >= {"run.py", "labels.txt", "models/tflite/model.tflite"}
    model = a / "models" / "tflite" / "model.tflite"
    model.write_bytes(model.read_bytes()[:-4])
    r = _verify(litert_python, a)
    assert r.returncode != 0 and "does not match its sha256" in r.stderr
    # package.json vouches for itself: an edited one (a target renamed: run.py then said its
    # runtime was not installed, and passed) is refused, a broken one is one line
    text = (b / "package.json").read_text()
    for edited, says in ((text.replace('"tflite"', '"tflitex"'), "changed after packaging"),
                         ("{", "package.json cannot be read")):
        (b / "package.json").write_text(edited)
        r = _verify(litert_python, b)
        assert r.returncode != 0 and says in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_package_replaces_only_a_package_and_zips_beside_a_dotted_name(bundles, tmp_path):
    """``--out`` was removed whatever it held (a user's folder, the bundle itself); a folder
    named ``v1.2`` was zipped as ``v1.zip``."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    for out in (mine, Path(bundles["torch"])):
        with pytest.raises(BundleError, match="exists and is not a deploykit package"):
            package(bundles["torch"], "edge", out)
    assert (mine / "notes.txt").read_text() == "mine"
    deploykit.load_bundle(bundles["torch"])  # still whole
    pkg = package(bundles["torch"], "edge", tmp_path / "v1.2")
    assert (tmp_path / "v1.2.zip").is_file() and not (tmp_path / "v1.zip").exists()
    assert package(bundles["torch"], "edge", pkg) == pkg  # an older package is replaced


def test_failed_packaging_leaves_nothing_half_written(bundles, tmp_path, monkeypatch):
    import deploykit.package.device as pk

    out = package(bundles["torch"], "edge", tmp_path / "pkg")
    before = (out / "package.json").read_bytes()
    real, calls = pk._add_artifact, []

    def fails_on_the_second(*args):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(*args)

    monkeypatch.setattr(pk, "_add_artifact", fails_on_the_second)
    with pytest.raises(OSError, match="No space left"):
        package(bundles["torch"], "edge", tmp_path / "pkg")
    assert (out / "package.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg", "pkg.zip"]


def test_bad_package_requests(bundles, tmp_path):
    with pytest.raises(BundleError, match="unknown device"):
        package(bundles["torch"], "watch", tmp_path / "w")
    with pytest.raises(BundleError, match="no passing artifact for web"):
        package(bundles["logfeat"], "web", tmp_path / "w")  # TFLite only


def test_a_model_with_several_outputs_is_refused_by_name(tmp_path):
    """Device runners read one output: a torch model giving logits and probabilities is
    refused, naming both, and nothing is written (a classifier's label does not count)."""
    import torch

    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x):
            return torch.softmax(self.fc(x), dim=1), self.fc(x)

    x = np.random.default_rng(0).normal(size=(24, 4)).astype(np.float32)
    deploykit.export(TwoHeads().eval(), "onnx", out=tmp_path / "two", sample=x, quiet=True)
    with pytest.raises(BundleError, match=r"gives 2 outputs \['probabilities', 'output_1'\]"):
        package(tmp_path / "two", "edge", tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists() and not (tmp_path / "pkg.zip").exists()


def test_an_edge_package_of_one_sigmoid_output_serves_the_class_each_row_reaches(
        ort_python, tmp_path):
    """A binary classifier's sigmoid column: ``run.py --serve`` names the second class
    wherever the score reaches 0.5 (it took the top of one column: always the first)."""
    import torch
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import StandardScaler

    X = StandardScaler().fit_transform(load_breast_cancer().data).astype(np.float32)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(30, 1), torch.nn.Sigmoid()).eval()
    with torch.no_grad():
        score = net(torch.from_numpy(X[:40])).numpy()[:, 0]
    want = ["benign" if s >= 0.5 else "malignant" for s in score]
    assert set(want) == {"benign", "malignant"}
    assert deploykit.export(net, "onnx", out=tmp_path / "b", sample=X[:60], quiet=True,
                            task="classification", labels=["malignant", "benign"]).ok
    post = shared.edge_run(ort_python, package(tmp_path / "b", "edge", tmp_path / "pkg"))
    try:
        status, body = post({"instances": X[:40].tolist()})
    finally:
        post.stop()
    assert status == 200 and body["labels"] == want, body


def test_an_edge_package_fills_missing_values_as_the_model_does(ort_python, tmp_path):
    """A HistGradientBoosting model fitted with NaN: ``run.py --serve`` takes JSON null as a
    missing value (it refused NaN for every model) and answers as scikit-learn does."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = load_breast_cancer(return_X_y=True)
    X = X.astype(np.float32)
    X[np.random.default_rng(0).random(X.shape) < 0.1] = np.nan
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(X, y)
    assert deploykit.export(model, "onnx", out=tmp_path / "b", sample=X[:200], quiet=True,
                            labels=["malignant", "benign"]).ok
    post = shared.edge_run(ort_python, package(tmp_path / "b", "edge", tmp_path / "pkg"))
    rows = [[None if np.isnan(v) else float(v) for v in row] for row in X[200:240]]
    try:
        status, body = post({"instances": rows})
        inf_status, inf_body = post({"instances": [[1e39] * 30]})
    finally:
        post.stop()
    want = [["malignant", "benign"][c] for c in model.predict(X[200:240])]
    assert status == 200 and body["labels"] == want, body
    assert inf_status == 400 and "contains Inf" in str(inf_body), inf_body


def test_an_edge_package_serves_rows_of_words_as_the_model_answers_them(ort_python, tmp_path):
    """A model fitted on a table with a column of words: ``run.py --serve`` takes rows of
    ``{column: value}`` and the words (it said "expected numbers, got <U21"), refuses an
    unknown word and a number that is no code by column (code 9 of 3 words was predicted)."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"city": rng.choice(["lima", "oslo", "rome"], 200),
                          "size": rng.uniform(0, 10, 200)})
    y = (frame["city"] == "rome") ^ (frame["size"] > 5)
    model = make_pipeline(ColumnTransformer([("w", OneHotEncoder(), ["city"])],
                                            remainder="passthrough"), LogisticRegression())
    model.fit(frame, y)
    assert deploykit.export(model, "onnx", out=tmp_path / "b", sample=frame, quiet=True).ok
    post = shared.edge_run(ort_python, package(tmp_path / "b", "edge", tmp_path / "pkg"))
    rows = frame[:30].to_dict("records")
    try:
        status, body = post({"instances": rows})
        as_lists = post({"instances": [[r["city"], r["size"]] for r in rows]})
        unknown = post({"instances": [{"city": "paris", "size": 1.0}]})
        no_code = post({"instances": [[9, 1.0]]})
    finally:
        post.stop()
    want = [str(v) for v in model.predict(frame[:30])]
    assert status == 200 and body["labels"] == want, body
    assert as_lists == (200, body)
    assert unknown[0] == 400 and "column 'city': unknown word 'paris'" in unknown[1]["error"]
    assert no_code[0] == 400 and "codes 0 to 2, got 9" in no_code[1]["error"], no_code
    readme = (tmp_path / "pkg" / "README.md").read_text()
    assert "`city` (column 0): 0 = lima, 1 = oslo, 2 = rome" in readme
