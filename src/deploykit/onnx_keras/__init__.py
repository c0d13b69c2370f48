"""ONNX to Keras: an ONNX graph re-expressed with ``keras.ops``, so it runs under both Keras
backends.

This closes the matrix between the two framework families. A TensorFlow model reaches ONNX
through tf2onnx; from there this module makes a Keras model. Under the torch backend that
model is ``torch.export``-ed, and it then reaches TorchScript, ``.ptl`` and ExecuTorch. A
PyTorch program reaches ONNX through the dynamo exporter; from there, under the TensorFlow
backend, the same Keras model is written as a SavedModel, and TF.js follows from that.

Why our own translator rather than a library (checked in 2026-11):

- onnx2torch 1.5.15 (last release 2024-08) needs torchvision. pip would then fetch a
  CUDA-built torchvision against the CPU torch this project pins.
- onnx2tf is built to turn NCHW graphs into NHWC ones (keeping an input NCHW takes
  per-input flags), which changes the artifact's signature, and it brings onnx-simplifier,
  onnx_graphsurgeon and polygraphy.
- nobuco maps PyTorch to tf.keras by tracing, so it does not help the TensorFlow → PyTorch
  direction.

One translator written in ``keras.ops`` covers both directions. It keeps the source's
signature exactly (channels-first convolutions transpose inside the graph, not at its
inputs), and it needs only ``onnx``, which the base install already has.

How it works:

- :func:`translate` reads the graph. It folds every node whose inputs are all constants,
  using ONNX's reference evaluator. It keeps small constants in the layer's config and
  large ones as weights.
- :class:`OnnxGraph` (:func:`layer_class`) is one Keras layer. Its ``call`` runs the
  remaining nodes with the operators in :mod:`.ops`.
- A shape computed at run time (``Shape`` → ``Gather`` → ``Concat`` → ``Reshape``) stays a
  tuple of Python ints and backend scalars (:class:`.ops.Dims`). That way ``torch.export``
  sees symbolic sizes rather than data-dependent tensors.
- An operator outside :data:`.ops.OPS` fails the conversion, naming every operator
  missing (:class:`UnsupportedOperator`).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deploykit.onnx_keras.ops import OPS, UnsupportedOperator, literal, run

__all__ = ["OPS", "Translation", "UnsupportedOperator", "layer_class", "to_keras", "translate"]
SMALL = 64  # constants up to this many elements live in the layer's config, not its weights
OPSET_DEPENDENT = {"Softmax", "LogSoftmax"}  # meaning changed at opset 13: the node keeps it
RANDOM_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
              "Multinomial", "Bernoulli"}


@dataclass
class Translation:
    """An ONNX graph ready for :class:`OnnxGraph`: the nodes left after constant folding
    (JSON), the graph's input and output names, small constants (JSON) and weights."""

    nodes: list[dict[str, Any]]
    inputs: list[str]
    outputs: list[str]
    consts: dict[str, dict[str, Any]] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)


def translate(path: str | Path) -> Translation:
    """Read the ONNX model at ``path``, fold its constant parts, and check every operator
    left is covered.

    Args:
        path: an ``.onnx`` file (weights inside it).

    Returns:
        The :class:`Translation`.

    Raises:
        UnsupportedOperator: naming every operator not covered.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    known = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    nodes = []
    for n in graph.node:
        if _fold(n, known, opset):
            continue
        attrs = {a.name: _attr(a) for a in n.attribute}
        if n.op_type in OPSET_DEPENDENT:
            attrs["_opset"] = opset
        if n.op_type == "Split":  # without sizes, it splits into as many parts as outputs
            attrs["_outputs"] = len(n.output)
        nodes.append({"op": n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}:{n.op_type}",
                      "in": list(n.input), "out": list(n.output), "attrs": attrs})
    missing = sorted({n["op"] for n in nodes} - set(OPS))
    if missing:
        ml = any(m.startswith("ai.onnx.ml:") for m in missing)
        raise UnsupportedOperator(f"ONNX operator(s) {', '.join(missing)} not covered by "
                                  f"deploykit's ONNX → Keras translator" + (
                                      "; ai.onnx.ml operators come from skl2onnx: export the "
                                      "scikit-learn model itself (the estimator or a .skops "
                                      "file) to reach every target" if ml else ""))
    inputs = [i.name for i in graph.input if i.name not in known]
    outputs = [o.name for o in graph.output]
    used = {i for n in nodes for i in n["in"]} | set(outputs)
    t = Translation(nodes, inputs, outputs)
    for name in sorted(used & set(known)):
        value = np.asarray(known[name])
        if value.size <= SMALL or value.dtype.kind not in "fc":
            t.consts[name] = {"dtype": str(value.dtype), "shape": list(value.shape),
                              "data": value.ravel().tolist()}
        else:
            t.weights[name] = value
    return t


def _fold(node, known: dict[str, np.ndarray], opset: int) -> bool:
    """Evaluate ``node`` now, at the graph's opset, when all its inputs are constants
    (adding its outputs to ``known``); ``False`` when it must run in the graph."""
    if node.op_type in RANDOM_OPS or node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type in OPSET_DEPENDENT and opset < 13:  # the evaluator has opset 13's only
        return False
    ins = list(dict.fromkeys(i for i in node.input if i))
    if not all(i in known for i in ins) or any(a.type == a.GRAPH for a in node.attribute):
        return False
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    graph = helper.make_graph(
        [node], "fold", [helper.make_tensor_value_info(
            i, helper.np_dtype_to_tensor_dtype(np.asarray(known[i]).dtype), None) for i in ins],
        [helper.make_tensor_value_info(o, 0, None) for o in node.output if o])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    try:
        outs = ReferenceEvaluator(model).run(None, {i: known[i] for i in ins})
    except Exception:  # the reference evaluator lacks it: leave it to the graph
        return False
    known.update({name: np.asarray(v) for name, v in
                  zip([o for o in node.output if o], outs, strict=False)})
    return True


def _attr(a) -> Any:
    """An attribute's value as JSON (tensors as ``{"dtype", "shape", "data"}``)."""
    from onnx import helper, numpy_helper

    value = helper.get_attribute_value(a)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    if a.type == a.TENSOR:
        arr = numpy_helper.to_array(value)
        return {"dtype": str(arr.dtype), "shape": list(arr.shape), "data": arr.ravel().tolist()}
    if a.type in (a.GRAPH, a.GRAPHS):
        return None  # If/Loop/Scan bodies: their operators are not covered either
    return value


