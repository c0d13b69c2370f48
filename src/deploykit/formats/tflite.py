"""TFLite / LiteRT: fp32, fp16 and int8 nodes, their edges and the runner.

From a SavedModel the TFLite converter makes all three. From a ``torch.export`` program,
litert-torch makes the fp32 and int8 models and ai-edge-quantizer the fp16 one; litert-torch
cannot keep a dynamic batch here (its lowering rejects symbolic dimensions), so those
artifacts have a fixed batch of 1, recorded in the manifest, and parity runs them one row
at a time.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from deploykit._lazy import require
from deploykit.errors import ExportError
from deploykit.formats.base import Runner, register_runner
from deploykit.graph import EdgeContext, edge, node

LITERT = {"extra": "edge", "distributions": ("ai-edge-litert", "tflite-runtime")}
node("tflite", "tflite", column=1, serve_rank=1, devices=("edge", "android", "ios"), **LITERT,
     description="LiteRT flatbuffer, float32")
node("tflite-fp16", "tflite", profile="fp16", column=2, serve_rank=5, devices=("edge",),
     **LITERT, description="LiteRT, float16 weights")
node("tflite-int8", "tflite", profile="int8", column=3, serve_rank=6,
     devices=("edge", "android"), **LITERT,
     description="LiteRT, int8 (calibrated), float I/O")

CALIBRATION_ROWS = 2000


def _converter(src: Path):
    tf = require("tensorflow", purpose="for the TFLite converter")
    return tf, _from_saved_model(tf, src)


def _from_saved_model(tf, src: Path):
    """TFLite's converter on the SavedModel's serving signature: given several, it converted
    them all, and the .tflite's runner then refused to pick one."""
    from tensorflow.python.saved_model import loader_impl

    keys = set(loader_impl.parse_saved_model(str(src)).meta_graphs[0].signature_def)
    serving = ["serving_default"] if len(keys) > 1 and "serving_default" in keys else None
    return tf.lite.TFLiteConverter.from_saved_model(str(src), signature_keys=serving)


def _converted(conv, ctx: EdgeContext) -> bytes:
    """``conv.convert()``; its failure on a float64 input (TFLite has no float64 tensors, and
    the converter said only "Could not translate MLIR to FlatBuffer") says so in words."""
    try:
        return conv.convert()
    except Exception as e:
        wide = [s["name"] for s in ctx.signature["inputs"] if s["dtype"] == "float64"]
        if not wide or "Could not translate MLIR" not in str(e):
            raise
        raise ExportError(f"TFLite has no float64 tensors, and input '{wide[0]}' is float64 "
                          f"all the way in: save the model with float32 inputs (Keras: "
                          f"keras.Input(dtype='float32'); skl2onnx: a float32 example row; "
                          f"torch: model.float())") from None


def _write(out: Path, name: str, flatbuffer: bytes, tf) -> dict[str, Any]:
    (out / name).write_bytes(flatbuffer)
    return {"file": name, "versions": {"tensorflow": tf.__version__}}


