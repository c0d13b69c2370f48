"""ONNX: node, runner (onnxruntime) and the edges into it from scikit-learn (skl2onnx),
SavedModel (tf2onnx) and torch.export programs (torch.onnx, dynamo exporter).
Every ONNX artifact keeps a dynamic batch dimension."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploykit._lazy import require
from deploykit.formats.base import Runner, register_runner
from deploykit.graph import EdgeContext, edge, node

node("onnx", "onnx", description="ONNX model, run by onnxruntime")

OPSET = 17


@edge("sklearn", "onnx", requires=("skl2onnx", "onnx"))
def sklearn_to_onnx(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    """skl2onnx; classifiers give ``label`` and ``probabilities`` as plain tensors."""
    import numpy as np

    skl2onnx = require("skl2onnx", purpose="scikit-learn -> ONNX")
    from deploykit.training.sklearn_path import load_estimator

    model = load_estimator(src)
    n = ctx.signature["inputs"][0]["shape"][1]
    options = {"zipmap": False} if hasattr(model, "predict_proba") else None
    onx = skl2onnx.to_onnx(model, np.zeros((1, n), np.float32), options=options,
                           target_opset={"": OPSET, "ai.onnx.ml": 3})
    outputs = [o.name for o in onx.graph.output]
    if options:  # skl2onnx names them label/probabilities already; make it explicit
        outputs = ["label", "probabilities"]
    (out / "model.onnx").write_bytes(onx.SerializeToString())
    return {"file": "model.onnx", "outputs": outputs,
            "versions": {"skl2onnx": skl2onnx.__version__}}


@edge("saved_model", "onnx", requires=("tf2onnx", "tensorflow"))
def saved_model_to_onnx(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    """tf2onnx on the SavedModel's serving signature."""
    tf2onnx = require("tf2onnx", purpose="TensorFlow -> ONNX")
    from deploykit.formats.saved_model import serving_function

    fn, _ = serving_function(src)
    outputs = list(fn.structured_outputs)
    onx, _ = tf2onnx.convert.from_function(fn, input_signature=list(fn.structured_input_signature[1].values()),
                                           opset=OPSET, output_path=str(out / "model.onnx"))
    names = [o.name for o in onx.graph.output]
    return {"file": "model.onnx", "outputs": _order(names, outputs),
            "versions": {"tf2onnx": tf2onnx.__version__}}


def _order(onnx_names: list[str], tf_names: list[str]) -> list[str]:
    """tf2onnx names outputs ``<key>`` or ``<key>:0``; put them in the signature's order."""
    by_key = {n.split(":")[0]: n for n in onnx_names}
    return [by_key.get(k, n) for k, n in zip(tf_names, onnx_names, strict=False)]


@edge("torch", "onnx", requires=("torch", "onnx", "onnxscript"))
def torch_to_onnx(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    """``torch.onnx.export`` (dynamo) of the exported program; the batch stays dynamic."""
    torch = require("torch")
    from deploykit.formats.torch_program import example_input, load_program

    program = load_program(src)
    names = [s["name"] for s in ctx.signature["outputs"]]
    torch.onnx.export(program, (example_input(ctx.signature),), str(out / "model.onnx"),
                      dynamo=True, input_names=[ctx.signature["inputs"][0]["name"]],
                      output_names=names, opset_version=max(OPSET, 18), external_data=False,
                      verbose=False)
    return {"file": "model.onnx", "outputs": names, "versions": {"torch": torch.__version__}}


@register_runner("onnx")
class OnnxRunner(Runner):
    def _load(self) -> None:
        ort = require("onnxruntime", purpose="to run ONNX")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.path), opts,
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.onnx_outputs = [o.name for o in self.session.get_outputs()]

    def _predict(self, inputs):
        feed = dict(zip(self.input_names, inputs.values(), strict=True))
        return dict(zip(self.onnx_outputs, self.session.run(None, feed), strict=True))
