"""A tensor program: numbered registers, instructions on them, and named constant arrays.

The compiler (:mod:`.estimators`) writes a :class:`Program`; :class:`TensorProgram`, one Keras
layer, runs it with ``keras.ops`` only, so the compiled model runs under both Keras backends
and through every converter downstream. The layer's config is the instruction list (JSON) and
the arrays' shapes; ``.keras`` files keep the arrays with the other weights. The layer is
registered under the ``deploykit`` package, so ``keras.saving.load_model`` finds it once this
module is imported (:mod:`deploykit.formats.keras` does that).

    p = Program()
    h = p.add("affine", p.input, weight=p.const(w), bias=p.const(b))
    p.outputs = [p.add("activation", h, kind="softmax")]
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np


class Program:
    """Instructions ``(op, input registers, params)``; register 0 is the model's input."""

    input = 0

    def __init__(self, missing: bool = False) -> None:
        self.code: list[dict[str, Any]] = []
        self.arrays: dict[str, np.ndarray] = {}
        self.outputs: list[int] = []
        self.missing = missing  # inputs may hold NaN (missing values): trees route them

    def const(self, value: Any, dtype: str = "float32") -> str:
        """Register a constant array; returns its name (for an instruction's params)."""
        name = f"c{len(self.arrays)}"
        self.arrays[name] = np.ascontiguousarray(value, dtype=dtype)
        return name

    def add(self, op: str, *inputs: int, **params: Any) -> int:
        """Append ``op`` on ``inputs``; returns the register it writes."""
        if op not in OPS:
            raise ValueError(f"unknown tensor program op {op!r}")
        self.code.append({"op": op, "in": list(inputs), "params": params})
        return len(self.code)


Op = Callable[[Any, list[Any], dict[str, Any], dict[str, Any]], Any]  # (keras.ops, ...)
OPS: dict[str, Op] = {}


def op(name: str):
    def deco(fn: Op) -> Op:
        OPS[name] = fn
        return fn
    return deco


@functools.cache
def layer_class() -> type:
    """The Keras layer that runs a :class:`Program`, registered under ``deploykit`` (made on
    first use: importing this module imports no framework)."""
    import keras

    @keras.saving.register_keras_serializable(package="deploykit")
    class TensorProgram(keras.layers.Layer):
        """Runs a program's ``code`` and returns its ``outputs`` registers."""

        def __init__(self, code: list[dict[str, Any]], outputs: list[int],
                     specs: dict[str, tuple[list[int], str]],
                     arrays: dict[str, np.ndarray] | None = None, **kw: Any) -> None:
            super().__init__(**kw)
            self.code, self.outputs = code, list(outputs)
            self.specs = {k: (list(s), str(d)) for k, (s, d) in specs.items()}
            self.consts = {}
            for name, (shape, dtype) in self.specs.items():
                w = self.add_weight(name=name, shape=shape, dtype=dtype, initializer="zeros",
                                    trainable=False)
                if arrays is not None:
                    w.assign(arrays[name])
                self.consts[name] = w

        def call(self, x):
            regs = [x]
            for ins in self.code:
                params = {k: self.consts.get(v, v) if isinstance(v, str) else v
                          for k, v in ins["params"].items()}
                regs.append(OPS[ins["op"]](keras.ops, [regs[i] for i in ins["in"]], params,
                                           self.consts))
            outs = [regs[i] for i in self.outputs]
            return outs[0] if len(outs) == 1 else outs

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "code": self.code, "outputs": self.outputs,
                    "specs": self.specs}

    return TensorProgram


def as_layer(program: Program, **kw: Any):
    """``program`` as a Keras layer holding its arrays."""
    specs = {k: (list(v.shape), str(v.dtype)) for k, v in program.arrays.items()}
    return layer_class()(program.code, program.outputs, specs, program.arrays, **kw)