@edge("saved_model", "tflite", requires=("tensorflow",))
def saved_model_to_tflite(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    tf, conv = _converter(src)
    return _write(out, "model.tflite", _converted(conv, ctx), tf)


@edge("saved_model", "tflite-fp16", requires=("tensorflow",))
def saved_model_to_tflite_fp16(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    """float16 weights by TFLite's converter, which rounds every float constant. When that
    moves outputs beyond the fp16 profile on check rows (a compiled tree's thresholds, rounded,
    send rows down other branches), ai-edge-quantizer casts the fp32 model's weights instead:
    it casts the weights of compute ops (fully connected, convolution, embedding) and leaves
    gathered and compared constants float32."""
    tf, conv = _converter(src)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    info = _write(out, "model_fp16.tflite", _converted(conv, ctx), tf)
    if _within_fp16(src, out / info["file"], ctx):
        return info
    fp32 = out / "fp32.tflite"
    fp32.write_bytes(_converted(_converter(src)[1], ctx))
    _cast_weights_fp16(fp32, out / info["file"])
    fp32.unlink()
    info["versions"].update(_aeq_versions())
    info["options"] = {"float16_weights": "compute-op weights only (ai-edge-quantizer): the "
                                          "converter's float16 constants moved outputs"}
    return info


def _within_fp16(src: Path, path: Path, ctx: EdgeContext) -> bool:
    """The fp16 profile's element rule against the SavedModel on check rows."""
    from deploykit.parity import PROFILES

    prof = PROFILES["fp16"]
    sig, check, reference = _checked_against(src, ctx, calibration_rows(ctx))
    got = TfliteRunner(path, sig).predict(check)
    return all(np.all(np.abs(got[k] - r) <= prof.atol + prof.rtol * np.abs(r))
               for k, r in reference.items() if r.dtype.kind == "f")


def calibration_rows(ctx: EdgeContext) -> dict[str, np.ndarray]:
    """Training inputs (or the sample) by input name, in each input's dtype: float32, or
    integer ids."""
    if not ctx.calibration:
        raise ValueError("int8 needs calibration data (training inputs or a sample)")
    with np.load(ctx.calibration) as saved:
        return {s["name"]: _filled(saved[s["name"]].astype(s["dtype"])[:CALIBRATION_ROWS],
                                   _word_columns(s))
                for s in ctx.signature["inputs"]}


def _word_columns(spec: dict[str, Any]) -> list[int]:
    """The columns of words of an input (its codes: never averaged)."""
    return [int(w["column"]) for w in spec.get("words", ())]


def _filled(x: np.ndarray, words: list[int]) -> np.ndarray:
    """Missing values (NaN) as their column's mean (0 for a column of none), a column of
    words' as its most common code: NaN would make the calibrated ranges NaN."""
    if x.dtype.kind != "f" or not np.isnan(x).any():
        return x
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice"
        means = np.nan_to_num(np.nanmean(x, axis=0))
    for j in words:
        codes, counts = np.unique(x[~np.isnan(x[:, j]), j], return_counts=True)
        means[j] = codes[counts.argmax()] if len(codes) else 0
    return np.where(np.isnan(x), means, x).astype(x.dtype)


@edge("saved_model", "tflite-int8", requires=("tensorflow",))
def saved_model_to_tflite_int8(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    """Integer quantisation calibrated on training inputs; inputs/outputs stay float32. Full
    integer when that keeps the model's predictions, else the fewest op types kept float32
    that do (see :func:`_keep_float`), named in the manifest's ``converter_options``."""
    tf = require("tensorflow", purpose="for the TFLite converter")
    rows = calibration_rows(ctx)
    dest = out / "model_int8.tflite"
    dest.write_bytes(_converted(_int8_converter(tf, src, rows), ctx))
    kept = _keep_float(tf, src, rows, ctx, dest)
    info = {"file": dest.name, "versions": {"tensorflow": tf.__version__}}
    if kept:
        every = kept == ["every op"]
        info["options"] = {"float32_ops": "every op kept float32 (this is the float32 model): "
                                          "no model with integer ops kept the predictions on "
                                          "check rows" if every else
                                          f"{', '.join(kept)} kept float32: full integer "
                                          f"changed predictions on check rows"}
    return info


def _int8_converter(tf, src: Path, rows: dict[str, np.ndarray]):
    conv = _from_saved_model(tf, src)
    n = len(next(iter(rows.values())))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if len(rows) == 1:  # the one input, whatever the SavedModel calls it
        x = next(iter(rows.values()))
        conv.representative_dataset = lambda: ([x[i:i + 1]] for i in range(n))
    else:  # by name: the converter orders several inputs its own way
        conv.representative_dataset = lambda: ({k: x[i:i + 1] for k, x in rows.items()}
                                               for i in range(n))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return conv


# Accuracy-driven fallback. Full-integer int8 suits networks, whose activations have a
# sensible range, but not every program: a compiled kernel SVM feeds squared distances to exp
# and votes on comparisons near zero, and at int8 resolution it changes about 5 % of digits
# labels. The converter can leave chosen op types in float32 (``denylisted_ops``, the
# selective quantisation of TensorFlow's quantisation-debugger guide). We keep float the
# shortest prefix of the model's op types, in the order they first run, whose model still
# predicts what the SavedModel does on check rows, when the full-integer model does not on
# calibration rows (a network that does stays full integer, for integer-only accelerators,
# even where blends would flip a label or two); a binary search over the prefix length
# costs about log2(number of op types) conversions. Check rows are calibration (training)
# rows and as many blends of two random ones: training rows sit far from the decision
# boundaries, where quantisation flips labels, and blends of rows of two classes sit near
# them (with training rows alone the digits SVM kept too few ops float and agreed on 99.2 %
# of test rows; with blends, on all of them). The goal is stricter than the int8 profile:
# labels on 99 % of decisive rows (the profile's own threshold, but counted on blends too),
# R² >= 0.995 per output.
CHECK_ROWS = 256  # of each kind
# When no mix of integer and float ops reaches the goals below, full int8 stays (verify
# judges it by the int8 profile: the zoo's MobileNet passes it) unless it is broken, as a
# forest after an imputer's one-hot branch was (47 % of labels): then the float32 model.
BROKEN_BELOW = 0.9
LABEL_GOAL = 0.99
REGRESSION_GOAL = 0.995
_PLUMBING = {"QUANTIZE", "DEQUANTIZE"}  # what the quantiser itself inserts


def check_rows(rows: dict[str, np.ndarray], n: int = CHECK_ROWS,
               words: dict[str, list[int]] | None = None) -> dict[str, np.ndarray]:
    """``n`` evenly spaced rows, then ``n`` blends of two random rows (float inputs; an
    integer input, such as token ids, and ``words``' columns of an input keep the first
    row's)."""
    total = len(next(iter(rows.values())))
    pick = np.linspace(0, total - 1, min(n, total)).astype(int)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, total, (2, len(pick)))
    t = rng.uniform(0.3, 0.7, len(pick))
    out = {}
    for k, v in rows.items():
        w = t.reshape(-1, *[1] * (v.ndim - 1)).astype(v.dtype) if v.dtype.kind == "f" else None
        blend = v[a] if w is None else w * v[a] + (1 - w) * v[b]
        kept = (words or {}).get(k, [])
        if kept and w is not None:
            blend[:, kept] = v[a][:, kept]
        out[k] = np.concatenate([v[pick], blend])
    return out


def _keep_float(tf, src: Path, rows: dict[str, np.ndarray], ctx: EdgeContext,
                dest: Path) -> list[str]:
    """Op types to keep float32 (none: ``dest`` is full integer and stays; ``["every op"]``:
    no model with integer ops agrees, and ``dest`` is the float32 model), writing the chosen
    model to ``dest``."""
    sig, check, reference = _checked_against(src, ctx, rows)
    n = len(next(iter(check.values()))) // 2  # the plain rows; blends after them
    if _agrees(dest, sig, *({k: v[:n] for k, v in d.items()} for d in (check, reference))):
        return []  # full integer unless it changes predictions on plain rows
    full, types = dest.read_bytes(), _op_types(dest)

    def tried(k: int) -> tuple[bool, bytes | None]:  # the first k op types in float32:
        flat = _selective(tf, src, rows, types[:k])  # made, and the model if it agrees
        dest.write_bytes(flat or full)
        return flat is not None, flat if flat and _agrees(dest, sig, check, reference) else None

    best: tuple[bytes, int] | None = None
    lo, hi = 1, len(types) - 1  # all of them float would be a float32 model
    if lo <= hi:  # The search assumes that more ops in float32 never agree less, so when the
        # most float mix the quantiser makes does not agree, none will: one conversion
        # instead of log2(op types) (the zoo's MobileNet, whose last op types break at
        # int8, tried four). The quantiser makes none when what is left has no int8 kernel.
        made, agreed = tried(hi)
        best = (agreed, hi) if agreed else None
        hi = 0 if made and not agreed else hi - 1
    while lo <= hi:  # the smallest k whose first k op types in float32 agree
        k = (lo + hi) // 2
        _, agreed = tried(k)
        if agreed:
            best, hi = (agreed, k), k - 1
        else:
            lo = k + 1
    if best is None:
        dest.write_bytes(full)  # nothing agreed: verify judges full int8 by the profile,
        if _agrees(dest, sig, *({k: v[:n] for k, v in d.items()} for d in (check, reference)),
                   goal=BROKEN_BELOW):  # unless it is broken: then the float32 model
            return []
        dest.write_bytes(_converted(_from_saved_model(tf, src), ctx))
        return ["every op"]
    dest.write_bytes(best[0])
    return types[:best[1]]


def _checked_against(src: Path, ctx: EdgeContext, rows: dict[str, np.ndarray]):
    """``(signature, check rows, the SavedModel's outputs on them)``."""
    from deploykit.formats.saved_model import SavedModelRunner
    from deploykit.signature import Signature

    sig = Signature.from_dict(ctx.signature)
    check = check_rows(rows, words={s["name"]: _word_columns(s) for s in ctx.signature["inputs"]})
    return sig, check, SavedModelRunner(src, sig).predict(check)


def _selective(tf, src: Path, rows: dict[str, np.ndarray], float_ops: list[str]
               ) -> bytes | None:
    """The int8 model with ``float_ops`` left float32; ``None`` when the quantiser cannot
    make it (it refuses when nothing would be quantised)."""
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=float_ops)
    first = {k: v[:1] for k, v in rows.items()}
    try:
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=_int8_converter(tf, src, rows), debug_options=options,
            debug_dataset=lambda: iter([first if len(first) > 1 else list(first.values())]))
        return debugger.get_nondebug_quantized_model()
    except ValueError:  # "Please check if the quantized model is in debug mode"
        return None


