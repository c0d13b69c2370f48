"""ONNX: node, runner (onnxruntime) and the edges into it from scikit-learn (skl2onnx),
SavedModel (tf2onnx) and torch.export programs (torch.onnx, dynamo exporter).
Every ONNX artifact keeps a dynamic batch dimension."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deploykit._lazy import require
from deploykit.formats.base import Runner, register_runner
from deploykit.graph import EdgeContext, edge, node

node("onnx", "onnx", column=4, serve_rank=0, devices=("edge",), extra="onnx",
     distributions=("onnxruntime",), description="ONNX model, run by onnxruntime")

OPSET = 17


@edge("sklearn", "onnx", requires=("skl2onnx", "onnx"))
def sklearn_to_onnx(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    """skl2onnx; classifiers give ``label`` and ``probabilities`` as plain tensors."""
    import numpy as np

    skl2onnx = require("skl2onnx", purpose="scikit-learn -> ONNX")
    from sklearn.preprocessing import StandardScaler

    from deploykit.training.sklearn_path import load_estimator

    model = load_estimator(src)
    n = ctx.signature["inputs"][0]["shape"][1]
    classify = hasattr(model, "predict_proba")
    # Sub + Div like sklearn: the default Scaler op multiplies by a float32 reciprocal, which
    # is 1 ulp off often enough to flip random-forest splits.
    options: dict[Any, Any] = {StandardScaler: {"div": "div"}}
    last = model[-1] if hasattr(model, "steps") else model
    if classify:
        options[type(last)] = {"zipmap": False}
    elif hasattr(last, "classes_"):  # else skl2onnx gives it the option zipmap, which
        options[type(last)] = {}     # LinearSVC in a Pipeline refuses
    with _int_missing_flags():
        onx = skl2onnx.to_onnx(model, np.zeros((1, n), np.float32), options=options,
                               target_opset={"": OPSET, "ai.onnx.ml": 3})
    if ctx.signature["inputs"][0].get("missing"):
        _missing_branches(onx, last)
    _float64_thresholds(onx, last)
    if classify:
        _label_positions(onx, model.classes_)
    elif len(onx.graph.output) == 2 and len(ctx.signature["outputs"]) == 1:
        _predicted_values(onx)
    outputs = ["label", "probabilities"] if classify else [o.name for o in onx.graph.output]
    (out / "model.onnx").write_bytes(onx.SerializeToString())
    return {"file": "model.onnx", "outputs": outputs,
            "versions": {"skl2onnx": skl2onnx.__version__}}


def _label_positions(onx, classes) -> None:
    """skl2onnx's label output holds class values (``"cat"``, ``3``); deploykit's holds their
    positions in ``classes_``, which the manifest's labels name."""
    import numpy as np

    classes = np.asarray(classes)
    if classes.dtype.kind not in "biu" or not np.array_equal(classes, np.arange(len(classes))):
        _encode_positions(onx, onx.graph.output[0].name, classes.tolist())


def _missing_branches(onx, est) -> None:
    """Where a missing value (NaN) goes at each node of a forest or tree: skl2onnx leaves it
    out for scikit-learn's trees (which learn it since 1.3), so onnxruntime sent every NaN
    right. Its node ids are scikit-learn's, its tree ids the estimators' order."""
    from onnx import helper

    trees = [est] if hasattr(est, "tree_") else list(getattr(est, "estimators_", []))
    if not trees or not all(hasattr(getattr(t, "tree_", None), "missing_go_to_left")
                            for t in trees):
        return
    for op in onx.graph.node:
        if op.op_type not in ("TreeEnsembleClassifier", "TreeEnsembleRegressor"):
            continue
        attrs = {a.name: a for a in op.attribute}
        tracks = [int(trees[t].tree_.missing_go_to_left[n]) for t, n in
                  zip(attrs["nodes_treeids"].ints, attrs["nodes_nodeids"].ints, strict=True)]
        if "nodes_missing_value_tracks_true" in attrs:
            op.attribute.remove(attrs["nodes_missing_value_tracks_true"])
        op.attribute.append(helper.make_attribute("nodes_missing_value_tracks_true", tracks))