# -- ops ------------------------------------------------------------------------------------------
def _gather(ops, table, idx):
    """``table[idx]`` along the first axis, for (never negative) indices of any shape, with
    the backend's own gather: ``keras.ops.take`` squeezes a 1-D table's result under torch,
    which ExecuTorch cannot run when a batch of one makes it a single element, and wraps the
    indices in a negative-index ``where`` under TensorFlow, which TFLite cannot legalise for
    a 1-D condition. (``argmax``'s -0.0 handling, a bitcast, is why :func:`_first_max`
    exists.)"""
    import keras

    if keras.backend.backend() == "torch":
        idx = ops.convert_to_tensor(idx)
        return ops.convert_to_tensor(table)[idx if str(idx.dtype) == "torch.int64" else idx.long()]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.gather(table, idx)
    return ops.take(table, idx, axis=0)


def _indices(ops, x):
    """``x`` as indices in the type the backend indexes with: torch casts every int32 index
    to int64, one cast per gather (a fifth of a forest's program: 264 of 1,384 nodes in one
    of every estimator); under the others, as it is (TFLite gathers with int32)."""
    import keras

    return ops.cast(x, "int64") if keras.backend.backend() == "torch" else x


def _first_max(ops, x):
    """The index of each row's first largest value (int32), from comparisons only."""
    top = ops.max(x, axis=-1, keepdims=True)
    n = x.shape[-1]
    where = ops.where(ops.greater_equal(x, top), ops.arange(n, dtype="int32"),
                      ops.full_like(ops.cast(x, "int32"), n - 1))
    return ops.min(where, axis=-1)  # (a row of NaN, as in shape inference: the last index)


@op("affine")
def _affine(ops, xs, p, _):
    """``(x - center) @ weight + bias``; ``center`` optional."""
    x = xs[0] if p.get("center") is None else ops.subtract(xs[0], p["center"])
    return ops.add(ops.matmul(x, p["weight"]), p["bias"])


@op("elementwise")
def _elementwise(ops, xs, p, consts):
    """Per-feature steps in the order given: ``[["sub", array], ["div", array], ...]``."""
    fns = {"sub": ops.subtract, "div": ops.divide, "mul": ops.multiply, "add": ops.add}
    x = xs[0]
    for step, array in p["steps"]:
        x = fns[step](x, consts[array])
    return x


@op("activation")
def _activation(ops, xs, p, _):
    x, kind = xs[0], p["kind"]
    if kind == "binary":  # one logit -> the probabilities of two classes
        s = ops.sigmoid(x)
        return ops.concatenate([1.0 - s, s], axis=-1)
    if kind == "normalize":  # rows divided by their sum
        return ops.divide(x, ops.sum(x, axis=-1, keepdims=True))
    return {"relu": ops.relu, "tanh": ops.tanh, "logistic": ops.sigmoid,
            "softmax": lambda v: ops.softmax(v, axis=-1), "identity": lambda v: v,
            "exp": ops.exp}[kind](x)


def _is_missing(ops, x, p):
    """Where ``x`` holds a missing value: NaN, or the imputer's ``marker`` when it has one."""
    return ops.isnan(x) if p.get("marker") is None else ops.equal(x, p["marker"])


@op("fill_missing")
def _fill_missing(ops, xs, p, _):
    """Values marked missing replaced by the column's ``fill``."""
    x = xs[0]
    return ops.where(_is_missing(ops, x, p), ops.zeros_like(x) + p["fill"], x)


@op("missing_mask")
def _missing_mask(ops, xs, p, _):
    """1.0 where column ``index[k]`` holds a missing value, else 0.0."""
    return ops.cast(_is_missing(ops, ops.take(xs[0], p["index"], axis=1), p), "float32")


@op("columns")
def _columns(ops, xs, p, _):
    return ops.take(xs[0], p["index"], axis=1)


@op("concat")
def _concat(ops, xs, p, _):
    return ops.concatenate(xs, axis=1)


@op("one_hot")
def _one_hot(ops, xs, p, _):
    """1.0 where column ``column[k]`` equals ``value[k]``."""
    return ops.cast(ops.equal(ops.take(xs[0], p["column"], axis=1), p["value"]), "float32")