def _op_types(path: Path) -> list[str]:
    """The model's op types in the order they first run, but the quantiser's own."""
    seen: list[str] = []
    for op in _interpreter_class()(model_path=str(path))._get_ops_details():
        if op["op_name"] not in seen and op["op_name"] not in _PLUMBING:
            seen.append(op["op_name"])
    return seen


def _agrees(path: Path, sig, check: dict[str, np.ndarray],
            reference: dict[str, np.ndarray], goal: float | None = None) -> bool:
    """Labels (decisive rows) or every output (R²) as the SavedModel's, at stricter goals
    than the int8 profile (or ``goal`` for both); a model that fails to run does not
    agree."""
    from deploykit.parity import INT8_TIE_MARGIN, r2

    try:
        got = TfliteRunner(path, sig).predict(check)
    except Exception:  # e.g. an integer kernel that divides by zero: not this model
        return False
    p = reference.get(sig.scores) if sig.scores else None
    if p is not None and p.ndim == 2 and p.shape[1] > 1:
        top = np.sort(p, axis=1)
        decisive = top[:, -1] - top[:, -2] >= INT8_TIE_MARGIN
        same = got[sig.scores].argmax(1) == p.argmax(1)
        return bool(same[decisive].mean() >= (goal or LABEL_GOAL)) if decisive.any() else True
    return all(r2(v, got[k]) >= (goal or REGRESSION_GOAL) for k, v in reference.items()
               if v.dtype.kind == "f")


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
        kw = {"num_threads": self.threads} if self.threads else {}
        self.interpreter = _interpreter_class()(model_path=str(self.path), **kw)
        self.interpreter.allocate_tensors()
        runner = self.interpreter.get_signature_runner()
        self.inputs = runner.get_input_details()
        self.outputs = runner.get_output_details()
        self.input_names = list(self.inputs)
        # The default signature on the main subgraph (every converter's output we know) runs
        # on the interpreter's tensors directly: the signature runner's per-call checks cost
        # 2-3x the model at batch 1. Shapes are resized only when a batch differs. The
        # signature runner is then let go: while it lives, the interpreter refuses invoke().
        self.direct = getattr(runner, "_subgraph_index", None) == 0
        self.runner = None if self.direct else runner
        self.shapes = {n: tuple(int(d) for d in v["shape"]) for n, v in self.inputs.items()}
        self.as_is = {n for n, d in self.inputs.items() if _qparams(d) is None}  # float in
        self.float_out = {n for n, d in self.outputs.items() if _qparams(d) is None}
        order = self._by_name({k: k for k in self.outputs}, self._signature_outputs)
        self.order = order if len(order) == len(self.outputs) else list(self.outputs)
        self.out_index = [self.outputs[k]["index"] for k in self.order]
        # one unquantised input, unquantised outputs: the serving case, kept to the bare calls
        self.plain = self.direct and len(self.inputs) == 1 and len(self.as_is) == 1 and \
            len(self.float_out) == len(self.outputs)

    def _predict(self, inputs):
        if self.plain:
            name, x = self.input_names[0], next(iter(inputs.values()))
            if x.dtype == self.inputs[name]["dtype"]:
                return self._invoke({name: x})
        feed = {name: v if name in self.as_is and v.dtype == self.inputs[name]["dtype"]
                else _quantize(v, self.inputs[name])
                for name, v in self._feed(self.input_names, inputs).items()}
        if self.direct:
            return self._invoke(feed)
        out = self.runner(**feed)
        return {k: _dequantize(np.array(v), self.outputs[k]) for k, v in out.items()}

    def _invoke(self, feed: dict[str, np.ndarray]):
        it = self.interpreter
        resized = [n for n, x in feed.items() if x.shape != self.shapes[n]]
        for name in resized:  # all of them, then one allocation, then the data
            it.resize_tensor_input(self.inputs[name]["index"], feed[name].shape)
            self.shapes[name] = feed[name].shape
        if resized:
            it.allocate_tensors()
        for name, x in feed.items():
            it.set_tensor(self.inputs[name]["index"], x)
        it.invoke()
        out = [it.get_tensor(i) for i in self.out_index]
        if len(self.float_out) == len(out):
            return out  # in signature order
        return {k: y if k in self.float_out else _dequantize(y, self.outputs[k])
                for k, y in zip(self.order, out)}


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
    _cast_weights_fp16(src, out / "model_fp16.tflite")
    return {"file": "model_fp16.tflite", **_same_batch(src), "versions": _aeq_versions()}