def _float64_thresholds(onx, est) -> None:
    """HistGradientBoosting compares ``float64(x) <= threshold`` with float64 thresholds, and
    skl2onnx rounds them to the nearest float32 (it adjusts a forest's, not these): a float32
    ``x`` equal to a threshold rounded up went left in onnxruntime and right in scikit-learn
    (4 of 200 rows of a model fitted on float64 ages). Each becomes the largest float32 at
    most the threshold. Tree ids are skl2onnx's: iteration * classes + class."""
    import numpy as np
    from onnx import helper

    predictors = getattr(est, "_predictors", None)
    if not predictors:
        return
    k = len(predictors[0])
    limit = {(i * k + c, n): float(node["num_threshold"]) for i, per in enumerate(predictors)
             for c, tree in enumerate(per) for n, node in enumerate(tree.nodes)
             if not node["is_leaf"]}
    for op in onx.graph.node:
        if op.op_type not in ("TreeEnsembleClassifier", "TreeEnsembleRegressor"):
            continue
        attrs = {a.name: a for a in op.attribute}
        values = list(attrs["nodes_values"].floats)
        for j, key in enumerate(zip(attrs["nodes_treeids"].ints, attrs["nodes_nodeids"].ints,
                                    strict=True)):
            t = limit.get(key)
            if t is not None and attrs["nodes_modes"].strings[j] == b"BRANCH_LEQ":
                v = np.float32(t)  # compared as float64: numpy compares float32 with t
                values[j] = float(np.nextafter(v, np.float32(-np.inf)) if float(v) > t else v)
        op.attribute.remove(attrs["nodes_values"])
        op.attribute.append(helper.make_attribute("nodes_values", values))


def _predicted_values(onx) -> None:
    """A classifier without ``predict_proba`` (LinearSVC, RidgeClassifier, SVC) or an outlier
    detector is exported for its ``predict``, as deploykit's compiler exports it: skl2onnx's
    label output becomes float32 ``predictions`` of one column; its scores are left out."""
    from onnx import TensorProto, helper

    graph = onx.graph
    _rename(graph, graph.output[0].name, "predicted_values")
    graph.initializer.append(helper.make_tensor("one_column", TensorProto.INT64, [2], [-1, 1]))
    graph.node.extend([
        helper.make_node("Cast", ["predicted_values"], ["predicted_floats"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["predicted_floats", "one_column"], ["predictions"])])
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("predictions", TensorProto.FLOAT, [None, 1]))


def _encode_positions(onx, name: str, classes: list) -> None:
    """Make output ``name`` (class values) the values' positions in ``classes``, with an
    ``ai.onnx.ml`` LabelEncoder after it (-1 for a value not in the list)."""
    from onnx import TensorProto, helper

    out = next(o for o in onx.graph.output if o.name == name)
    keys = {TensorProto.STRING: ("keys_strings", str), TensorProto.INT64: ("keys_int64s", int),
            TensorProto.FLOAT: ("keys_floats", float)}
    kind = out.type.tensor_type.elem_type
    if kind not in keys:
        raise ValueError(f"a class output of type {TensorProto.DataType.Name(kind)}")
    _rename(onx.graph, name, f"{name}_class_values")
    attr, cast = keys[kind]
    onx.graph.node.append(helper.make_node(
        "LabelEncoder", [f"{name}_class_values"], [name], domain="ai.onnx.ml",
        default_int64=-1, values_int64s=list(range(len(classes))),
        **{attr: [cast(c) for c in classes]}))
    out.type.tensor_type.elem_type = TensorProto.INT64
    for imp in onx.opset_import:  # keys_* and values_* came with LabelEncoder 2
        if imp.domain == "ai.onnx.ml":
            imp.version = max(imp.version, 2)


def _rename(graph, old: str, new: str) -> None:
    for n in graph.node:
        n.input[:] = [new if i == old else i for i in n.input]
        n.output[:] = [new if o == old else o for o in n.output]
    for info in graph.value_info:
        if info.name == old:
            info.name = new