@functools.cache
def layer_class() -> type:
    """The Keras layer that runs a :class:`Translation`, registered under ``deploykit``
    (made on first use: importing this module imports no framework)."""
    import keras

    @keras.saving.register_keras_serializable(package="deploykit")
    class OnnxGraph(keras.layers.Layer):
        """The nodes of an ONNX graph, run with ``keras.ops``; one output per graph output."""

        def __init__(self, nodes: list[dict[str, Any]], inputs: list[str], outputs: list[str],
                     consts: dict[str, dict[str, Any]], specs: dict[str, Any],
                     weights: dict[str, np.ndarray] | None = None, **kw: Any) -> None:
            super().__init__(**kw)
            self.nodes, self.graph_inputs, self.graph_outputs = nodes, inputs, outputs
            self.consts = consts
            self.specs = {k: (list(s), str(d)) for k, (s, d) in specs.items()}
            self.tensors = {}
            for i, (name, (shape, dtype)) in enumerate(self.specs.items()):
                w = self.add_weight(name=f"w{i}", shape=shape, dtype=dtype, trainable=False,
                                    initializer="zeros")
                if weights is not None:
                    w.assign(weights[name])
                self.tensors[name] = w

        def call(self, xs):
            xs = list(xs) if isinstance(xs, (list, tuple)) else [xs]
            env = {k: literal(c) for k, c in self.consts.items()}
            env.update({k: keras.ops.convert_to_tensor(w) for k, w in self.tensors.items()})
            env.update(zip(self.graph_inputs, xs, strict=True))
            return run(self.nodes, env, self.graph_outputs, batch=xs[0].shape[0])

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "nodes": self.nodes, "inputs": self.graph_inputs,
                    "outputs": self.graph_outputs, "consts": self.consts, "specs": self.specs}

    return OnnxGraph


def to_keras(path: str | Path, signature: dict[str, Any]):
    """The ONNX model at ``path`` as a ``keras.Model`` with ``signature``'s named inputs
    (batch left open) and outputs (graph outputs matched by name, else by position).

    Raises:
        UnsupportedOperator: see :func:`translate`.
    """
    import keras

    t = translate(path)
    order = _match_by_name(t.inputs, [s["name"] for s in signature["inputs"]], "inputs")
    t.inputs = [t.inputs[i] for i in order]
    specs = {k: (list(v.shape), str(v.dtype)) for k, v in t.weights.items()}
    layer = layer_class()(t.nodes, t.inputs, t.outputs, t.consts, specs, t.weights,
                          name="onnx_graph")
    xs = [keras.Input(tuple(s["shape"][1:]), dtype=s["dtype"], name=s["name"],
                      batch_size=s["shape"][0] if isinstance(s["shape"][0], int) else None)
          for s in signature["inputs"]]
    try:
        ys = layer(xs[0] if len(xs) == 1 else xs)
    except UnsupportedOperator as e:  # Keras wraps it in a page about compute_output_spec
        found = re.search(r"ONNX .*? is not covered by [^\x1b\n]*", str(e))
        raise UnsupportedOperator(found.group(0) if found else str(e)) from None
    ys = list(ys) if isinstance(ys, (list, tuple)) else [ys]
    order = _match_by_name(t.outputs, [s["name"] for s in signature["outputs"]], "outputs")
    named = [keras.layers.Identity(name=s["name"])(ys[i])
             for s, i in zip(signature["outputs"], order, strict=True)]
    return keras.Model(xs[0] if len(xs) == 1 else xs, named[0] if len(named) == 1 else named,
                       name="from_onnx")


def _match_by_name(onnx_names: list[str], names: list[str], what: str) -> list[int]:
    """For each signature input or output, the index of the ONNX graph's: by name (tf2onnx
    adds ``:0``), else by position."""
    if len(onnx_names) != len(names):
        raise UnsupportedOperator(f"the ONNX graph has {len(onnx_names)} {what}, the "
                                  f"signature {len(names)}")
    bare = [n.split(":")[0] for n in onnx_names]
    if sorted(bare) == sorted(names):
        return [bare.index(n) for n in names]
    return list(range(len(names)))
