"""One small ONNX graph per operator the ONNX → Keras translator covers, and a check that
runs each in onnxruntime and, translated, in Keras on the backend of this process.

Run as a script (``python onnx_op_cases.py FOLDER``) it prints the check's JSON: the test
runs it that way under ``KERAS_BACKEND=torch``, and calls :func:`check_all` in its own
process for TensorFlow.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RNG = np.random.default_rng(0)
BATCH = 3
OPSET = 20  # Gelu's; the axes of Reduce*, Squeeze, Unsqueeze and Split are inputs here


def f32(*shape, low=-2.0, high=2.0) -> np.ndarray:
    return RNG.uniform(low, high, (BATCH, *shape)).astype(np.float32)


def w32(*shape) -> np.ndarray:
    return RNG.uniform(-1, 1, shape).astype(np.float32)


def i64(*values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


@dataclass
class Case:
    """Nodes on named inputs (batch first, the batch left open) and constants."""

    nodes: list
    inputs: dict[str, np.ndarray]
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    outputs: tuple[str, ...] = ("y",)
    opset: int = OPSET


def node(op: str, ins: list[str], outs: tuple[str, ...] = ("y",), **attrs):
    from onnx import helper

    return helper.make_node(op, ins, list(outs), **attrs)


def one(op: str, inputs: dict, consts: dict | None = None, order: list[str] | None = None,
        outs: tuple[str, ...] = ("y",), **attrs) -> Case:
    consts = consts or {}
    return Case([node(op, order or [*inputs, *consts], outs, **attrs)], inputs, consts, outs)


def _cases() -> dict[str, Case]:
    x, pos = {"x": f32(4)}, {"x": f32(4, low=0.1, high=3)}
    c: dict[str, Case] = {}
    for op in ("Relu", "Sigmoid", "Tanh", "Exp", "Neg", "Abs", "Erf", "Floor", "Ceil", "Sin",
               "Cos", "Softplus", "Sign", "Identity", "Dropout"):
        c[op] = one(op, x)
    for op in ("Log", "Sqrt", "Reciprocal"):
        c[op] = one(op, pos)
    c["IsNaN"] = Case([node("Div", ["x", "z"], ("q",)), node("IsNaN", ["q"])],
                      {"x": f32(4)}, {"z": np.asarray([0, 1, 0, 2], np.float32)})
    two = {"a": f32(4), "b": f32(4)}
    for op in ("Add", "Sub", "Mul", "Div", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"):
        c[op] = one(op, two)
    c["Pow"] = one("Pow", {"a": f32(4, low=0.1, high=2), "b": f32(4)})
    c["Equal"] = one("Equal", {"a": RNG.integers(0, 3, (BATCH, 4))}, {"b": i64(1, 2, 0, 1)})
    c["Max"] = one("Max", {"a": f32(4), "b": f32(4)}, {"c": w32(4)})
    c["Min"] = one("Min", {"a": f32(4), "b": f32(4)}, {"c": w32(4)})
    for op in ("And", "Or", "Xor"):
        c[op] = Case([node("Greater", ["a", "z"], ("p",)), node("Less", ["b", "z"], ("q",)),
                      node(op, ["p", "q"])], two, {"z": np.zeros(4, np.float32)})
    c["Not"] = Case([node("Greater", ["x", "z"], ("p",)), node("Not", ["p"])], x,
                    {"z": np.zeros(4, np.float32)})
    c["Where"] = Case([node("Greater", ["a", "b"], ("p",)), node("Where", ["p", "a", "b"])], two)
    c["Clip"] = one("Clip", x, {"lo": np.float32(-0.5), "hi": np.float32(0.7)})
    c["LeakyRelu"] = one("LeakyRelu", x, alpha=0.2)
    c["HardSigmoid"] = one("HardSigmoid", x, alpha=0.3, beta=0.4)
    c["HardSwish"] = one("HardSwish", {"x": f32(4, low=-4, high=4)})
    c["Gelu"] = one("Gelu", x, approximate="tanh")
    c["Cast"] = one("Cast", x, to=7)  # int64
    # run-time shapes: Shape -> Gather/Slice -> Unsqueeze/Concat -> Reshape, Expand, ...
    c["Shape"] = Case([node("Shape", ["x"], ("s",)), node("Gather", ["s", "zero"], ("b",)),
                       node("Unsqueeze", ["b", "zero1"], ("b1",)),
                       node("Concat", ["b1", "rest"], ("t",), axis=0),
                       node("Reshape", ["x", "t"])],
                      {"x": f32(2, 6)}, {"zero": i64(0).reshape(()), "zero1": i64(0),
                                         "rest": i64(3, 4)})
    c["Reshape"] = one("Reshape", {"x": f32(2, 6)}, {"s": i64(0, -1, 3)})
    c["Flatten"] = one("Flatten", {"x": f32(2, 3, 2)}, axis=1)
    c["Transpose"] = one("Transpose", {"x": f32(2, 3)}, perm=[2, 0, 1])
    c["Squeeze"] = one("Squeeze", {"x": f32(1, 4)}, {"axes": i64(1)})
    c["Unsqueeze"] = one("Unsqueeze", x, {"axes": i64(1, -1)})
    c["Concat"] = one("Concat", {"a": f32(2), "b": f32(3)}, axis=1)
    c["Slice"] = one("Slice", {"x": f32(8, 3)}, {"s": i64(6, 0), "e": i64(-9, 99),
                                                  "ax": i64(1, 2), "st": i64(-2, 2)})
    c["Gather"] = one("Gather", {"x": f32(5, 2)}, {"i": i64(4, -1, 0)}, axis=1)
    c["GatherElements"] = one("GatherElements", {"x": f32(3), "i": RNG.integers(0, 3, (BATCH, 2))},
                              axis=1)
    c["GatherND"] = Case([node("GatherND", ["t", "i"])], {"i": RNG.integers(0, 3, (BATCH, 2))},
                         {"t": w32(3, 3, 2)})
    c["Expand"] = one("Expand", {"x": f32(1, 4)}, {"s": i64(1, 3, 1)})
    c["Tile"] = one("Tile", {"x": f32(2)}, {"r": i64(1, 3)})
    c["ConstantOfShape"] = Case(
        [node("Shape", ["x"], ("s",)), node("ConstantOfShape", ["s"], ("k",),
                                            value=_tensor(np.float32(1.5))),
         node("Add", ["x", "k"])], {"x": f32(4)})
    c["Range"] = Case([node("Shape", ["x"], ("s",), start=1, end=2),
                       node("Squeeze", ["s"], ("n",)), node("Range", ["zero", "n", "one"], ("r",)),
                       node("Cast", ["r"], ("rf",), to=1), node("Add", ["x", "rf"])],
                      {"x": f32(5)}, {"zero": np.int64(0), "one": np.int64(1)})
    c["Split"] = one("Split", {"x": f32(6)}, {"sizes": i64(2, 4)}, outs=("y", "z"), axis=1)
    c["MatMul"] = one("MatMul", {"x": f32(4)}, {"w": w32(4, 5)})
    c["Gemm"] = one("Gemm", {"x": f32(4)}, {"w": w32(5, 4), "b": w32(5)}, transB=1, alpha=0.5,
                    beta=2.0)
    c["Softmax"] = one("Softmax", {"x": f32(2, 4)}, axis=1)
    c["LogSoftmax"] = one("LogSoftmax", x)
    # opset 11: Softmax normalises over every axis from `axis` on, axes are attributes
    c["Softmax opset 11"] = Case([node("Softmax", ["x"], axis=1)], {"x": f32(2, 3)}, opset=11)
    c["Squeeze opset 11"] = Case([node("Squeeze", ["x"], ("s",), axes=[1]),
                                  node("Unsqueeze", ["s"], axes=[2])], {"x": f32(1, 4)}, opset=11)
    for op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd"):
        c[op] = one(op, {"x": f32(2, 3)}, {"axes": i64(-1)}, keepdims=0)
    c["LayerNormalization"] = one("LayerNormalization", {"x": f32(2, 4)},
                                  {"s": w32(4), "b": w32(4)}, epsilon=1e-3)
    c["BatchNormalization"] = one("BatchNormalization", {"x": f32(2, 3, 3)},
                                  {"s": w32(2), "b": w32(2), "m": w32(2),
                                   "v": np.abs(w32(2)) + 0.5})
    c["Conv"] = one("Conv", {"x": f32(2, 7, 6)}, {"w": w32(4, 2, 3, 3), "b": w32(4)},
                    pads=[1, 0, 1, 2], strides=[2, 1])
    c["Conv depthwise 1-D"] = one("Conv", {"x": f32(3, 9)}, {"w": w32(6, 1, 3)},
                                  group=3, auto_pad="SAME_UPPER")
    c["MaxPool"] = one("MaxPool", {"x": f32(2, 5, 5)}, kernel_shape=[2, 2], pads=[0, 0, 1, 1],
                       strides=[2, 2])
    c["AveragePool"] = one("AveragePool", {"x": f32(2, 6, 6)}, kernel_shape=[3, 3],
                           strides=[3, 3])
    c["GlobalAveragePool"] = one("GlobalAveragePool", {"x": f32(2, 3, 3)})
    c["GlobalMaxPool"] = one("GlobalMaxPool", {"x": f32(2, 5)})
    c["Pad"] = one("Pad", {"x": f32(2, 3)}, {"p": i64(0, 1, 0, 0, 0, 2), "v": np.float32(0.5)})
    t = node("Transpose", ["x"], ("t",), perm=[1, 0, 2])  # [seq, batch, input], as torch's
    c["LSTM"] = Case([t, node("LSTM", ["t", "w", "r", "b"], ("y", "h", "c"), hidden_size=4,
                              direction="bidirectional")],
                     {"x": f32(5, 3)}, {"w": w32(2, 16, 3), "r": w32(2, 16, 4), "b": w32(2, 32)},
                     ("y", "h", "c"))
    c["GRU"] = Case([t, node("GRU", ["t", "w", "r", "b"], ("y", "h"), hidden_size=4,
                             linear_before_reset=1)],
                    {"x": f32(5, 3)}, {"w": w32(1, 12, 3), "r": w32(1, 12, 4), "b": w32(1, 24)},
                    ("y", "h"))
    c["GRU reset first"] = Case([t, node("GRU", ["t", "w", "r"], ("y", "h"), hidden_size=4,
                                         direction="reverse")],
                                {"x": f32(5, 3)}, {"w": w32(1, 12, 3), "r": w32(1, 12, 4)},
                                ("y", "h"))
    c.update(_review_cases())
    return c


def _review_cases() -> dict[str, Case]:
    """Defaults and corners where Keras's conventions differ from ONNX's."""
    return {
        "MaxPool without strides (1, not the kernel)": one("MaxPool", {"x": f32(2, 5, 5)},
                                                           kernel_shape=[2, 2]),
        "integer Div truncates": Case([node("Cast", ["x"], ("n",), to=7),
                                       node("Div", ["n", "d"])],
                                      {"x": f32(4, low=-9, high=9)}, {"d": i64(2, -3, 4, -2)}),
        "Split num_outputs uneven": one("Split", {"x": f32(7)}, outs=("a", "b", "y"), axis=1,
                                        num_outputs=3),
        "Split by output count": Case([node("Split", ["x"], ("a", "y"), axis=1)],
                                      {"x": f32(6)}, outputs=("a", "y"), opset=13),
        "size cast to float": Case([node("Shape", ["x"], ("s",)),
                                    node("Gather", ["s", "one"], ("n",)),
                                    node("Cast", ["n"], ("f",), to=1),
                                    node("Mul", ["f", "half"], ("h",)), node("Mul", ["x", "h"])],
                                   {"x": f32(5)}, {"one": np.int64(1),
                                                   "half": np.float32(0.5)}),
        "Gather negative ids": Case([node("Gather", ["t", "i"])],
                                    {"i": RNG.integers(-5, 5, (BATCH, 2))}, {"t": w32(5, 2)}),
        "ReduceSum no axes no-op": one("ReduceSum", {"x": f32(3)}, {"axes": i64()},
                                       noop_with_empty_axes=1),
        "Slice-1 attributes": Case([node("Slice", ["x"], starts=[1], ends=[2**62], axes=[1])],
                                   {"x": f32(4)}, opset=9),
        "folded at the graph's opset": Case([node("Softmax", ["c"], ("p",), axis=1),
                                             node("Add", ["x", "p"])],
                                            {"x": f32(2, 2)}, {"c": w32(1, 2, 2)}, opset=11),
        "Pad-2 value": Case([node("Pad", ["x"], pads=[0, 1, 0, 2], value=0.5)], {"x": f32(3)},
                            opset=10),
    }


def _tensor(value: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(value).reshape(1))


def model(case: Case):
    """The case as an ONNX model: its inputs with an open batch, its constants as
    initializers."""
    from onnx import TensorProto, helper, numpy_helper

    inputs = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype),
                                            [None, *v.shape[1:]])
              for k, v in case.inputs.items()]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in case.consts.items()]

    def make(types):
        outputs = [helper.make_tensor_value_info(o, t, None) for o, t in zip(case.outputs, types)]
        graph = helper.make_graph(case.nodes, "case", inputs, outputs, inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)])

    from onnx.reference import ReferenceEvaluator  # the outputs' types, for onnxruntime

    ys = ReferenceEvaluator(make([TensorProto.UNDEFINED] * len(case.outputs))).run(
        None, case.inputs)
    return make([helper.np_dtype_to_tensor_dtype(np.asarray(y).dtype) for y in ys])


CASES = _cases()
# graphs the translator must refuse, naming what it lacks (in one line, as a cell's reason)
REFUSED = {
    "grouped Conv": (one("Conv", {"x": f32(4, 5)}, {"w": w32(2, 2, 3)}, group=2),
                     "Conv with group=2"),
    "LSTM peepholes": (Case([node("Transpose", ["x"], ("t",), perm=[1, 0, 2]),
                             node("LSTM", ["t", "w", "r", "", "", "", "", "p"], ("y",),
                                  hidden_size=2)],
                            {"x": f32(3, 2)}, {"w": w32(1, 8, 2), "r": w32(1, 8, 2),
                                               "p": w32(1, 6)}), "LSTM with peepholes"),
    "data-dependent shape": (Case([node("Reshape", ["x", "s"])],
                                  {"x": f32(4), "s": i64(3, 2, 2)}),
                             "a shape computed from the values of a tensor"),
}


def check_all(folder: str) -> dict[str, str]:
    """Each case through onnxruntime and through the translated Keras model; the cases
    whose outputs differ (or that fail), with why."""
    import onnx
    import onnxruntime as ort

    from deploykit.onnx_keras import to_keras

    failures = {}
    for name, case in CASES.items():
        path = Path(folder) / f"{name.replace(' ', '_')}.onnx"
        onnx.save(model(case), path)
        want = ort.InferenceSession(str(path)).run(None, case.inputs)
        sig = {"inputs": [{"name": k, "shape": [None, *v.shape[1:]], "dtype": str(v.dtype)}
                          for k, v in case.inputs.items()],
               "outputs": [{"name": o} for o in case.outputs]}
        try:
            keras_model = to_keras(path, sig)
            xs = list(case.inputs.values())
            got = keras_model.predict(xs[0] if len(xs) == 1 else xs, verbose=0,
                                      batch_size=len(xs[0]))
        except Exception as e:  # reported per case, with its type
            failures[name] = f"{type(e).__name__}: {str(e)[-600:]}"
            continue
        got = got if isinstance(got, list) else [got]
        for o, w, g in zip(case.outputs, want, got, strict=True):
            g = np.asarray(g)
            if g.shape != w.shape or not np.allclose(g.astype(np.float64), w.astype(np.float64),
                                                     atol=1e-5, rtol=1e-4, equal_nan=True):
                failures[name] = f"output {o}: got {g.ravel()[:6]} want {w.ravel()[:6]}"
    return {**failures, **_refusals(folder)}


def _refusals(folder: str) -> dict[str, str]:
    import onnx

    from deploykit.onnx_keras import UnsupportedOperator, to_keras

    failures = {}
    for name, (case, why) in REFUSED.items():
        path = Path(folder) / f"{name.replace(' ', '_')}.onnx"
        onnx.save(model(case), path)
        sig = {"inputs": [{"name": k, "shape": [None, *v.shape[1:]], "dtype": str(v.dtype)}
                          for k, v in case.inputs.items()],
               "outputs": [{"name": o} for o in case.outputs]}
        try:
            to_keras(path, sig)
            failures[name] = "translated, but should be refused"
        except UnsupportedOperator as e:
            if why not in str(e) or "\n" in str(e):
                failures[name] = f"refused with {e!r}"
        except Exception as e:  # Keras wraps errors raised in a layer's call
            if type(e).__name__ != "UnsupportedOperator" and why not in str(e):
                failures[name] = f"{type(e).__name__}: {str(e)[-300:]}"
    return failures


if __name__ == "__main__":
    print(json.dumps(check_all(sys.argv[1])))
