"""TensorFlow.js graph models, written by deploykit itself (the ``tensorflowjs`` pip package
would downgrade TensorFlow, protobuf and numpy here).

From a SavedModel's ``serving_default`` signature: variables and captures are frozen into
constants, Grappler inlines every function call and folds constants (no op fusion: the plain
ops keep the graph readable and every one of them is in tfjs's op list), and the result is
written as ``model.json`` (format ``graph-model``: the GraphDef as JSON with Const values moved
out, the signature, the weights manifest) plus little-endian weight shards of at most 4 MB.
Every op must be one tfjs can execute (read from the installed ``@tensorflow/tfjs-converter``
op mappers); otherwise the export fails naming the op, before anything is written.
``tfjs-fp16`` stores float32 weights as float16, which tfjs widens on load.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from deploykit._lazy import require
from deploykit.errors import ExportError, InputError
from deploykit.formats.base import register_runner
from deploykit.formats.web import NodeRunner, web_dir
from deploykit.graph import BROWSER, EdgeContext, edge, node
from deploykit.signature import fits

node("tfjs", "tfjs", column=8, runs=BROWSER, serve_rank=9, devices=("web",),
     description="TensorFlow.js graph model (model.json + shards)")
node("tfjs-fp16", "tfjs", profile="fp16", column=9, runs=BROWSER, serve_rank=10,
     devices=("web",), description="TensorFlow.js, float16 weights")

SHARD_BYTES = 4 * 1024 * 1024
GRAPPLER = ["function", "pruning", "constfold", "arithmetic", "dependency", "debug_stripper"]
# numpy dtype -> (TF.js dtype, DataType enum name) for weights; int64 is narrowed like the
# real converter does, since TF.js has no int64
_DTYPES = {"float32": ("float32", "DT_FLOAT"), "int32": ("int32", "DT_INT32"),
           "int64": ("int32", "DT_INT32"), "bool": ("bool", "DT_BOOL")}


def supported_ops() -> set[str]:
    """Op names the installed tfjs GraphModel executor maps (its op_list modules)."""
    op_list = web_dir() / "node_modules" / "@tensorflow" / "tfjs-converter" / "dist" / \
        "operations" / "op_list"
    names: set[str] = set()
    for f in op_list.glob("*.js"):
        names.update(re.findall(r"tfOpName['\"]?\s*:\s*['\"]([A-Za-z0-9_]+)['\"]", f.read_text()))
    if not names:
        raise ExportError(f"no tfjs op list found under {op_list}; run `npm ci` in targets/web")
    return names


def frozen_graph(saved_model: Path):
    """``(graph_def, input_names, output_map)`` of the serving signature, flat and frozen."""
    tf = require("tensorflow", purpose="for TF.js export")
    from tensorflow.core.protobuf import config_pb2, meta_graph_pb2
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    from tensorflow.python.grappler import tf_optimizer
    from tensorflow.python.training.saver import export_meta_graph

    from deploykit.formats.saved_model import serving_function

    fn, names = serving_function(saved_model)
    frozen = convert_variables_to_constants_v2(fn, lower_control_flow=True,
                                               aggressive_inlining=True)
    graph_def = frozen.graph.as_graph_def()
    inputs = [t.name.split(":")[0] for t in frozen.inputs]
    flat_out = tf.nest.flatten(fn.structured_outputs)  # dict -> sorted keys
    keys = sorted(fn.structured_outputs) if isinstance(fn.structured_outputs, dict) \
        else [f"output_{i}" for i in range(len(flat_out))]
    outputs = [t.name for t in frozen.outputs]
    meta = export_meta_graph(graph_def=graph_def, graph=frozen.graph)
    fetch = meta_graph_pb2.CollectionDef()
    for t in frozen.inputs + frozen.outputs:
        fetch.node_list.value.append(t.name)
    meta.collection_def["train_op"].CopyFrom(fetch)
    config = config_pb2.ConfigProto()
    rewrite = config.graph_options.rewrite_options
    rewrite.optimizers.extend(GRAPPLER)
    rewrite.meta_optimizer_iterations = 2
    rewrite.min_graph_nodes = -1  # optimise small graphs too
    optimized = tf_optimizer.OptimizeGraph(config, meta)
    return optimized, inputs, dict(zip(keys, outputs, strict=True)), names


def write_graph_model(saved_model: Path, out: Path, ctx: EdgeContext, *,
                      fp16: bool = False) -> dict[str, Any]:
    """Write ``model.json`` and shards for the SavedModel's serving signature."""
    tf = require("tensorflow")
    from google.protobuf import json_format

    graph_def, inputs, outputs, sig_names = frozen_graph(saved_model)
    outputs = {k: outputs[k] for k in ctx.in_output_order(list(outputs))}
    allowed = supported_ops()
    missing = sorted({n.op for n in graph_def.node} - allowed - {"Placeholder", "Const"})
    if missing:
        raise ExportError(f"tfjs cannot run op(s) {', '.join(missing)} in this graph; "
                          f"export another target or replace the op")
    weights, blobs = [], []
    exact = compared_constants(graph_def) if fp16 else set()
    for n in graph_def.node:
        if n.op != "Const":
            continue
        value = tf.make_ndarray(n.attr["value"].tensor)
        js_dtype, enum = _DTYPES.get(value.dtype.name, (None, None))
        if js_dtype is None:
            raise ExportError(f"constant {n.name} has dtype {value.dtype}, which tfjs lacks")
        spec, raw = _weight(n.name, value, js_dtype, fp16 and n.name not in exact)
        weights.append(spec)
        blobs.append(raw)
        tensor = n.attr["value"].tensor
        shape = tensor.tensor_shape
        tensor.Clear()  # the value lives in the shards now
        tensor.dtype = getattr(tf.dtypes, js_dtype).as_datatype_enum
        tensor.tensor_shape.CopyFrom(shape)
        n.attr["dtype"].type = tensor.dtype
    paths = _write_shards(out, b"".join(blobs))
    topology = json_format.MessageToDict(graph_def)
    model = {
        "format": "graph-model",
        "generatedBy": tf.__version__,
        "convertedBy": "deploykit",
        "signature": _signature(graph_def, inputs, outputs),
        "modelTopology": topology,
        "weightsManifest": [{"paths": paths, "weights": weights}],
        "userDefinedMetadata": {"outputs": list(outputs), "inputs": sig_names},
    }
    (out / "model.json").write_text(json.dumps(model))
    info = {"file": "model.json",  # outputs come back in signature order, mapped by position
            "versions": {"tensorflow": tf.__version__, "@tensorflow/tfjs": _tfjs_version()}}
    if exact:
        info["options"] = {"float32_weights": f"{len(exact)} compared constant(s) kept float32 "
                                              f"(decision thresholds: float16 moves them)"}
    return info


