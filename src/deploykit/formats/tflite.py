"""TFLite / LiteRT: fp32, fp16 and full-integer int8 nodes, their edges and the runner.

From a SavedModel the TFLite converter makes all three. From a ``torch.export`` program,
litert-torch makes the fp32 and int8 models and ai-edge-quantizer the fp16 one; litert-torch
cannot keep a dynamic batch here (its lowering rejects symbolic dimensions), so those
artifacts have a fixed batch of 1, recorded in the manifest, and parity runs them one row
at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deploykit._lazy import require
from deploykit.formats.base import Runner, register_runner
from deploykit.graph import EdgeContext, edge, node

LITERT = {"extra": "edge", "distributions": ("ai-edge-litert", "tflite-runtime")}
node("tflite", "tflite", column=1, serve_rank=1, devices=("edge", "android", "ios"), **LITERT,
     description="LiteRT flatbuffer, float32")
node("tflite-fp16", "tflite", profile="fp16", column=2, serve_rank=5, devices=("edge",),
     **LITERT, description="LiteRT, float16 weights")
node("tflite-int8", "tflite", profile="int8", column=3, serve_rank=6,
     devices=("edge", "android"), **LITERT,
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


def calibration_rows(ctx: EdgeContext) -> dict[str, np.ndarray]:
    """Training inputs (or the sample) by input name, in each input's dtype: float32, or
    integer ids."""
    if not ctx.calibration:
        raise ValueError("int8 needs calibration data (training inputs or a sample)")
    with np.load(ctx.calibration) as saved:
        return {s["name"]: saved[s["name"]].astype(s["dtype"])[:CALIBRATION_ROWS]
                for s in ctx.signature["inputs"]}


@edge("saved_model", "tflite-int8", requires=("tensorflow",))
def saved_model_to_tflite_int8(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    """Full-integer quantisation calibrated on training inputs; inputs/outputs stay float32."""
    tf, conv = _converter(src)
    rows = calibration_rows(ctx)
    n = len(next(iter(rows.values())))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if len(rows) == 1:  # the one input, whatever the SavedModel calls it
        x = next(iter(rows.values()))
        conv.representative_dataset = lambda: ([x[i:i + 1]] for i in range(n))
    else:  # by name: the converter orders several inputs its own way
        conv.representative_dataset = lambda: ({k: x[i:i + 1] for k, x in rows.items()}
                                               for i in range(n))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return _write(out, "model_int8.tflite", conv.convert(), tf)


@edge("torch", "tflite", requires=("torch", "litert_torch"), cost=1.0)
def torch_to_tflite(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    """litert-torch conversion at a fixed batch of 1 (see the module docstring)."""
    litert_torch = require("litert_torch", extra="litert", purpose="PyTorch -> TFLite")
    from deploykit.formats.torch_program import example_inputs, fixed_batch, load_program

    module = load_program(src).module()
    model = litert_torch.convert(module, example_inputs(ctx.signature, batch=1))
    model.export(str(out / "model.tflite"))
    return {"file": "model.tflite", "batch": fixed_batch(ctx.signature) or 1,
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
    """Runs a .tflite through its default signature.

    A full-integer model may take and give int8/uint8 tensors (the converter folds the edge
    quantize/dequantize into the interface when the first/last op is quantised); the runner
    then quantises inputs and dequantises outputs with the tensors' own scale and zero point,
    as an app on a device would.
    """

    def _load(self) -> None:
        self.interpreter = _interpreter_class()(model_path=str(self.path))
        self.runner = self.interpreter.get_signature_runner()
        self.inputs = self.runner.get_input_details()
        self.outputs = self.runner.get_output_details()

    def _predict(self, inputs):
        feed = {name: _quantize(v, self.inputs[name])
                for name, v in self._feed(list(self.inputs), inputs).items()}
        out = self.runner(**feed)
        return {k: _dequantize(np.array(v), self.outputs[k]) for k, v in out.items()}


def _qparams(detail: dict[str, Any]) -> tuple[float, int] | None:
    scale, zero = detail.get("quantization", (0.0, 0))
    return (float(scale), int(zero)) if detail["dtype"] in (np.int8, np.uint8) and scale else None


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    q = _qparams(detail)
    if q is None:
        return _narrowed(x, np.dtype(detail["dtype"]))
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / q[0] + q[1]), info.min, info.max).astype(detail["dtype"])


def _narrowed(x: np.ndarray, want: np.dtype) -> np.ndarray:
    """int64 ids for a model that takes int32 (LiteRT has no int64 indices, so converters
    narrow them): cast when every value fits, refuse otherwise."""
    if x.dtype == want or x.dtype.kind not in "iu" or want.kind not in "iu":
        return x
    info = np.iinfo(want)
    if x.size and (x.min() < info.min or x.max() > info.max):
        raise ValueError(f"input values outside {want}'s range, which this model takes")
    return x.astype(want)


def _dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    q = _qparams(detail)
    return y if q is None else ((y.astype(np.float32) - q[1]) * q[0]).astype(np.float32)


def _quantizer(src: Path):
    require("ai_edge_quantizer", extra="litert", purpose="to quantise a .tflite")
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    return quantizer.Quantizer(str(src)), qtyping.TFLOperationName, AlgorithmName


@edge("tflite", "tflite-fp16", requires=("ai_edge_quantizer",), cost=2.0)
def tflite_to_tflite_fp16(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    """ai-edge-quantizer: weights stored as float16 (for models that did not come from TF)."""
    qt, op, algo = _quantizer(src)
    qt.add_weight_only_config(regex=".*", operation_name=op.ALL_SUPPORTED, num_bits=16,
                              algorithm_key=algo.FLOAT_CASTING)
    qt.quantize(serialize_to_path=str(out / "model_fp16.tflite"))
    return {"file": "model_fp16.tflite", **_same_batch(src), "versions": _aeq_versions()}


@edge("torch", "tflite-int8", requires=("torch", "litert_torch"))
def torch_to_tflite_int8(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    """litert-torch PT2E static int8 (per-channel weights, histogram-calibrated activations on
    training inputs), fixed batch 1. Inputs/outputs are float32 when the model starts/ends
    with an op the quantiser leaves in float, int8 otherwise (the runner handles both).

    Chosen over ai-edge-quantizer on the fp32 .tflite: its moving-average calibration kept
    only 98.9 % label agreement on digits, PT2E 100 %. The quantiser has no annotator for
    sub/div, so an input standardisation and a final softmax stay float32 around the int8 core.
    """
    torch = require("torch")
    litert_torch = require("litert_torch", extra="litert", purpose="PyTorch -> TFLite int8")
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from deploykit.formats.torch_program import example_inputs, load_program

    rows = list(calibration_rows(ctx).values())
    sample = example_inputs(ctx.signature, batch=1)  # batch 1 unless the program fixes one
    quantizer = PT2EQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    module = torch.export.export(load_program(src).module(), sample).module()
    module = prepare_pt2e(module, quantizer)
    batch = len(sample[0])  # the exported graph has this batch baked in
    with torch.no_grad():
        for i in range(0, len(rows[0]) - batch + 1, batch):
            module(*(torch.from_numpy(x[i:i + batch]) for x in rows))
    module = convert_pt2e(module, fold_quantize=False)
    model = litert_torch.convert(module, sample, quant_config=QuantConfig(pt2e_quantizer=quantizer))
    model.export(str(out / "model_int8.tflite"))
    return {"file": "model_int8.tflite", "batch": batch,
            "versions": {"litert-torch": litert_torch.__version__}}


def _same_batch(src: Path) -> dict[str, Any]:
    """Carry a fixed batch size of the input model over to the quantised one."""
    detail = _interpreter_class()(model_path=str(src)).get_input_details()[0]
    return {"batch": int(detail["shape"][0])} if detail["shape_signature"][0] != -1 else {}


def _aeq_versions() -> dict[str, str]:
    from importlib import metadata

    return {"ai-edge-quantizer": metadata.version("ai-edge-quantizer")}
