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