COMPARISONS = {"Less", "LessEqual", "Greater", "GreaterEqual", "Equal", "NotEqual"}
# ops that hand a constant's values on unchanged (params of a gather: input 0)
_CARRIERS = {"GatherV2", "Gather", "GatherNd", "Identity", "Reshape", "ExpandDims", "Squeeze",
             "StridedSlice", "Transpose", "ConcatV2", "Pack"}


def compared_constants(graph_def) -> set[str]:
    """Constants that a comparison reads, directly or through gathers and reshapes: decision
    thresholds (a compiled tree's splits), which float16 would round across inputs."""
    readers: dict[str, list] = {}
    for n in graph_def.node:
        for i, name in enumerate(n.input):
            readers.setdefault(name.split(":")[0], []).append((n, i))

    def compared(name: str, depth: int = 0) -> bool:
        return any(n.op in COMPARISONS or n.op in _CARRIERS and depth < 8
                   and (i == 0 or n.op in ("ConcatV2", "Pack")) and compared(n.name, depth + 1)
                   for n, i in readers.get(name, []))

    return {n.name for n in graph_def.node if n.op == "Const" and compared(n.name)}


def _weight(name: str, value: np.ndarray, js_dtype: str, fp16: bool) -> tuple[dict, bytes]:
    spec: dict[str, Any] = {"name": name, "shape": list(value.shape), "dtype": js_dtype}
    if js_dtype == "float32" and fp16:
        spec["quantization"] = {"dtype": "float16"}
        return spec, np.ascontiguousarray(value, dtype="<f2").tobytes()
    le = {"float32": "<f4", "int32": "<i4", "bool": "u1"}[js_dtype]
    if value.dtype == np.int64 and (value.max(initial=0) > 2**31 - 1 or
                                    value.min(initial=0) < -(2**31)):
        raise ExportError(f"constant {name} does not fit int32, which tfjs needs for int64")
    return spec, np.ascontiguousarray(value, dtype=le).tobytes()


def _write_shards(out: Path, data: bytes) -> list[str]:
    count = max(1, -(-len(data) // SHARD_BYTES))
    paths = []
    for i in range(count):
        name = f"group1-shard{i + 1}of{count}.bin"
        (out / name).write_bytes(data[i * SHARD_BYTES:(i + 1) * SHARD_BYTES])
        paths.append(name)
    return paths


def _signature(graph_def, inputs: list[str], outputs: dict[str, str]) -> dict[str, Any]:
    nodes = {n.name: n for n in graph_def.node}

    def spec(tensor: str) -> dict[str, Any]:
        node_name = tensor.split(":")[0]
        n = nodes.get(node_name)
        out: dict[str, Any] = {"name": tensor if ":" in tensor else f"{tensor}:0"}
        if n is not None and "shape" in n.attr:
            dims = [{"size": str(d.size)} for d in n.attr["shape"].shape.dim]
            out["tensorShape"] = {"dim": dims}
        if n is not None and "dtype" in n.attr:
            from tensorflow.core.framework import types_pb2

            out["dtype"] = types_pb2.DataType.Name(n.attr["dtype"].type)
        return out

    return {"inputs": {i: spec(i) for i in inputs},
            "outputs": {t: spec(t) for t in outputs.values()}}


def _tfjs_version() -> str:
    try:
        pkg = web_dir() / "node_modules" / "@tensorflow" / "tfjs" / "package.json"
        return json.loads(pkg.read_text())["version"]
    except OSError:
        return "unknown"


@edge("saved_model", "tfjs", requires=("tensorflow", "node"))
def saved_model_to_tfjs(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    return write_graph_model(src, out, ctx)


@edge("saved_model", "tfjs-fp16", requires=("tensorflow", "node"))
def saved_model_to_tfjs_fp16(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    return write_graph_model(src, out, ctx, fp16=True)


@register_runner("tfjs")
class TfjsRunner(NodeRunner):
    """model.json + shards on @tensorflow/tfjs (pure-JS CPU backend) in Node."""

    def _predict(self, inputs):
        # TF.js has no int64: it takes such inputs as int32, and wrapped a value past int32
        # (a hashed feature id) into a wrong answer without a word
        for name, v in inputs.items():
            if v.dtype == np.int64 and not fits(v, np.int32):
                raise InputError(f"input '{name}': values from {v.min()} to {v.max()} do not "
                                 f"fit int32, which TF.js computes int64 inputs in")
        return super()._predict(inputs)
