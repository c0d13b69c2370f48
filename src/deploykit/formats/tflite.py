"""TFLite / LiteRT: fp32, fp16 and full-integer int8 nodes, their edges and the runner.

From a SavedModel the TFLite converter makes all three. From a ``torch.export`` program,
litert-torch makes the fp32 model; it cannot keep a dynamic batch here (its lowering
rejects symbolic dimensions), so that artifact has a fixed batch of 1, recorded in the
manifest, and parity runs it one row at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deploykit._lazy import require
from deploykit.formats.base import Runner, register_runner
from deploykit.graph import EdgeContext, edge, node

node("tflite", "tflite", description="LiteRT flatbuffer, float32")
node("tflite-fp16", "tflite", profile="fp16", description="LiteRT, float16 weights")
node("tflite-int8", "tflite", profile="int8",
     description="LiteRT, full integer int8 (calibrated), float I/O")

CALIBRATION_ROWS = 2000


def _converter(src: Path):
    tf = require("tensorflow", purpose="for the TFLite converter")
    return tf, tf.lite.TFLiteConverter.from_saved_model(str(src))


def _write(out: Path, name: str, flatbuffer: bytes, tf) -> dict[str, Any]:
    (out / name).write_bytes(flatbuffer)
    return {"file": name, "versions": {"tensorflow": tf.__version__}}


@edge("saved_model", "tflite", requires=("tensorflow",))
def saved_model_to_tflite(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    tf, conv = _converter(src)
    return _write(out, "model.tflite", conv.convert(), tf)


@edge("saved_model", "tflite-fp16", requires=("tensorflow",))
def saved_model_to_tflite_fp16(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    tf, conv = _converter(src)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    return _write(out, "model_fp16.tflite", conv.convert(), tf)


def calibration_rows(ctx: EdgeContext) -> np.ndarray:
    if not ctx.calibration:
        raise ValueError("int8 needs calibration data (training inputs or a sample)")
    rows = np.load(ctx.calibration).astype(np.float32)
    return rows[:CALIBRATION_ROWS]


@edge("saved_model", "tflite-int8", requires=("tensorflow",))
def saved_model_to_tflite_int8(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    """Full-integer quantisation calibrated on training inputs; inputs/outputs stay float32."""
    tf, conv = _converter(src)
    rows = calibration_rows(ctx)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([r[None, :]] for r in rows)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return _write(out, "model_int8.tflite", conv.convert(), tf)


@edge("torch", "tflite", requires=("torch", "litert_torch"), cost=1.0)
def torch_to_tflite(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    """litert-torch conversion at a fixed batch of 1 (see the module docstring)."""
    litert_torch = require("litert_torch", extra="litert", purpose="PyTorch -> TFLite")
    from deploykit.formats.torch_program import example_input, load_program

    module = load_program(src).module()
    model = litert_torch.convert(module, (example_input(ctx.signature, batch=1),))
    model.export(str(out / "model.tflite"))
    return {"file": "model.tflite", "batch": 1,
            "versions": {"litert-torch": litert_torch.__version__}}


def _interpreter_class():
    """LiteRT's interpreter; else tflite_runtime's; else TensorFlow's own."""
    for module in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            return require(module).Interpreter
        except ImportError:
            continue
    return require("tensorflow", extra="edge", purpose="to run TFLite").lite.Interpreter


@register_runner("tflite")
class TfliteRunner(Runner):
    def _load(self) -> None:
        self.interpreter = _interpreter_class()(model_path=str(self.path))
        self.runner = self.interpreter.get_signature_runner()
        self.input_names = list(self.runner.get_input_details())

    def _predict(self, inputs):
        feed = dict(zip(self.input_names, inputs.values(), strict=True))
        out = self.runner(**feed)
        return {k: np.array(v) for k, v in out.items()}


def _quantizer(src: Path):
    aeq = require("ai_edge_quantizer", extra="litert", purpose="to quantise a .tflite")
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    return aeq, quantizer.Quantizer(str(src)), qtyping.TFLOperationName, AlgorithmName


@edge("tflite", "tflite-fp16", requires=("ai_edge_quantizer",), cost=2.0)
def tflite_to_tflite_fp16(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    """ai-edge-quantizer: weights stored as float16 (for models that did not come from TF)."""
    _, qt, op, algo = _quantizer(src)
    qt.add_weight_only_config(regex=".*", operation_name=op.ALL_SUPPORTED, num_bits=16,
                              algorithm_key=algo.FLOAT_CASTING)
    qt.quantize(serialize_to_path=str(out / "model_fp16.tflite"))
    return {"file": "model_fp16.tflite", **_same_batch(src), "versions": _aeq_versions()}


@edge("tflite", "tflite-int8", requires=("ai_edge_quantizer",), cost=2.0)
def tflite_to_tflite_int8(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    """ai-edge-quantizer static int8 (weights and activations), float32 inputs/outputs kept."""
    from ai_edge_quantizer import recipe

    _, qt, op, algo = _quantizer(src)
    qt.load_quantization_recipe(recipe.static_wi8_ai8())
    for io in (op.INPUT, op.OUTPUT):  # the stock recipe would make the model's I/O int8 too
        qt.update_quantization_recipe(regex=".*", operation_name=io,
                                      algorithm_key=algo.NO_QUANTIZE)
    interp = _interpreter_class()(model_path=str(src))
    key, spec = next(iter(interp.get_signature_list().items()))
    batch = _same_batch(src).get("batch") or 1
    rows = calibration_rows(ctx)
    data = {key: [{spec["inputs"][0]: rows[i:i + batch]}
                  for i in range(0, len(rows) - batch + 1, batch)]}
    qt.quantize(qt.calibrate(data), serialize_to_path=str(out / "model_int8.tflite"))
    return {"file": "model_int8.tflite", **_same_batch(src), "versions": _aeq_versions()}


def _same_batch(src: Path) -> dict[str, Any]:
    """Carry a fixed batch size of the input model over to the quantised one."""
    detail = _interpreter_class()(model_path=str(src)).get_input_details()[0]
    return {"batch": int(detail["shape"][0])} if detail["shape_signature"][0] != -1 else {}


def _aeq_versions() -> dict[str, str]:
    from importlib import metadata

    return {"ai-edge-quantizer": metadata.version("ai-edge-quantizer")}
