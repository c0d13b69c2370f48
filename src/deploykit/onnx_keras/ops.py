"""The ONNX operators the translator covers, each written with ``keras.ops`` (and, where
the two backends' Keras ops differ from ONNX, the backend's own op).

An operator is ``fn(args, attrs) -> value | list of values``. ``args`` holds the node's
inputs in order (``None`` for an omitted optional input). ``attrs`` holds its attributes as
JSON. A value is one of three things:

- a numpy array (a folded constant);
- a backend tensor;
- a :class:`Dims`: a shape computed at run time, with Python ints where a size is static
  and backend scalars where it is not, so that a reshape stays a reshape for
  ``torch.export`` and for the TensorFlow converters.

Layouts follow ONNX: convolutions and pools take channels first, and transpose to channels
last around the Keras op, because TensorFlow's CPU kernels have only that layout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np

from deploykit.errors import ExportError

Op = Callable[[list[Any], dict[str, Any]], Any]
OPS: dict[str, Op] = {}


class UnsupportedOperator(ExportError):
    """An ONNX operator (or an attribute of one) that the translator does not cover."""


def unsupported(what: str) -> NoReturn:
    raise UnsupportedOperator(f"ONNX {what} is not covered by deploykit's ONNX → Keras "
                              f"translator")


def literal(c: dict[str, Any]) -> np.ndarray:
    """A constant kept as JSON (``{"dtype", "shape", "data"}``), as an array."""
    return np.asarray(c["data"], dtype=c["dtype"]).reshape(c["shape"])


def op(*names: str):
    def deco(fn: Op) -> Op:
        for name in names:
            OPS[name] = fn
        return fn
    return deco


class Dims(tuple):
    """A shape computed at run time, or (``scalar``) one size of it."""

    scalar = False

    @classmethod
    def of(cls, items, scalar: bool = False) -> Dims:
        d = cls(items)
        d.scalar = scalar
        return d


def _ops():
    import keras

    return keras.ops


def _backend() -> str:
    import keras

    return keras.backend.backend()


_TRACED: list[int] = []  # the batch of the call being traced by torch.jit.trace, if any


def run(nodes: list[dict[str, Any]], env: dict[str, Any], outputs: list[str],
        batch: Any = None) -> list[Any]:
    """Run ``nodes`` in order on ``env`` (name -> value); the ``outputs`` as tensors.
    ``batch``: the inputs' batch size (see :func:`shape_of`)."""
    import keras

    tracing = keras.backend.backend() == "torch" and batch is not None and _jit_tracing()
    if tracing:
        _TRACED.append(int(batch))
    try:
        return _run(nodes, env, outputs)
    finally:
        if tracing:
            _TRACED.pop()


def _jit_tracing() -> bool:
    import torch

    return torch.jit.is_tracing()


class _Missing:
    """An output a node names that its operator here does not compute (MaxPool's indices,
    LayerNormalization's mean): an error only if something reads it."""

    def __init__(self, op: str, name: str) -> None:
        self.what = f"{op}'s output {name!r} (the translator computes only the first ones)"


def _run(nodes: list[dict[str, Any]], env: dict[str, Any], outputs: list[str]) -> list[Any]:
    for node in nodes + [{"op": "graph", "in": outputs}]:
        args = [env[i] if i else None for i in node["in"]]
        for a in args:
            if isinstance(a, _Missing):
                unsupported(a.what)
        if node["op"] == "graph":
            return [tensor(a) for a in args]
        result = OPS[node["op"]](args, node["attrs"])
        results = result if isinstance(result, list) else [result]
        for i, name in enumerate(node["out"]):
            if name:
                env[name] = results[i] if i < len(results) else _Missing(node["op"], name)
    raise AssertionError("unreachable")