def plain_classifier(onx) -> list | None:
    """An ONNX classifier as skl2onnx writes one by default, made plain tensors as deploykit's
    own are: a ZipMap output (a list of ``{class: probability}`` dicts) becomes the
    probabilities it was made of, and a label output of class values (``"cat"``, or numbers
    other than 0..n-1) becomes their positions. Changes ``onx`` in place.

    Returns:
        The class values, in column order, when the model names them (else None).
    """
    from onnx import TensorProto, helper

    graph = onx.graph
    classes = next((_classes_of(n) for n in graph.node if _classes_of(n)), None)
    for zipmap in [n for n in graph.node if n.op_type == "ZipMap"]:
        graph.node.remove(zipmap)
        _rename(graph, zipmap.input[0], zipmap.output[0])
        out = next(o for o in graph.output if o.name == zipmap.output[0])
        out.type.CopyFrom(helper.make_tensor_type_proto(TensorProto.FLOAT, [None, len(classes)]))
    if classes is None:
        return None
    _join_columns(graph, len(classes))
    for out in graph.output:
        kind = out.type.tensor_type.elem_type
        if kind == TensorProto.STRING or (kind == TensorProto.INT64 and
                                          classes != list(range(len(classes)))):
            _encode_positions(onx, out.name, classes)
            break
    return classes


def with_any_batch(onx) -> Any:
    """A copy of ``onx`` whose input and outputs declare any batch (dimension 0 named
    ``batch``), its inner shapes (stale now) dropped. Whether the graph computes with any
    batch (no reshape to a fixed one) is for the caller to check by running it."""
    copy = type(onx)()
    copy.CopyFrom(onx)
    for value in [*copy.graph.input, *copy.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if len(dims):
            dims[0].Clear()
            dims[0].dim_param = "batch"
    del copy.graph.value_info[:]
    return copy


# ops an id passes through unchanged on its way to a table (as id_ranges.torch_rows follows)
_KEEPS_IDS = {"Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose"}


def id_range(onx, name: str) -> tuple[int, int] | None:
    """The ids input ``name`` takes when it indexes tables (a ``Gather`` on axis 0 of an
    initializer, reached directly or through casts and reshapes): ``(0, rows - 1)`` of the
    smallest; its other uses (a padding mask: ``ids != 0``) do not count. None when it
    indexes none."""
    from onnx import helper

    tables = {t.name: t.dims for t in onx.graph.initializer}
    rows, frontier = [], [name]
    while frontier:
        tensor = frontier.pop()
        for n in (n for n in onx.graph.node if tensor in n.input):
            axis = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "axis"), 0)
            if n.op_type in _KEEPS_IDS and n.input[0] == tensor:
                frontier.append(n.output[0])
            elif n.op_type == "Gather" and n.input[1] == tensor and n.input[0] in tables and \
                    axis == 0:
                rows.append(tables[n.input[0]][0])
    return (0, min(rows) - 1) if rows else None


def plain_output_names(onx) -> bool:
    """Outputs named as ``torch.onnx.export`` names them without ``output_names``
    (``onnx::ReduceMean_8``, ``5``) renamed ``output_0``, ``output_1``, ... by position, as
    deploykit names a tuple's: Keras refused them as layer scopes, so the routes through the
    ONNX-to-Keras bridge failed. Changes ``onx`` in place; returns whether it renamed any."""
    import re

    taken = {o.name for o in onx.graph.output}
    renamed = False
    for i, out in enumerate(onx.graph.output):
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", out.name) or f"output_{i}" in taken:
            continue
        _rename(onx.graph, out.name, f"output_{i}")
        out.name, renamed = f"output_{i}", True
    return renamed


