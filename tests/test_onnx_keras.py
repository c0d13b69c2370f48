"""The ONNX → Keras translator, operator by operator: each covered operator's small graph
(``onnx_op_cases.py``) gives onnxruntime's outputs under both Keras backends once translated,
and what it does not cover is refused by name. The whole models go through it in the edge
tests, the what-if (its TensorFlow and PyTorch cells) and the zoo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx_op_cases
import pytest
from onnx import helper

from deploykit.onnx_keras import OPS, UnsupportedOperator, translate

pytestmark = pytest.mark.slow  # two Keras backends in processes of their own

TESTS = Path(__file__).parent


def test_every_operator_has_a_case():
    covered = {n.op_type for case in onnx_op_cases.CASES.values() for n in case.nodes}
    assert set(OPS) <= covered, f"add a case for {sorted(set(OPS) - covered)}"


def test_each_operator_gives_onnxruntimes_outputs_under_both_backends(tmp_path):
    runs = {}
    for backend in ("tensorflow", "torch"):
        (tmp_path / backend).mkdir()
        runs[backend] = subprocess.Popen(
            [sys.executable, str(TESTS / "onnx_op_cases.py"), str(tmp_path / backend)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "KERAS_BACKEND": backend})
    for backend, proc in runs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        failures = json.loads(out.strip().splitlines()[-1])
        assert not failures, (backend, failures)


def test_operators_not_covered_are_named_all_at_once(tmp_path):
    nodes = [helper.make_node("Einsum", ["x", "x"], ["e"], equation="bi,bi->b"),
             helper.make_node("NonZero", ["e"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", 1, [None, 3])],
        [helper.make_tensor_value_info("y", 7, None)])
    path = tmp_path / "m.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(UnsupportedOperator, match=r"ONNX operator\(s\) Einsum, NonZero not "
                                                  "covered by deploykit's ONNX → Keras"):
        translate(path)


def test_constant_parts_are_folded_and_only_large_floats_become_weights(tmp_path):
    case = onnx_op_cases.Case(
        [helper.make_node("Mul", ["w", "two"], ["w2"]),  # constant: folded away
         helper.make_node("MatMul", ["x", "w2"], ["y"])],
        {"x": np.zeros((1, 100), np.float32)},
        {"w": np.ones((100, 2), np.float32), "two": np.float32(2)})
    path = tmp_path / "m.onnx"
    path.write_bytes(onnx_op_cases.model(case).SerializeToString())
    t = translate(path)
    assert [n["op"] for n in t.nodes] == ["MatMul"]
    (weight,) = t.weights.values()
    assert weight.shape == (100, 2) and np.all(weight == 2) and not t.consts


def test_an_onnx_cnn_reaches_both_families_with_its_own_signature(tmp_path):
    """A channels-first ONNX CNN (a user's ``.onnx`` file) to TorchScript, ExecuTorch,
    LiteRT and TF.js through the bridge: every artifact agrees with onnxruntime and takes the
    source's NCHW input, not a transposed one."""
    import deploykit

    rng = np.random.default_rng(3)
    case = onnx_op_cases.Case(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
         helper.make_node("Flatten", ["p"], ["f"]),
         helper.make_node("Gemm", ["f", "d", "e"], ["z"], transB=1),
         helper.make_node("Softmax", ["z"], ["probabilities"])],
        {"x": rng.normal(size=(1, 1, 8, 8)).astype(np.float32)},
        {"w": rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "b": np.zeros(4, np.float32),
         "d": rng.normal(size=(3, 64)).astype(np.float32) * 0.3, "e": np.zeros(3, np.float32)},
        ("probabilities",))
    path = tmp_path / "cnn.onnx"
    path.write_bytes(onnx_op_cases.model(case).SerializeToString())
    sample = rng.normal(size=(64, 1, 8, 8)).astype(np.float32)
    r = deploykit.export(str(path), "torchscript,executorch,tflite,tfjs", out=tmp_path / "b",
                         sample=sample, quiet=True)
    assert {c.target: c.status for c in r.cells} == dict.fromkeys(
        ["torchscript", "executorch", "tflite", "tfjs"], "pass"), [c.reason for c in r.cells]
    bundle = deploykit.load_bundle(tmp_path / "b")
    assert [s.shape[1:] for s in bundle.signature.inputs] == [(1, 8, 8)]
    for a in bundle.artifacts:  # parity fed each runtime the NCHW probe rows
        assert a.route[:2] == ("onnx", "keras") and a.parity.passed, a
    assert bundle.artifact("torchscript").batch is None  # the trace kept Flatten's batch open
    from ai_edge_litert.interpreter import Interpreter

    tflite = Interpreter(str(bundle.root / bundle.artifact("tflite").path))
    assert list(tflite.get_input_details()[0]["shape"][1:]) == [1, 8, 8]  # the runtime's own


@pytest.mark.parametrize("flow, targets", [("tensorflow", "torchscript,ptl,executorch"),
                                           ("torch", "saved_model,tfjs,tfjs-fp16")])
def test_diabetes_regressors_cross_between_the_families(flow, targets, tmp_path):
    """The regression flows through the bridge (the what-if on diabetes runs them with the
    rest of its 55 cells): every cell passes, and the task metric does not move."""
    import deploykit

    deploykit.train(flow, "diabetes", tmp_path / "m", quiet=True)
    r = deploykit.export(tmp_path / "m", targets, out=tmp_path / "b", quiet=True)
    assert [c.status for c in r.cells] == ["pass"] * 3, [c.reason for c in r.cells]
    for a in deploykit.load_bundle(tmp_path / "b").artifacts:
        assert "keras" in a.route and a.route.index("keras") == a.route.index("onnx") + 1
        metric = a.parity.metric
        assert metric["name"] == "r2" and abs(metric["drop"]) < 1e-3, metric