@op("normalize_rows")
def _normalize_rows(ops, xs, p, _):
    x = xs[0]
    norm = {"l2": lambda v: ops.sqrt(ops.sum(ops.square(v), axis=1, keepdims=True)),
            "l1": lambda v: ops.sum(ops.abs(v), axis=1, keepdims=True),
            "max": lambda v: ops.max(ops.abs(v), axis=1, keepdims=True)}[p["norm"]](x)
    return ops.divide(x, ops.where(ops.equal(norm, 0.0), ops.ones_like(norm), norm))


@op("argmax")
def _argmax(ops, xs, p, _):
    return ops.cast(_first_max(ops, xs[0]), "int64")


@op("decision_class")
def _decision_class(ops, xs, p, _):
    """The class a decision function picks (one column: positive is the second class), as
    ``[rows, 1]`` of ``classes`` values."""
    d = xs[0]
    if d.shape[-1] == 1:
        idx = ops.cast(ops.greater(d[:, 0], 0.0), "int32")
    else:
        idx = _first_max(ops, d)
    return ops.expand_dims(_gather(ops, p["classes"], idx), -1)


@op("mean")
def _mean(ops, xs, p, _):
    total = xs[0]
    for x in xs[1:]:
        total = ops.add(total, x)
    return ops.divide(total, float(len(xs)))


@op("trees")
def _trees(ops, xs, p, _):
    """Trees walked level by level with gathers, one step per level of the deepest tree.
    One row per node of every tree, trees one after another: ``feature``, ``threshold`` (go
    left when ``x[feature] <= threshold``), ``left``/``right`` (node numbers; a leaf points at
    itself), ``roots`` (each tree's first node), ``value`` (``[nodes, outputs]``). Gives the
    sum over trees of the leaves' values, times ``scale``, plus ``offset``."""
    x = xs[0]
    row = _indices(ops, ops.cumsum(ops.ones_like(x[:, :1], dtype="int32"), axis=0) - 1)  # [b, 1]
    flat = ops.reshape(x, (-1,))
    node = ops.add(ops.zeros_like(row), ops.expand_dims(_indices(ops, p["roots"]), 0))  # [b, T]
    feature, lefts, rights = (_indices(ops, p[k]) for k in ("feature", "left", "right"))
    for _step in range(p["depth"]):
        value = _gather(ops, flat, row * p["n_features"] + _gather(ops, feature, node))
        left = ops.less_equal(value, _gather(ops, p["threshold"], node))
        if p.get("missing_left") is not None:  # a NaN goes where the tree learned to send it
            left = ops.where(ops.isnan(value),
                             ops.greater(_gather(ops, p["missing_left"], node), 0.5), left)
        node = ops.where(left, _gather(ops, lefts, node), _gather(ops, rights, node))
    leaves = _gather(ops, p["value"], node)  # [b, trees, outputs]
    return ops.add(ops.multiply(ops.sum(leaves, axis=1), p["scale"]), p["offset"])


@op("trees_gemm")
def _trees_gemm(ops, xs, p, _):
    """Shallow trees as products (see :func:`deploykit.sklearn_compile.trees._gemm`); gives
    the sum over trees of the leaves' values, times ``scale``, plus ``offset``."""
    n_trees, n_in = p["paths"].shape[0], p["inner"]
    x = xs[0]
    if p.get("missing_left") is None:
        go_left = ops.less_equal(ops.matmul(x, p["pick"]), p["threshold"])
    else:  # NaN times 0 is NaN: pick the non-missing values and the missing marks apart
        nan = ops.isnan(x)
        picked = ops.matmul(ops.where(nan, ops.zeros_like(x), x), p["pick"])
        missing = ops.greater(ops.matmul(ops.cast(nan, "float32"), p["pick"]), 0.5)
        go_left = ops.where(missing, ops.greater(p["missing_left"], 0.5),
                            ops.less_equal(picked, p["threshold"]))
    go_left = ops.cast(go_left, "float32")
    go_left = ops.transpose(ops.reshape(go_left, (-1, n_trees, n_in)), (1, 0, 2))  # [T, b, I]
    reached = ops.cast(ops.equal(ops.matmul(go_left, p["paths"]), p["lefts"]), "float32")
    leaves = ops.sum(ops.matmul(reached, p["value"]), axis=0)  # [b, outputs]
    return ops.add(ops.multiply(leaves, p["scale"]), p["offset"])


