"""Every registered converter (graph edge) is exercised on a small model and its output is
run in the destination runtime and compared with the original framework's prediction.
A new edge without a case here fails ``test_every_edge_has_a_case``."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from sources_for_tests import BUILDERS, sample

from deploykit import formats, graph
from deploykit.building import run_edge_in_worker
from deploykit.parity import Probe, check
from deploykit.signature import Signature
from deploykit.sources import detect

pytestmark = pytest.mark.slow  # every converter on a small model

# edge -> the kind of source model it is tested from (the source reaches the edge's input)
EDGE_CASES = {
    "sklearn_to_onnx": "sklearn",
    "sklearn_to_keras": "sklearn",
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
    "onnx_to_keras": "torch",
}


def test_every_edge_has_a_case():
    formats.load()
    assert set(EDGE_CASES) == set(graph.EDGES), "add a case for each new edge"


class Made:
    """Sources and intermediates per source kind, each converted once for the module: the
    keras source's SavedModel serves every saved_model edge test that starts from keras, the
    torch program's .tflite the fp16 edge, and so on."""

    def __init__(self, root: Path) -> None:
        self.root, self.sources, self.cache = root, {}, {}

    def source(self, kind: str):
        if kind not in self.sources:
            source = detect(BUILDERS[kind](), sample=sample(128))  # int8 needs >= 100 rows
            np.savez(self.root / f"{kind}-calib.npz", x=sample(200))
            ctx = graph.EdgeContext(source.signature.to_dict(),
                                    str(self.root / f"{kind}-calib.npz"))
            folder = self.root / kind / source.node
            folder.mkdir(parents=True)
            self.cache[(kind, source.node)] = (folder, {"file": source.write(folder)})
            self.sources[kind] = (source, ctx)
        return self.sources[kind]

    def node(self, kind: str, node: str) -> tuple[Path, dict]:
        """``node`` made from the ``kind`` source along the cheapest route."""
        source, _ = self.source(kind)
        if (kind, node) not in self.cache:
            self.through(kind, graph.plan(source.node, node)[-1])
        return self.cache[(kind, node)]

    def through(self, kind: str, e: graph.Edge) -> tuple[Path, dict]:
        """Run edge ``e`` itself on its input made from the ``kind`` source."""
        source, ctx = self.source(kind)
        src = self.node(kind, e.src)
        out = self.root / kind / e.name
        if not out.exists():
            info = run_edge_in_worker(e, src, out, ctx, 600)
            if graph.plan(source.node, e.dst)[-1] == e:
                self.cache.setdefault((kind, e.dst), (out, info))
            self.cache[(kind, e.name)] = (out, info)
        return self.cache[(kind, e.name)]


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Made:
    formats.load()
    return Made(tmp_path_factory.mktemp("edges"))


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_edge_converts_and_keeps_parity(name, made):
    e = graph.EDGES[name]
    source, _ = made.source(EDGE_CASES[name])
    out, info = made.through(EDGE_CASES[name], e)
    assert (out / info["file"]).exists()
    sig = source.signature.to_dict()
    if info.get("batch"):
        for spec in sig["inputs"] + sig["outputs"]:
            spec["shape"][0] = info["batch"]
    dst = graph.NODES[e.dst]
    runner = formats.open_runner(dst.runtime, out / info["file"], Signature.from_dict(sig),
                                 info.get("outputs"))
    probe = Probe(source.probe_inputs, source.reference, None, source.task)
    result = check(e.dst, dst.profile, runner.predict, probe)  # a fixed batch: in chunks
    runner.close()
    assert result, (name, result.failures, asdict(result)["outputs"])
    if not info.get("batch"):
        assert set(result.batches) == {"1", "7", str(len(source.probe_inputs["x"]))}


def test_the_keras_edge_saves_its_program_without_nodes_that_change_no_value(made):
    """Keras-on-torch adds an ``_assert_tensor_metadata`` and a same-dtype ``to`` per tensor
    conversion; every PyTorch edge loads the program the Keras edge saves, so it is saved
    without them (its values: ``keras_to_torch`` above, and every edge after it)."""
    import torch

    out, info = made.through("keras", graph.EDGES["keras_to_torch"])
    program = torch.export.load(out / info["file"])
    ops = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert ops and not ops & {"aten._assert_tensor_metadata.default", "aten.to.dtype",
                              "aten._to_copy.default", "aten.contiguous.default"}, ops