def tensor(v: Any, dtype: str | None = None):
    """``v`` as a backend tensor (a :class:`Dims` stacked)."""
    ops = _ops()
    if isinstance(v, Dims):
        if all(isinstance(e, (int, np.integer)) for e in v):
            v = np.asarray(list(v) if not v.scalar else v[0], dtype="int64")
        elif _backend() == "torch":
            import torch

            items = [torch.as_tensor(e, dtype=torch.int64) for e in v]
            v = items[0] if v.scalar else torch.stack(items)
        else:
            items = [ops.cast(e, "int64") for e in v]
            v = items[0] if v.scalar else ops.stack(items)
    t = ops.convert_to_tensor(v)
    return t if dtype is None else ops.cast(t, dtype)


def ints(v: Any) -> list[Any]:
    """A shape-like value (constant or :class:`Dims`) as a list of sizes."""
    if isinstance(v, Dims):
        return list(v)
    if not isinstance(v, (np.ndarray, np.generic, int, list, tuple)):
        unsupported("a shape computed from the values of a tensor")
    return [int(e) for e in np.asarray(v).ravel()]


def shape_of(x) -> list[Any]:
    """``x``'s shape: ints where static, backend scalars where not. Under ``torch.jit.trace``
    every size is a traced tensor: sizes equal to the traced batch stay traced (so the trace
    keeps the batch dynamic), the others become ints. A size that only happens to equal the
    batch makes a trace that fails on other batches, which the TorchScript edge checks and
    then traces at a fixed batch instead."""
    static = list(x.shape)
    if _backend() == "torch":
        import torch

        if torch.jit.is_tracing() and _TRACED:
            return [d if int(d) == _TRACED[-1] else int(d) for d in static]
        return static
    if all(isinstance(d, int) for d in static):
        return static
    import tensorflow as tf

    dynamic = tf.shape(x)
    return [d if isinstance(d, int) else dynamic[i] for i, d in enumerate(static)]


def _is_static(*vs) -> bool:
    return all(isinstance(v, (np.ndarray, np.generic)) for v in vs)


def _dims_like(*vs) -> bool:
    """Arithmetic on sizes: a :class:`Dims` with integer constants (float ones make it
    ordinary tensor arithmetic, as after a Cast to float)."""
    return any(isinstance(v, Dims) for v in vs) and all(
        isinstance(v, Dims) or isinstance(v, (np.ndarray, np.generic))
        and np.asarray(v).dtype.kind in "iu" for v in vs)


def _dtype(x) -> str:
    import keras

    return keras.backend.standardize_dtype(x.dtype)


def _rank(x) -> int:
    return len(x.shape)


def _axis(a: int, rank: int) -> int:
    return a + rank if a < 0 else a


# -- element-wise --------------------------------------------------------------------------------
_UNARY = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Exp": "exp", "Log": "log",
          "Sqrt": "sqrt", "Neg": "negative", "Abs": "abs", "Erf": "erf", "IsNaN": "isnan",
          "Not": "logical_not", "Floor": "floor", "Ceil": "ceil", "Sin": "sin", "Cos": "cos",
          "Reciprocal": "reciprocal", "Softplus": "softplus", "Sign": "sign"}


def _unary(name: str) -> Op:
    def fn(args, attrs):
        return getattr(_ops(), name)(tensor(args[0]))
    return fn


for _onnx, _keras in _UNARY.items():
    OPS[_onnx] = _unary(_keras)


_BINARY = {"Add": "add", "Sub": "subtract", "Mul": "multiply", "Pow": "power",
           "Equal": "equal", "Less": "less", "LessOrEqual": "less_equal",
           "Greater": "greater", "GreaterOrEqual": "greater_equal", "And": "logical_and",
           "Or": "logical_or", "Xor": "logical_xor", "Max": "maximum", "Min": "minimum"}