@op("kernel")
def _kernel(ops, xs, p, _):
    """The kernel matrix against ``vectors``: rbf (squared distances summed from differences,
    which keeps precision), poly, sigmoid or linear."""
    x, v = xs[0], p["vectors"]
    if p["kind"] == "rbf":
        d = ops.subtract(ops.expand_dims(x, 1), ops.expand_dims(v, 0))
        return ops.exp(-p["gamma"] * ops.sum(ops.square(d), axis=-1))
    dot = ops.matmul(x, ops.transpose(v))
    if p["kind"] == "linear":
        return dot
    if p["kind"] == "poly":
        return ops.power(p["gamma"] * dot + p["coef0"], p["degree"])
    return ops.tanh(p["gamma"] * dot + p["coef0"])


@op("ovr_votes")
def _ovr_votes(ops, xs, p, _):
    """scikit-learn's one-vs-one decisions to one-vs-rest: votes plus confidences squashed
    below 1/3 (``to_i``/``to_j`` map each pair's column to its two classes)."""
    dec = xs[0]
    neg = ops.cast(ops.less(dec, 0.0), "float32")
    votes = ops.add(ops.matmul(neg, p["to_j"]), ops.matmul(1.0 - neg, p["to_i"]))
    conf = ops.matmul(-dec, ops.subtract(p["to_j"], p["to_i"]))
    return ops.add(votes, ops.divide(conf, 3.0 * (ops.abs(conf) + 1.0)))


@op("sigmoid_calibration")
def _sigmoid_calibration(ops, xs, p, _):
    """Platt scaling per class, then probabilities as calibration makes them."""
    s = ops.sigmoid(-(ops.multiply(xs[0], p["a"]) + p["b"]))
    if p["n_classes"] == 2:
        return ops.concatenate([1.0 - s, s], axis=-1)
    total = ops.sum(s, axis=1, keepdims=True)
    zero = ops.equal(total, 0.0)
    return ops.where(zero, ops.ones_like(s) / p["n_classes"],
                     ops.divide(s, ops.where(zero, ops.ones_like(total), total)))


@op("gaussian_nb")
def _gaussian_nb(ops, xs, p, _):
    d = ops.subtract(ops.expand_dims(xs[0], 1), ops.expand_dims(p["theta"], 0))
    jll = ops.sum(ops.divide(ops.square(d), ops.expand_dims(p["var"], 0)), axis=-1) * -0.5
    return ops.softmax(ops.add(jll, p["prior"]), axis=-1)


@op("neighbours")
def _neighbours(ops, xs, p, _):
    """The ``k`` nearest fitted rows' ``targets`` ([rows, outputs]) averaged with uniform or
    1/distance weights (Euclidean, ``p`` 2, or Manhattan, ``p`` 1)."""
    diff = ops.subtract(ops.expand_dims(xs[0], 1), ops.expand_dims(p["fit"], 0))
    dist = ops.sum(ops.square(diff) if p["p"] == 2 else ops.abs(diff), axis=-1)
    neg, idx = ops.top_k(-dist, p["k"])
    d = ops.sqrt(-neg) if p["p"] == 2 else -neg
    if p["weights"] == "uniform":
        w = ops.ones_like(d)
    else:  # 1/distance; a row with exact matches weighs only those, as scikit-learn does
        exact = ops.cast(ops.equal(d, 0.0), "float32")
        w = ops.where(ops.max(exact, axis=1, keepdims=True) > 0, exact,
                      ops.divide(1.0, ops.where(ops.equal(d, 0.0), ops.ones_like(d), d)))
    w = ops.expand_dims(w, -1)
    picked = _gather(ops, p["targets"], idx)  # [b, k, outputs]
    return ops.divide(ops.sum(ops.multiply(picked, w), axis=1), ops.sum(w, axis=1))
