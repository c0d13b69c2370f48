"""What the zoo tests assert, shared by the two zoo test files (one per xdist process).

Every zoo model goes through ``deploykit export MODEL --to all --sample SAMPLE`` as a user
runs it (a constant-output model through one target per runtime family), then ``deploykit
inspect`` on its bundle, and ``deploykit verify`` on some (see :data:`VERIFIED`). The commands
run through the CLI's ``main`` in the test process (:func:`in_process`), so the models share
the session's workers; ``benchmarks/bench_zoo.py`` runs the same through the executable.
Nothing may print a traceback or framework chatter; every reachable cell passes in its own runtime, except the
known limits below, each failing with its named reason (the README lists them); the server
answers with what the original model predicted.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import shared
import zoo

DEPLOYKIT = str(Path(sys.executable).with_name("deploykit"))

# (model, target) -> what the reason must say when the cell fails (it may pass: these are
# limits of a converter or number format on that model, not of deploykit's checks). Kept in
# step with the README's "Known limits".
FP16_TOLERANCE = "exceeds atol 0.01 + rtol 0.01"
KNOWN_LIMITS: dict[tuple[str, str], str] = {
    ("keras-mobilenetv3", "tflite-fp16"): FP16_TOLERANCE,
    ("keras-mobilenetv3", "tfjs-fp16"): FP16_TOLERANCE,
    ("keras-mobilenetv3", "tflite-int8"): "label agreement",
    ("keras-lstm-tokens", "tflite-int8"): "label agreement",
}
# Packaged for edge devices and re-verified there: integer ids, and a fixed batch of 4.
PACKAGED = {"keras-lstm-tokens", "torch-fixed-reshape"}
# `deploykit verify` re-runs every artifact (a minute per deep model): on one clean model and
# on the ones with known limits (its failure path), which covers what it can print.
VERIFIED = {"keras-gru", "keras-mobilenetv3", "keras-lstm-tokens", "torch-fixed-reshape",
            "torch-bert-mask", "sklearn-hgb-classifier"}
# Models with dynamic non-batch dimensions: exported at the sample's shape, and the manifest
# says so.
FIXED_AT_SAMPLE = {"keras-gru", "keras-lstm-tokens", "torch-bert-mask"}
# Keras models with recurrent layers: unrolled for the routes through a SavedModel (its
# converters cannot carry the loop), which their artifacts record.
UNROLLED = {"keras-gru", "keras-lstm-tokens"}
# Models with several named inputs (and several outputs): served by name; device packages
# refuse them by name.
SEVERAL_INPUTS = {"keras-gru", "torch-bert-mask"}
# Models fitted on a DataFrame with columns of words (its sample a .csv): each column's words
# are in the signature, and the CLI's note names them.
WORDS = {"sklearn-words-forest": {"f0": 5, "f1": 5}}
# Models whose int8 artifact is their float32 one: no mix of integer and float ops agreed
# (the quantiser keeps a column's GATHER from the raw input int8 whatever is denylisted).
INT8_AS_FLOAT32 = {"sklearn-words-forest"}
# Torch programs with a GRU: their ExecuTorch program still takes any batch (it was lowered
# again at a fixed batch of 1 when ExecuTorch's own GRU decomposition pinned the batch).
ANY_BATCH_PTE = {"torch-gru-lstm"}
# Models whose parity proves nothing: every cell must say so.
VACUOUS = {"keras-constant"}
# Every zoo model gets a cell for every target: a lost route fails the test instead of
# leaving the table. TF core models reach the PyTorch targets, and PyTorch programs SavedModel
# and TF.js, through the ONNX → Keras bridge (:mod:`deploykit.onnx_keras`).
TARGETS = ("saved_model", "tflite", "tflite-fp16", "tflite-int8", "onnx", "torchscript", "ptl",
           "executorch", "tfjs", "tfjs-fp16", "onnx-web")
BRIDGED = {"torch": {"saved_model", "tfjs", "tfjs-fp16"},
           "tensorflow": {"torchscript", "ptl", "executorch"}}


def in_process() -> Callable[..., tuple[int, str]]:
    """``deploykit ARGS`` run by the CLI's own ``main`` in this test process, so its workers
    are the session's (conftest): each zoo model then skips the TensorFlow and PyTorch imports
    a fresh process pays. What the user would see is read back from descriptors 1 and 2,
    pointed for the command at one file that every run shares (:data:`_SEEN`): workers are
    kept per terminal, and a file per test (``capfd``) would start new ones for every model.
    The command sends framework output to its run log by pointing those descriptors there, so
    ``sys.stdout``/``sys.stderr`` are the process's own streams meanwhile, as in a process of
    its own (pytest's replacements would write to its capture file directly)."""
    from deploykit import cli

    def run(*args: str) -> tuple[int, str]:
        if not _SEEN:
            _SEEN.append(tempfile.TemporaryFile())
        seen = _SEEN[0]
        seen.seek(0)
        seen.truncate()
        streams, saved = (sys.stdout, sys.stderr), (os.dup(1), os.dup(2))
        for stream in streams:
            stream.flush()
        os.dup2(seen.fileno(), 1)
        os.dup2(seen.fileno(), 2)
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        try:
            code = cli.main(list(args))
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdout, sys.stderr = streams
            for fd, saved_fd in enumerate(saved, start=1):
                os.dup2(saved_fd, fd)
                os.close(saved_fd)
        seen.seek(0)
        return code, seen.read().decode(errors="replace")
    return run


_SEEN: list = []  # the one file in_process's commands write to (see there)


def check_model(name: str, out: Path, results: dict[str, dict[str, tuple[str, str]]],
                cli: Callable[..., tuple[int, str]]) -> None:
    """Export, verify and inspect one zoo model through the CLI; assert what the module
    docstring says. Its cells (target -> (status, reason)) go into ``results`` first."""
    files = shared.zoo()[name]
    code, text, cells = zoo.export_cli(name, files, out, cli)
    results[name] = cells
    assert not shared.CHATTER.search(text), text[-3000:]
    assert cells, f"{name}: no bundle was written\n{text[-2000:]}"
    group, _ = zoo.ZOO[name]
    asked = files["targets"].split(",") if "targets" in files else TARGETS
    assert set(cells) == set(asked), sorted(cells)
    expected_ok = all(status == "pass" for status, _ in cells.values())
    assert (code == 0) == expected_ok, text[-2000:]
    for target, (status, why) in cells.items():
        if name in VACUOUS:
            assert status == "vacuous" and "same outputs for every probe input" in why
        elif (name, target) in KNOWN_LIMITS and status != "pass":
            assert KNOWN_LIMITS[name, target] in why, (target, why)
        else:
            assert status == "pass", (target, status, why)
    manifest = zoo.json.loads((out / name / "manifest.json").read_text())
    notes = manifest["source"]["notes"]
    assert (name in FIXED_AT_SAMPLE) == any("at the sample's" in n for n in notes), notes
    words = {w["name"]: len(w["words"]) for s in manifest["signature"]["inputs"]
             for w in s.get("words", ())}
    assert words == WORDS.get(name, {}), words
    assert (name in WORDS) == ("columns of words: " in text), text[-2000:]
    for a in manifest["artifacts"]:  # no mix of integer and float ops agreed: float32, said
        every = a["converter_options"].get("float32_ops", "").startswith("every op kept")
        assert every == (a["target"] == "tflite-int8" and name in INT8_AS_FLOAT32), a
        assert every == (f"note: {a['target']}: every op kept float32" in text), text[-2000:]
    for spec in manifest["signature"]["inputs"]:  # token ids: the table's rows, from the model
        rows = zoo.VOCAB.get(name, {}).get(spec["name"])
        assert spec.get("range") == (None if rows is None else [0, rows - 1]), spec
    for a in manifest["artifacts"]:
        if a["target"] == "executorch" and name in ANY_BATCH_PTE:
            assert a["batch"] is None, a
    any_length = {a["target"] for a in manifest["artifacts"] if a["any_length"]}
    if name in FIXED_AT_SAMPLE and group == "torch":  # torch.export keeps the open length
        assert "onnx" in any_length and not any_length & {"onnx-web", "tfjs"}, any_length
    else:  # Keras models are rebuilt at the fixed length; the others have none open
        assert not any_length, any_length
    for a in manifest["artifacts"]:
        bridged = a["target"] in BRIDGED.get(group, ())
        assert ("keras" in a["route"] and "onnx" in a["route"]) == bridged or \
            group not in BRIDGED, a["route"]
        unrolled = "unroll_recurrent" in a["converter_options"]
        assert unrolled == (name in UNROLLED and "saved_model" in a["route"]), a
    for command in ("verify", "inspect") if name in VERIFIED else ("inspect",):
        code, text = cli(command, str(out / name))
        assert not shared.CHATTER.search(text), text
        assert code == (0 if expected_ok or command == "inspect" else 1), text
    if name not in VACUOUS:
        serve(out / name, other_length=name in FIXED_AT_SAMPLE)
    if name in PACKAGED:
        package_for_edge(out / name, cli)
    if name in SEVERAL_INPUTS:
        code, text = cli("package", str(out / name), "--for", "edge", "--out",
                         str(out / f"{name}-edge"))
        inputs = zoo.np.load(out / name / "probe" / "inputs.npz").files
        assert code == 2 and f"takes 2 inputs {inputs}" in text, text
        assert not (out / f"{name}-edge").exists()


def package_for_edge(bundle: Path, cli: Callable[..., tuple[int, str]]) -> None:
    """``deploykit package --for edge``, then the package's own ``run.py --verify`` in a
    numpy + LiteRT and a numpy + onnxruntime environment: every packaged artifact passes."""
    pkg = bundle.with_name(bundle.name + "-edge")
    code, text = cli("package", str(bundle), "--for", "edge", "--out", str(pkg))
    assert code == 0 and not shared.CHATTER.search(text), text
    ran = 0
    for runtime in ("ai-edge-litert", "onnxruntime"):
        v = zoo.subprocess.run([str(shared.venv("numpy", runtime)), str(pkg / "run.py"), str(pkg),
                                "--verify"], capture_output=True, text=True, timeout=600)
        assert v.returncode == 0, v.stdout + v.stderr
        ran += v.stdout.count(" PASS ")
        assert " FAIL " not in v.stdout, v.stdout
    assert ran >= 2, "no packaged artifact ran"
    edge_serve(bundle, pkg)


def edge_serve(bundle: Path, pkg: Path) -> None:
    """The package's ``run.py --serve`` answers probe rows as the original did, and refuses an
    id past the model's table by name (integer inputs)."""
    import numpy as np

    import deploykit

    b = deploykit.load_bundle(bundle)
    probe, spec = b.probe(), b.signature.inputs[0]
    x = probe.inputs[spec.name][:4]
    want = probe.reference.get("probabilities", next(iter(probe.reference.values())))[:4]
    post = shared.edge_run(shared.venv("numpy", "ai-edge-litert"), pkg)
    try:
        status, body = post({"instances": x.tolist()})
        assert status == 200, body
        np.testing.assert_allclose(np.asarray(body["predictions"]).reshape(want.shape), want,
                                   atol=1e-4, rtol=1e-3)
        if spec.range is not None:
            oov = x.copy()
            oov[0, 0] = spec.range[1] + 1
            status, body = post({"instances": oov.tolist()})
            assert status == 400 and f"ids must be in [0, {spec.range[1]}]" in body["error"], body
    finally:
        post.stop()


def serve(bundle: Path, other_length: bool = False) -> None:
    """The bundle behind the server: /predict on three probe rows (as JSON, integer ids
    included) answers what the original model predicted for them; with ``other_length``,
    shorter rows get the original's answers when the default artifact takes any length,
    and otherwise a 400 naming the shape it takes."""
    import numpy as np

    import deploykit
    from deploykit.serve import create_app

    b = deploykit.load_bundle(bundle)
    probe = b.probe()
    client = create_app([bundle]).test_client()

    def body(cut: bool = False) -> dict:  # one input: rows; several: TF Serving's columns
        cols = {k: (v[:3, :-1] if cut else v[:3]).tolist() for k, v in probe.inputs.items()}
        return {"instances": next(iter(cols.values()))} if len(cols) == 1 else {"inputs": cols}

    r = client.post("/predict", json=body())
    assert r.status_code == 200, r.get_json()
    if len(probe.inputs) > 1:  # and TF Serving's rows of objects
        cols = body()["inputs"]
        by_row = client.post("/predict", json={"instances": [
            {k: v[i] for k, v in cols.items()} for i in range(3)]})
        assert by_row.get_json()["predictions"] == r.get_json()["predictions"], by_row.get_json()
    ref = probe.reference[b.signature.scores or next(iter(probe.reference))][:3]
    got = np.asarray(r.get_json()["predictions"], np.float64).reshape(ref.shape)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-3)
    if set(probe.reference) - {"label", b.signature.scores, "predictions"}:
        outputs = r.get_json()["outputs"]  # outputs beyond those: every one, by name
        assert list(outputs) == list(probe.reference), outputs.keys()
        for k, want in probe.reference.items():
            np.testing.assert_allclose(np.asarray(outputs[k]).reshape(want[:3].shape),
                                       want[:3], atol=1e-4, rtol=1e-3)
    if other_length and b.artifact(r.get_json()["target"]).any_length:  # rows cut shorter
        cols = {k: v[:3].tolist() for k, v in probe.shorter.inputs.items()}
        short = client.post("/predict", json={"inputs": cols} if len(cols) > 1 else
                            {"instances": next(iter(cols.values()))})
        assert short.status_code == 200, short.get_json()
        ref = next(iter(probe.shorter.reference.values()))[:3]
        np.testing.assert_allclose(np.asarray(short.get_json()["predictions"]).reshape(ref.shape),
                                   ref, atol=1e-4, rtol=1e-3)
    elif other_length:
        short = client.post("/predict", json=body(cut=True))
        want = f"expected shape [batch, {next(iter(probe.inputs.values())).shape[1]}"
        assert short.status_code == 400 and want in short.get_json()["error"], short.get_json()
    bad = client.post("/predict", json={"instances": [["not", "numbers"]]})
    assert bad.status_code == 400 and "error" in bad.get_json()
    for spec in b.signature.inputs:  # one id past the table: a 400 before any runtime runs
        if spec.range is not None:
            oov = {k: v[:3].tolist() for k, v in probe.inputs.items()}
            oov[spec.name][1][0] = spec.range[1] + 1
            r = client.post("/predict", json={"inputs": oov})
            want = f"input '{spec.name}': ids must be in [0, {spec.range[1]}]"
            assert r.status_code == 400 and want in r.get_json()["error"], r.get_json()


