"""Every registered converter (graph edge) is exercised on a small model and its output is
run in the destination runtime and compared with the original framework's prediction.
A new edge without a case here fails ``test_every_edge_has_a_case``."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
from sources_for_tests import BUILDERS, sample

from deploykit import graph
from deploykit.exporting import _run_edge
from deploykit.formats.base import open_runner
from deploykit.parity import Probe, check
from deploykit.signature import Signature
from deploykit.sources import detect

# edge -> the kind of source model it is tested from (the source reaches the edge's input)
EDGE_CASES = {
    "sklearn_to_onnx": "sklearn",
    "onnx_to_onnx_web": "sklearn",
    "keras_to_saved_model": "keras",
    "keras_to_torch": "keras",
    "keras_to_torchscript": "keras",
    "keras_to_ptl": "keras",
    "saved_model_to_onnx": "saved_model",
    "saved_model_to_tfjs": "saved_model",
    "saved_model_to_tfjs_fp16": "saved_model",
    "saved_model_to_tflite": "saved_model",
    "saved_model_to_tflite_fp16": "saved_model",
    "saved_model_to_tflite_int8": "saved_model",
    "torch_to_onnx": "torch",
    "torch_to_tflite": "torch",
    "torch_to_torchscript": "torch",
    "torch_to_ptl": "torch",
    "torch_to_executorch": "torch",
    "tflite_to_tflite_fp16": "torch",
    "torch_to_tflite_int8": "torch",
}


def test_every_edge_has_a_case():
    graph.load_registry()
    assert set(EDGE_CASES) == set(graph.EDGES), "add a case for each new edge"


def _produce(source, node: str, work: Path, ctx) -> tuple[Path, dict]:
    """Materialise the source and walk the cheapest route to ``node``."""
    (work / source.node).mkdir(parents=True)
    made = {source.node: (work / source.node, {"file": source.write(work / source.node)})}
    for e in graph.plan(source.node, node):
        made[e.dst] = (work / e.dst, _run_edge(e, made[e.src], work / e.dst, ctx, 600))
    return made[node]


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_edge_converts_and_keeps_parity(name, tmp_path):
    e = graph.EDGES[name]
    model = BUILDERS[EDGE_CASES[name]]()
    source = detect(model, sample=sample())
    calib = tmp_path / "calib.npy"
    import numpy as np

    np.save(calib, sample(200))
    ctx = graph.EdgeContext(source.signature.to_dict(), str(calib))
    src = _produce(source, e.src, tmp_path / "work", ctx)
    info = _run_edge(e, src, tmp_path / "out", ctx, 600)
    assert (tmp_path / "out" / info["file"]).exists()
    sig = source.signature.to_dict()
    if info.get("batch"):
        for spec in sig["inputs"] + sig["outputs"]:
            spec["shape"][0] = info["batch"]
    dst = graph.NODES[e.dst]
    runner = open_runner(dst.runtime, tmp_path / "out" / info["file"], Signature.from_dict(sig),
                         info.get("outputs"))
    probe = Probe({"x": source.probe_inputs}, source.reference, None, source.task)
    result = check(e.dst, dst.profile, runner.predict, probe, info.get("batch"))
    assert result, (name, result.failures, asdict(result)["outputs"])
    if not info.get("batch"):
        assert set(result.batches) == {"1", "7", str(len(source.probe_inputs))}