_PY = {"Add": lambda a, b: a + b, "Sub": lambda a, b: a - b, "Mul": lambda a, b: a * b,
       "Div": lambda a, b: a // b}


def _binary(onnx_name: str, name: str) -> Op:
    def fn(args, attrs):
        if onnx_name in _PY and _dims_like(*args):  # arithmetic on sizes stays on sizes
            return _on_dims(_PY[onnx_name], *args)
        if onnx_name in ("Max", "Min") and _dims_like(*args) and all(
                isinstance(e, (int, np.integer)) for a in args for e in ints(a)):
            pick = max if onnx_name == "Max" else min
            out = args[0]
            for b in args[1:]:
                out = _on_dims(pick, out, b)
            return out
        out = tensor(args[0])
        for b in args[1:]:  # Max and Min take any number of inputs
            out = getattr(_ops(), name)(out, tensor(b))
        return out
    return fn


for _onnx, _keras in _BINARY.items():
    OPS[_onnx] = _binary(_onnx, _keras)


def _on_dims(fn, a, b) -> Dims:
    xs, ys = ints(a), ints(b)
    n = max(len(xs), len(ys))
    xs, ys = (v * n if len(v) == 1 else v for v in (xs, ys))
    scalar = all(isinstance(v, Dims) and v.scalar or np.ndim(v) == 0 for v in (a, b))
    return Dims.of([fn(x, y) for x, y in zip(xs, ys, strict=True)], scalar)


@op("Div")
def _div(args, attrs):
    if _dims_like(*args):
        return _on_dims(_PY["Div"], *args)
    ops = _ops()
    a, b = tensor(args[0]), tensor(args[1])
    if "int" in _dtype(a):  # ONNX: integer division truncates toward zero
        q = ops.floor_divide(ops.abs(a), ops.abs(b))
        return ops.where(ops.equal(ops.less(a, 0), ops.less(b, 0)), q, ops.negative(q))
    return ops.divide(a, b)


@op("Where")
def _where(args, attrs):
    return _ops().where(tensor(args[0]), tensor(args[1]), tensor(args[2]))


@op("Clip")
def _clip(args, attrs):
    x = tensor(args[0])
    lo = args[1] if len(args) > 1 and args[1] is not None else attrs.get("min")
    hi = args[2] if len(args) > 2 and args[2] is not None else attrs.get("max")
    if lo is not None:
        x = _ops().maximum(x, tensor(np.asarray(lo, dtype=_dtype(x))))
    if hi is not None:
        x = _ops().minimum(x, tensor(np.asarray(hi, dtype=_dtype(x))))
    return x


@op("Identity", "Dropout")
def _identity(args, attrs):
    return args[0]


@op("LeakyRelu")
def _leaky(args, attrs):
    return _ops().leaky_relu(tensor(args[0]), attrs.get("alpha", 0.01))


@op("HardSigmoid")
def _hard_sigmoid(args, attrs):
    ops, x = _ops(), tensor(args[0])
    return ops.clip(ops.add(ops.multiply(x, attrs.get("alpha", 0.2)), attrs.get("beta", 0.5)),
                    0.0, 1.0)


@op("HardSwish")
def _hard_swish(args, attrs):
    x = tensor(args[0])
    return _ops().multiply(x, _hard_sigmoid([x], {"alpha": 1 / 6, "beta": 0.5}))


@op("Gelu")
def _gelu(args, attrs):
    return _ops().gelu(tensor(args[0]), approximate=attrs.get("approximate", "none") == "tanh")


@op("Cast")
def _cast(args, attrs):
    from onnx import helper

    dtype = str(np.dtype(helper.tensor_dtype_to_np_dtype(attrs["to"])))
    if isinstance(args[0], Dims):  # sizes stay sizes as integers; as floats they are values
        return args[0] if np.dtype(dtype).kind in "iu" else tensor(args[0], dtype)
    if _is_static(args[0]):
        return np.asarray(args[0]).astype(dtype)
    return _ops().cast(args[0], dtype)


# -- shapes ---------------------------------------------------------------------------------------
@op("Shape")
def _shape(args, attrs):
    dims = shape_of(args[0])
    return Dims.of(dims[attrs.get("start", 0):attrs.get("end", len(dims))])


@op("Reshape")
def _reshape(args, attrs):
    shape = ints(args[1])
    if isinstance(args[0], Dims):  # sizes stay sizes: a scalar, or a 1-D list of them
        return Dims.of(args[0], scalar=not shape)
    x = tensor(args[0])
    if not attrs.get("allowzero", 0):  # 0 copies the input's size there
        old = shape_of(x)
        shape = [old[i] if isinstance(s, (int, np.integer)) and s == 0 else s
                 for i, s in enumerate(shape)]
    return _reshape_to(x, shape)


def _reshape_to(x, shape: list[Any]):
    dynamic = [i for i, s in enumerate(shape) if not isinstance(s, (int, np.integer))]
    if len(dynamic) == 1 and not any(isinstance(s, (int, np.integer)) and s == -1
                                     for s in shape):
        shape = [-1 if i == dynamic[0] else s for i, s in enumerate(shape)]
        dynamic = []
    if not dynamic:
        return _ops().reshape(x, [int(s) for s in shape])
    if _backend() == "torch":
        return x.reshape(shape)
    import tensorflow as tf

    return tf.reshape(x, tf.stack([tf.cast(s, tf.int32) for s in shape]))


@op("Flatten")
def _flatten(args, attrs):
    x = tensor(args[0])
    axis = _axis(attrs.get("axis", 1), _rank(x))
    dims = shape_of(x)
    lead = int(np.prod(dims[:axis])) if all(isinstance(d, int) for d in dims[:axis]) else -1
    rest = int(np.prod(dims[axis:])) if all(isinstance(d, int) for d in dims[axis:]) else -1
    return _reshape_to(x, [lead, rest] if axis else [1, -1])


@op("Transpose")
def _transpose(args, attrs):
    x = tensor(args[0])
    perm = attrs.get("perm", list(range(_rank(x)))[::-1])
    return _ops().transpose(x, perm)


@op("Squeeze")
def _squeeze(args, attrs):
    axes = attrs.get("axes", ints(args[1]) if len(args) > 1 and args[1] is not None else None)
    if isinstance(args[0], Dims):
        return Dims.of(args[0], scalar=True) if len(args[0]) == 1 else args[0]
    x = tensor(args[0])
    if axes is None:
        axes = [i for i, d in enumerate(shape_of(x)) if isinstance(d, int) and d == 1]
    return _ops().squeeze(x, axis=tuple(_axis(a, _rank(x)) for a in axes))


@op("Unsqueeze")
def _unsqueeze(args, attrs):
    axes = attrs.get("axes", ints(args[1]) if len(args) > 1 else None)
    if isinstance(args[0], Dims) and args[0].scalar and axes in ([0], [-1]):
        return Dims.of(args[0])
    x = tensor(args[0])
    rank = _rank(x) + len(axes)
    for a in sorted(_axis(a, rank) for a in axes):
        x = _ops().expand_dims(x, a)
    return x


@op("Concat")
def _concat(args, attrs):
    if _dims_like(*args):
        return Dims.of([e for a in args for e in ints(a)])
    return _ops().concatenate([tensor(a) for a in args], axis=attrs["axis"])


@op("Slice")
def _slice(args, attrs):
    if len(args) == 1:  # Slice-1: starts, ends and axes are attributes
        args = [args[0], attrs["starts"], attrs["ends"], attrs.get("axes")]
    starts, ends = ints(args[1]), ints(args[2])
    x = args[0]
    rank = 1 if isinstance(x, Dims) else _rank(tensor(x))
    axes = ints(args[3]) if len(args) > 3 and args[3] is not None else list(range(len(starts)))
    steps = ints(args[4]) if len(args) > 4 and args[4] is not None else [1] * len(starts)
    index = [slice(None)] * rank
    big = 2**31 - 1  # ONNX clamps as Python does; the backends want int32 bounds
    for a, s, e, st in zip(axes, starts, ends, steps, strict=True):
        index[_axis(a, rank)] = slice(max(min(s, big), -big), max(min(e, big), -big), st)
    if isinstance(x, Dims):
        return Dims.of(list(x)[index[0]])
    x = tensor(x)
    for a, cut in enumerate(index):  # backwards steps (torch has none): the indices they pick
        if cut.step is not None and cut.step < 0:
            size = shape_of(x)[a]
            if not isinstance(size, int):
                unsupported("Slice backwards along an axis of open size")
            x = _gather([x, np.arange(*cut.indices(size))], {"axis": a})
            index[a] = slice(None)
    return x[tuple(index)]


@op("Gather")
def _gather(args, attrs):
    data, idx = args
    axis = attrs.get("axis", 0)
    if isinstance(data, Dims) and _is_static(idx):
        picked = [data[int(i)] for i in np.asarray(idx).ravel()]
        return Dims.of(picked, scalar=np.ndim(idx) == 0)
    data = tensor(data)
    axis = _axis(axis, _rank(data))
    size = shape_of(data)[axis]
    if _is_static(idx) and isinstance(size, int):  # negative indices count from the end
        idx = np.where(np.asarray(idx) < 0, np.asarray(idx) + size, idx)
    if _backend() == "torch":  # torch's indexing takes negative indices itself
        import torch

        i = torch.as_tensor(tensor(idx)).long()
        return data[(slice(None),) * axis + (i,)]
    import tensorflow as tf

    i = tensor(idx)
    if not _is_static(idx) or not isinstance(size, int):
        i = tf.where(i < 0, i + tf.cast(size, i.dtype), i)
    return tf.gather(data, i, axis=axis)


@op("GatherElements")
def _gather_elements(args, attrs):
    data = tensor(args[0])
    return _ops().take_along_axis(data, tensor(args[1], "int64"), axis=attrs.get("axis", 0))


@op("GatherND")
def _gather_nd(args, attrs):
    if attrs.get("batch_dims", 0):
        unsupported("GatherND with batch_dims")
    data, idx = tensor(args[0]), tensor(args[1], "int64")
    if _backend() == "torch":
        k = idx.shape[-1]
        return data[tuple(idx[..., i] for i in range(k))]
    import tensorflow as tf

    return tf.gather_nd(data, idx)


@op("Expand")
def _expand(args, attrs):
    x = tensor(args[0])
    shape = ints(args[1])
    if _dtype(x) == "bool":
        return _ops().logical_and(x, _ops().ones(shape, dtype="bool"))
    return _ops().multiply(x, _ops().ones(shape, dtype=_dtype(x)))


@op("Tile")
def _tile(args, attrs):
    return _ops().tile(tensor(args[0]), ints(args[1]))


@op("ConstantOfShape")
def _constant_of_shape(args, attrs):
    value = literal(attrs["value"]) if "value" in attrs else np.zeros(1, "float32")
    return _ops().full(ints(args[0]), value.ravel()[0], dtype=str(value.dtype))


@op("Range")
def _range(args, attrs):
    if _is_static(*args):  # (folded before the graph runs, unless the evaluator failed)
        return np.arange(*(np.asarray(a).item() for a in args)).astype(np.asarray(args[0]).dtype)
    start, limit, delta = (a[0] if isinstance(a, Dims) else np.asarray(a).item()
                           if _is_static(a) else a for a in args)
    dtype = str(np.asarray(args[2]).dtype) if _is_static(args[2]) else "int64"
    return _ops().arange(start, limit, delta, dtype=dtype)


@op("Split")
def _split(args, attrs):
    x = tensor(args[0])
    axis = _axis(attrs.get("axis", 0), _rank(x))
    sizes = ints(args[1]) if len(args) > 1 and args[1] is not None else attrs.get("split")
    if sizes is None:  # num_outputs (opset 18): parts of ceil(size / n), the last smaller
        n, size = attrs.get("num_outputs", attrs["_outputs"]), shape_of(x)[axis]
        if not isinstance(size, int):
            unsupported("Split without sizes along an axis of open size")
        step = -(-size // n) if "num_outputs" in attrs else size // n
        sizes = [step] * (n - 1) + [size - step * (n - 1)]
    points = list(np.cumsum(sizes)[:-1])
    return list(_ops().split(x, [int(p) for p in points], axis=axis))


# -- neural network -------------------------------------------------------------------------------
@op("MatMul")
def _matmul(args, attrs):
    return _ops().matmul(tensor(args[0]), tensor(args[1]))


@op("Gemm")
def _gemm(args, attrs):
    ops = _ops()
    a, b = tensor(args[0]), tensor(args[1])
    a = ops.transpose(a) if attrs.get("transA", 0) else a
    b = ops.transpose(b) if attrs.get("transB", 0) else b
    y = ops.matmul(a, b)
    if attrs.get("alpha", 1.0) != 1.0:
        y = ops.multiply(y, attrs["alpha"])
    if len(args) > 2 and args[2] is not None:
        c = tensor(args[2])
        y = ops.add(y, c if attrs.get("beta", 1.0) == 1.0 else ops.multiply(c, attrs["beta"]))
    return y


def _softmax_like(name: str) -> Op:
    """Softmax and LogSoftmax; before opset 13 they flatten the axes from ``axis`` on into
    one (default axis 1) and normalise over it."""
    def fn(args, attrs):
        x = tensor(args[0])
        norm = getattr(_ops(), name)
        if attrs.get("_opset", 13) >= 13:
            return norm(x, axis=attrs.get("axis", -1))
        flat = _flatten([x], {"axis": _axis(attrs.get("axis", 1), _rank(x))})
        return _reshape_to(norm(flat, axis=-1), shape_of(x))
    return fn


OPS["Softmax"], OPS["LogSoftmax"] = _softmax_like("softmax"), _softmax_like("log_softmax")


def _reduce(name: str) -> Op:
    def fn(args, attrs):
        x = tensor(args[0])
        axes = attrs.get("axes", ints(args[1]) if len(args) > 1 and args[1] is not None
                         else None)
        if not axes and attrs.get("noop_with_empty_axes", 0):
            return x
        axes = tuple(_axis(a, _rank(x)) for a in axes) if axes else None
        return getattr(_ops(), name)(x, axis=axes, keepdims=bool(attrs.get("keepdims", 1)))
    return fn


for _onnx, _keras in {"ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "max",
                      "ReduceMin": "min", "ReduceProd": "prod"}.items():
    OPS[_onnx] = _reduce(_keras)


@op("LayerNormalization")
def _layer_norm(args, attrs):
    ops = _ops()
    x = tensor(args[0])
    axes = tuple(range(_axis(attrs.get("axis", -1), _rank(x)), _rank(x)))
    mean = ops.mean(x, axis=axes, keepdims=True)
    var = ops.mean(ops.square(ops.subtract(x, mean)), axis=axes, keepdims=True)
    y = ops.divide(ops.subtract(x, mean), ops.sqrt(ops.add(var, attrs.get("epsilon", 1e-5))))
    y = ops.multiply(y, tensor(args[1]))
    return ops.add(y, tensor(args[2])) if len(args) > 2 and args[2] is not None else y


@op("BatchNormalization")
def _batch_norm(args, attrs):
    ops = _ops()
    if attrs.get("training_mode", 0):
        unsupported("BatchNormalization in training mode")
    x, scale, bias, mean, var = (tensor(a) for a in args[:5])
    shape = [1, -1] + [1] * (_rank(x) - 2)
    inv = ops.divide(scale, ops.sqrt(ops.add(var, attrs.get("epsilon", 1e-5))))
    shift = ops.subtract(bias, ops.multiply(mean, inv))
    return ops.add(ops.multiply(x, ops.reshape(inv, shape)), ops.reshape(shift, shape))


def _last(x):
    """Channels first to channels last."""
    r = _rank(x)
    return _ops().transpose(x, [0, *range(2, r), 1])


def _first(x):
    r = _rank(x)
    return _ops().transpose(x, [0, r - 1, *range(1, r - 1)])


def _pads(attrs, spatial: int, x=None, kernel=None) -> list[tuple[int, int]]:
    """ONNX ``pads`` (begins, then ends) as (begin, end) per spatial axis."""
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        strides = attrs.get("strides", [1] * spatial)
        dil = attrs.get("dilations", [1] * spatial)
        out = []
        for i in range(spatial):
            size = shape_of(x)[2 + i]
            eff = (kernel[i] - 1) * dil[i] + 1
            total = max((-(-size // strides[i]) - 1) * strides[i] + eff - size, 0)
            small, big = total // 2, total - total // 2
            out.append((small, big) if auto == "SAME_UPPER" else (big, small))
        return out
    pads = attrs.get("pads", [0] * 2 * spatial)
    return [(pads[i], pads[i + spatial]) for i in range(spatial)]


def _pad_last(x, pads, value=0.0):
    """Pad a channels-last tensor's spatial axes."""
    if not any(a or b for a, b in pads):
        return x
    return _ops().pad(x, [(0, 0), *pads, (0, 0)], constant_values=value)


@op("Conv")
def _conv(args, attrs):
    ops = _ops()
    x, w = tensor(args[0]), args[1]
    spatial = _rank(x) - 2
    kernel = list(w.shape[2:])
    group = attrs.get("group", 1)
    channels, out_ch = shape_of(x)[1], w.shape[0]
    pads = _pads(attrs, spatial, x, kernel)
    y = _pad_last(_last(x), pads)
    k = ops.transpose(tensor(w), [*range(2, 2 + spatial), 1, 0])  # (..., in/group, out)
    common = {"strides": attrs.get("strides", 1), "padding": "valid",
              "dilation_rate": attrs.get("dilations", 1), "data_format": "channels_last"}
    if group == 1:
        y = ops.conv(y, k, **common)
    elif group == channels and out_ch % channels == 0:  # depthwise: (..., channels, mult)
        k = ops.reshape(ops.transpose(tensor(w), [*range(2, 2 + spatial), 0, 1]),
                        [*kernel, channels, out_ch // channels])
        y = ops.depthwise_conv(y, k, **common)
    else:
        unsupported(f"Conv with group={group} (1 and depthwise are)")
    if len(args) > 2 and args[2] is not None:  # channels last: a plain BiasAdd for TF.js
        y = ops.add(y, tensor(args[2]))
    return _first(y)


def _pool(kind: str) -> Op:
    def fn(args, attrs):
        ops = _ops()
        x = tensor(args[0])
        kernel = attrs["kernel_shape"]
        if attrs.get("ceil_mode", 0) or any(d != 1 for d in attrs.get("dilations", [1])):
            unsupported(f"{kind} pooling with ceil_mode or dilations")
        pads = _pads(attrs, len(kernel), x, kernel)
        counted = attrs.get("count_include_pad", 0)
        if kind == "average" and any(a or b for a, b in pads) and not counted:
            unsupported("AveragePool excluding its padding")
        y = _pad_last(_last(x), pads, -np.inf if kind == "max" else 0.0)
        pool = ops.max_pool if kind == "max" else ops.average_pool
        y = pool(y, kernel, strides=attrs.get("strides", [1] * len(kernel)), padding="valid",
                 data_format="channels_last")
        return _first(y)
    return fn


OPS["MaxPool"] = _pool("max")
OPS["AveragePool"] = _pool("average")


def _global_pool(name: str) -> Op:
    def fn(args, attrs):
        x = tensor(args[0])
        return getattr(_ops(), name)(x, axis=tuple(range(2, _rank(x))), keepdims=True)
    return fn


OPS["GlobalAveragePool"], OPS["GlobalMaxPool"] = _global_pool("mean"), _global_pool("max")


@op("Pad")
def _pad(args, attrs):
    x = tensor(args[0])
    pads = ints(args[1]) if len(args) > 1 else attrs["pads"]
    if attrs.get("mode", "constant") != "constant" or (len(args) > 3 and args[3] is not None):
        unsupported("Pad other than constant on every axis")
    if any(p < 0 for p in pads):
        unsupported("Pad with negative pads (cropping)")
    value = (float(np.asarray(args[2]).ravel()[0]) if len(args) > 2 and args[2] is not None
             else attrs.get("value", 0.0))
    r = _rank(x)
    return _ops().pad(x, [(pads[i], pads[i + r]) for i in range(r)], constant_values=value)


# -- recurrent ------------------------------------------------------------------------------------
def _recurrent_inputs(args, attrs, kind: str):
    """``(x [seq, batch, input], directions, seq, hidden)``, after refusing what the
    unrolled cells do not cover: clipping, coupled input/forget gates, activations other
    than the defaults, per-row lengths, peepholes, an open sequence length."""
    if attrs.get("clip") is not None or attrs.get("input_forget", 0):
        unsupported(f"{kind} with clip or input_forget")
    default = ["sigmoid", "tanh"] + (["tanh"] if kind == "LSTM" else [])
    dirs = 2 if attrs.get("direction") == "bidirectional" else 1
    if [a.lower() for a in attrs.get("activations", default * dirs)] != default * dirs:
        unsupported(f"{kind} with activations {attrs['activations']}")
    if kind == "LSTM" and len(args) > 7 and args[7] is not None:
        unsupported("LSTM with peepholes")
    x = tensor(args[0])
    if attrs.get("layout", 0):
        x = _ops().transpose(x, [1, 0, 2])
    seq = shape_of(x)[0]
    if not isinstance(seq, int):
        unsupported(f"{kind} over a sequence length that is not fixed")
    lens = args[4] if len(args) > 4 else None
    if lens is not None and not (_is_static(lens) and np.all(np.asarray(lens) == seq)):
        unsupported(f"{kind} with per-row sequence lengths")
    direction = attrs.get("direction", "forward")
    dirs = ["forward", "reverse"] if direction == "bidirectional" else [direction]
    return x, dirs, seq, attrs["hidden_size"]


def _recurrent_outputs(ys, hs, cs, attrs):
    """Stack the directions' results in ONNX's output layout."""
    ops = _ops()
    y, h = ops.stack(ys, axis=1), ops.stack(hs)  # [seq, dirs, batch, H], [dirs, batch, H]
    c = ops.stack(cs) if cs else None
    if attrs.get("layout", 0):
        y, h = ops.transpose(y, [2, 0, 1, 3]), ops.transpose(h, [1, 0, 2])
        c = ops.transpose(c, [1, 0, 2]) if c is not None else None
    return [y, h] + ([c] if c is not None else [])


def _state(args, i: int, d: int, attrs):
    if len(args) <= i or args[i] is None:
        return None
    s = tensor(args[i])
    return s[:, d] if attrs.get("layout", 0) else s[d]


def _rnn(kind: str) -> Op:
    return lambda args, attrs: _recurrent(kind, args, attrs)


def _recurrent(kind: str, args, attrs):
    from deploykit.onnx_keras import recurrent

    ops = _ops()
    x, dirs, seq, hidden = _recurrent_inputs(args, attrs, kind)
    w, r = tensor(args[1]), tensor(args[2])
    b = tensor(args[3]) if len(args) > 3 and args[3] is not None else None
    ys, hs, cs = [], [], []
    for d, direction in enumerate(dirs):
        xd = ops.flip(x, axis=0) if direction == "reverse" else x
        bd = b[d] if b is not None else None
        if kind == "LSTM":
            y, h, c = recurrent.lstm(ops, xd, w[d], r[d], bd, _state(args, 5, d, attrs),
                                     _state(args, 6, d, attrs), seq, hidden)
            cs.append(c)
        else:
            y, h = recurrent.gru(ops, xd, w[d], r[d], bd, _state(args, 5, d, attrs), seq,
                                 hidden, bool(attrs.get("linear_before_reset", 0)))
        ys.append(ops.flip(y, axis=0) if direction == "reverse" else y)
        hs.append(h)
    return _recurrent_outputs(ys, hs, cs, attrs)


OPS["LSTM"], OPS["GRU"] = _rnn("LSTM"), _rnn("GRU")