def pass_rate(results: dict[str, dict[str, tuple[str, str]]]) -> float:
    """Passing share of the reachable cells (constant-output models left out)."""
    cells = [s for name, c in results.items() if name not in VACUOUS for s, _ in c.values()]
    return sum(s == "pass" for s in cells) / max(len(cells), 1)


def table(results: dict[str, dict[str, tuple[str, str]]]) -> str:
    """The zoo's matrix as text, with the pass rate of reachable cells."""
    lines, passed, reachable = [], 0, 0
    for name, cells in results.items():
        row = ", ".join(f"{t} {s}" for t, (s, _) in cells.items())
        lines.append(f"{name:28s} {row}")
        if name not in VACUOUS:
            reachable += len(cells)
            passed += sum(s == "pass" for s, _ in cells.values())
    lines.append(f"{passed} of {reachable} reachable cells pass "
                 f"({passed / max(reachable, 1):.0%}; constant-output models excluded)")
    return "\n".join(lines)


def tests_for(groups: tuple[str, ...]):
    """The two tests of a zoo test file: one per model of ``groups``, then the table (the
    matrix, printed with ``pytest -s``, and the pass rate)."""
    models = [n for n, (group, _) in zoo.ZOO.items() if group in groups]
    results: dict[str, dict[str, tuple[str, str]]] = {}

    @pytest.mark.parametrize("name", models)
    def test_zoo_model(name, tmp_path_factory):
        check_model(name, tmp_path_factory.mktemp("zoo"), results, in_process())

    def test_zoo_table():
        assert set(results) == set(models), "run the whole file"
        print("\n" + table(results))
        assert pass_rate(results) >= 0.9, table(results)

    return test_zoo_model, test_zoo_table