def _cast_weights_fp16(src: Path, dest: Path) -> None:
    qt, op, algo = _quantizer(src)
    qt.add_weight_only_config(regex=".*", operation_name=op.ALL_SUPPORTED, num_bits=16,
                              algorithm_key=algo.FLOAT_CASTING)
    qt.quantize(serialize_to_path=str(dest))


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
    _float_scalars(torch, module)
    options = _float_grus(torch, module, quantizer)
    module = prepare_pt2e(module, quantizer)
    batch = len(sample[0])  # the exported graph has this batch baked in
    with torch.no_grad():
        for i in range(0, len(rows[0]) - batch + 1, batch):
            module(*(torch.from_numpy(x[i:i + batch]) for x in rows))
    module = convert_pt2e(module, fold_quantize=False)
    model = litert_torch.convert(module, sample, quant_config=QuantConfig(pt2e_quantizer=quantizer))
    model.export(str(out / "model_int8.tflite"))
    return {"file": "model_int8.tflite", "batch": batch, "options": options,
            "versions": {"litert-torch": litert_torch.__version__}}


def _float_scalars(torch, module) -> None:
    """Write the whole numbers a float tensor is scaled or shifted by as floats (``x * 2 - 1``,
    ``y * 100 + 150``): the quantiser turns each into an int64 constant and calibrates it
    with a histogram, which torch has only for floats ("histogram_cpu" not implemented for
    'Long'). The values are the same in float arithmetic."""
    aten = torch.ops.aten
    arithmetic = {aten.mul.Tensor, aten.add.Tensor, aten.sub.Tensor, aten.div.Tensor}
    for op in module.graph.nodes:
        if op.op != "call_function" or op.target not in arithmetic:
            continue
        tensors = [a.meta.get("val") for a in op.args if isinstance(a, torch.fx.Node)]
        if tensors and all(getattr(t, "is_floating_point", lambda: False)() for t in tensors):
            op.args = tuple(float(a) if type(a) is int else a for a in op.args)
    module.recompile()