def _join_columns(graph, n: int) -> None:
    """skl2onnx's ``zipmap="columns"`` gives one output of shape [batch] per class beside the
    label: they become one ``probabilities`` output of shape [batch, n], in the same order.
    Without this the file read as a regression with n + 1 outputs."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    columns = [o for o in graph.output if o.type.tensor_type.elem_type == TensorProto.FLOAT
               and len(o.type.tensor_type.shape.dim) == 1]
    if n < 2 or len(columns) != n or len(graph.output) != n + 1:
        return
    if any(o == "probabilities" for node in graph.node for o in node.output):
        _rename(graph, "probabilities", "probabilities_before_columns")
    graph.initializer.append(numpy_helper.from_array(np.array([-1, 1], np.int64), "column_shape"))
    for c in columns:
        graph.node.append(helper.make_node("Reshape", [c.name, "column_shape"], [f"{c.name}_2d"]))
        graph.output.remove(c)
    graph.node.append(helper.make_node("Concat", [f"{c.name}_2d" for c in columns],
                                       ["probabilities"], axis=1))
    graph.output.append(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                                      [None, n]))


def _classes_of(node) -> list | None:
    """The class list an ``ai.onnx.ml`` classifier or ZipMap node carries."""
    from onnx import helper

    for a in node.attribute:
        if a.name in ("classlabels_strings", "classlabels_ints", "classlabels_int64s"):
            values = helper.get_attribute_value(a)
            return [v.decode() if isinstance(v, bytes) else int(v) for v in values]
    return None


@contextmanager
def _int_missing_flags():
    """Work around skl2onnx 1.20 with onnx >= 1.18 for HistGradientBoosting: its tree walker
    passes ``missing=False`` (a bool) for leaves into an INTS attribute, which onnx now
    refuses ("Expected an int, got a boolean"). The flag is cast to int on the way in."""
    from skl2onnx.common import tree_ensemble

    original = tree_ensemble.add_node

    def add_node(*args, nodes_missing_value_tracks_true=0, **kw):
        return original(*args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true),
                        **kw)

    tree_ensemble.add_node = add_node
    try:
        yield
    finally:
        tree_ensemble.add_node = original


@edge("saved_model", "onnx", requires=("tf2onnx", "tensorflow"))
def saved_model_to_onnx(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    """tf2onnx on the serving signature, frozen first.

    Calling the loaded signature inside a new tf.function would leak captured tensors as
    extra ONNX inputs; freezing variables and captures into constants avoids that.
    """
    tf = require("tensorflow")
    tf2onnx = require("tf2onnx", purpose="TensorFlow -> ONNX")
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from deploykit.formats.saved_model import serving_function

    sig, names = serving_function(src)
    kw = sig.structured_input_signature[1]
    specs = [tf.TensorSpec(kw[n].shape, kw[n].dtype, name=n) for n in names]
    frozen = convert_variables_to_constants_v2(sig)
    positional = [t.name.split(":")[0] for t in frozen.inputs]
    structure = sig.structured_outputs

    @tf.function(input_signature=specs)
    def fn(*args):
        by_name = dict(zip(names, args, strict=True))
        return tf.nest.pack_sequence_as(structure, frozen(*[by_name[p] for p in positional]))

    onx, _ = tf2onnx.convert.from_function(fn, input_signature=specs, opset=OPSET,
                                           output_path=str(out / "model.onnx"))
    onnx_names = [o.name for o in onx.graph.output]
    return {"file": "model.onnx", "outputs": _order(onnx_names, ctx.in_output_order(sorted(structure))),
            "versions": {"tf2onnx": tf2onnx.__version__}}


def _order(onnx_names: list[str], tf_names: list[str]) -> list[str]:
    """tf2onnx names outputs ``<key>`` or ``<key>:0``; put them in the signature's order."""
    by_key = {n.split(":")[0]: n for n in onnx_names}
    return [by_key.get(k, n) for k, n in zip(tf_names, onnx_names, strict=False)]


@edge("torch", "onnx", requires=("torch", "onnx", "onnxscript"))
def torch_to_onnx(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    """``torch.onnx.export`` (dynamo) of the exported program; the batch stays dynamic."""
    torch = require("torch")
    from deploykit.formats.torch_program import example_inputs, load_program

    program = load_program(src)
    names = [s["name"] for s in ctx.signature["outputs"]]
    torch.onnx.export(program, example_inputs(ctx.signature), str(out / "model.onnx"),
                      dynamo=True, input_names=[s["name"] for s in ctx.signature["inputs"]],
                      output_names=names, opset_version=max(OPSET, 18), external_data=False,
                      verbose=False)
    return {"file": "model.onnx", "outputs": names, "versions": {"torch": torch.__version__}}


@register_runner("onnx")
class OnnxRunner(Runner):
    thread_safe = True  # InferenceSession.run is safe to call concurrently

    def _load(self) -> None:
        ort = require("onnxruntime", purpose="to run ONNX")
        opts = ort.SessionOptions()
        opts.log_severity_level = 4  # its errors come back raised, not printed on stderr
        if self.threads:  # serving: a small pool that sleeps between calls, not spins
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.path), opts,
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.onnx_outputs = [o.name for o in self.session.get_outputs()]
        # the outputs in signature order, worked out once (not per call) when they map
        ordered = self._by_name(dict(zip(self.onnx_outputs, self.onnx_outputs, strict=True)),
                                [s.name for s in self.signature.outputs])
        self.ordered = ordered if len(ordered) == len(self.signature.outputs) else None

    def _predict(self, inputs):
        feed = self._feed(self.input_names, inputs)
        if self.ordered is not None:
            return self.session.run(self.ordered, feed)
        return dict(zip(self.onnx_outputs, self.session.run(None, feed), strict=True))