def _float_grus(torch, module, quantizer) -> dict[str, str]:
    """Leave GRUs float32 when one starts from an implicit zero state.

    litert-torch's ``gru_io_only`` annotator takes the GRU's second input for its initial
    state and fails with an IndexError when the module was called without one (the usual
    ``gru(x)``). LSTMs have no annotator and stay float32 anyway; GRUs then do the same.
    """
    from torch.fx.passes.utils.source_matcher_utils import get_source_partitions

    grus = get_source_partitions(module.graph, [torch.nn.GRU])
    if all(len(p.input_nodes) > 1 for parts in grus.values() for p in parts):
        return {}
    quantizer.STATIC_OPS = [op for op in quantizer.STATIC_OPS if op != "gru_io_only"]
    return {"float_ops": "GRU stays float32: litert-torch's GRU annotator needs an "
                         "explicit initial state"}


def _same_batch(src: Path) -> dict[str, Any]:
    """Carry a fixed batch size of the input model over to the quantised one."""
    detail = _interpreter_class()(model_path=str(src)).get_input_details()[0]
    return {"batch": int(detail["shape"][0])} if detail["shape_signature"][0] != -1 else {}


def _aeq_versions() -> dict[str, str]:
    from importlib import metadata

    return {"ai-edge-quantizer": metadata.version("ai-edge-quantizer")}
