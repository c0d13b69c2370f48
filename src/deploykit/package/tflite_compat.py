"""Will an older TFLite runtime load this model? Answered before the device finds out.

A ``.tflite`` file lists every operator it uses as an operator code: a builtin op and the
op *version* the converter chose (newer kernels features bump it). A runtime loads the model
only if its op resolver has every (op, version). This module reads the operator codes straight
from the flatbuffer (no TensorFlow needed) and compares them with tables of what older runtimes
have. The tables are measured on the real runtime by ``tools/measure_tflite_ops.py``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from deploykit.errors import BundleError

CUSTOM = 32  # BuiltinOperator.CUSTOM: resolved by name, not by version
# runtime label -> measured table next to this module
RUNTIMES = {"tflite-runtime 2.14": "tflite_runtime_2_14.json"}
# Custom ops the stock op resolver registers by name (tflite/core/kernels/register.cc,
# AddCustom). They cannot be measured like builtins: a custom op is looked up only when a
# node uses it, so the table holds builtins only.
BUILT_IN_CUSTOM = {"Mfcc", "AudioSpectrogram", "TFLite_Detection_PostProcess"}
# Kernels a runtime has at the operator's version but not for an input type, which a version
# table cannot show: the model loads, then fails at its first invoke. Each was seen on the
# real runtime by a package's `run.py --verify` (TensorType 9 is int8).
KERNEL_GAPS = {"tflite-runtime 2.14": {
    ("DIV", 9): "int8 DIV (its kernel takes float32, int32 and uint8 only)",
}}


@dataclass(frozen=True)
class OpCode:
    code: int
    version: int
    custom: str | None = None


class _Reader:
    """Bounds-checked little-endian reads from a flatbuffer; any bad offset is a BundleError."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf

    def read(self, fmt: str, at: int) -> int:
        if at < 0 or at + struct.calcsize(fmt) > len(self.buf):
            raise BundleError(f"damaged TFLite flatbuffer: offset {at} is outside the "
                              f"{len(self.buf)}-byte file")
        return struct.unpack_from("<" + fmt, self.buf, at)[0]

    def field(self, table: int, slot: int) -> int | None:
        """Absolute position of a table field, or None when the field is absent."""
        vtable = table - self.read("i", table)
        if 4 + 2 * slot >= self.read("H", vtable):
            return None
        off = self.read("H", vtable + 4 + 2 * slot)
        return table + off if off else None

    def deref(self, at: int) -> int:
        return at + self.read("I", at)

    def string(self, at: int) -> str:
        start = self.deref(at)
        n = self.read("I", start)
        if start + 4 + n > len(self.buf):
            raise BundleError("damaged TFLite flatbuffer: a string runs past the end")
        try:
            return self.buf[start + 4:start + 4 + n].decode()
        except UnicodeDecodeError:
            raise BundleError("damaged TFLite flatbuffer: a name is not UTF-8") from None


def _flatbuffer(model: bytes | str | Path) -> _Reader:
    try:
        buf = model if isinstance(model, bytes) else Path(model).read_bytes()
    except OSError as e:
        raise BundleError(f"cannot read {model}: {e.strerror}") from None
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise BundleError("not a TFLite flatbuffer (no 'TFL3' identifier)")
    return _Reader(buf)


def _vector(r: _Reader, at: int | None, what: str) -> list[int]:
    """Positions of a vector's 4-byte elements (none when the field is absent)."""
    if at is None:
        return []
    vec = r.deref(at)
    n = r.read("I", vec)
    if vec + 4 + 4 * n > len(r.buf):
        raise BundleError(f"damaged TFLite flatbuffer: the {what} list runs past the end")
    return [vec + 4 + 4 * i for i in range(n)]


def operator_codes(model: bytes | str | Path) -> list[OpCode]:
    """The operator codes of a TFLite flatbuffer (schema fields per tflite/schema.fbs)."""
    r = _flatbuffer(model)
    codes = _vector(r, r.field(r.read("I", 0), 1), "operator code")  # Model.operator_codes
    return [_opcode(r, r.deref(at)) for at in codes]


def first_input_types(model: bytes | str | Path) -> list[tuple[int, int | None]]:
    """``(operator code index, TensorType of its first input)`` for every operator of every
    subgraph (Model.subgraphs; SubGraph.tensors, .operators; Tensor.type; Operator.inputs)."""
    r = _flatbuffer(model)
    out = []
    for sg in _vector(r, r.field(r.read("I", 0), 2), "subgraph"):
        sg = r.deref(sg)
        types = []
        for t in _vector(r, r.field(sg, 0), "tensor"):
            at = r.field(r.deref(t), 1)
            types.append(r.read("b", at) if at is not None else 0)  # default FLOAT32
        for op in _vector(r, r.field(sg, 3), "operator"):
            op = r.deref(op)
            index_at = r.field(op, 0)
            inputs = [r.read("i", i) for i in _vector(r, r.field(op, 1), "input")]
            first = inputs[0] if inputs and 0 <= inputs[0] < len(types) else None
            out.append((r.read("I", index_at) if index_at is not None else 0,
                        None if first is None else types[first]))
    return out


def _opcode(r: _Reader, t: int) -> OpCode:
    dep = r.field(t, 0)  # deprecated_builtin_code: byte (int8), default 0
    custom = r.field(t, 1)  # custom_code: string
    ver = r.field(t, 2)  # version: int = 1
    new = r.field(t, 3)  # builtin_code: int = 0
    code = max(r.read("b", dep) if dep is not None else 0,
               r.read("i", new) if new is not None else 0)
    return OpCode(code, r.read("i", ver) if ver is not None else 1,
                  r.string(custom) if custom is not None else None)


@cache
def _table(runtime: str) -> dict:
    if runtime not in RUNTIMES:
        raise BundleError(f"no op table for '{runtime}': known are {', '.join(RUNTIMES)}")
    doc = json.loads((Path(__file__).with_name(RUNTIMES[runtime])).read_text())
    doc["by_code"] = {v["code"]: (k, v["versions"]) for k, v in doc["ops"].items()}
    return doc


def missing_ops(model: bytes | str | Path, runtime: str = "tflite-runtime 2.14") -> list[str]:
    """What ``runtime`` lacks to load and run ``model``, one line per operator code or
    kernel; [] = it runs."""
    model = _flatbuffer(model).buf  # read once, parsed twice below
    by_code, codes = _table(runtime)["by_code"], operator_codes(model)
    problems = []
    for op in codes:
        if op.code == CUSTOM:
            if op.custom not in BUILT_IN_CUSTOM:
                problems.append(f"custom op '{op.custom or '(unnamed)'}' ({runtime} does not "
                                f"build it in; the app would have to register it)")
            continue
        name, versions = by_code.get(op.code, (f"builtin op code {op.code}", []))
        if not versions:
            problems.append(f"{name} version {op.version} ({runtime} does not have {name})")
        elif op.version not in versions:
            problems.append(f"{name} version {op.version} ({runtime} has version "
                            f"{_ranges(versions)})")
    return problems + _kernel_gaps(model, codes, runtime)


def _kernel_gaps(model: bytes, codes: list[OpCode], runtime: str) -> list[str]:
    gaps, by_code = KERNEL_GAPS.get(runtime, {}), _table(runtime)["by_code"]
    if not gaps:
        return []
    found = {gaps[key] for index, dtype in first_input_types(model) if index < len(codes)
             and (key := (by_code.get(codes[index].code, ("",))[0], dtype)) in gaps}
    return [f"{why} ({runtime} lacks that kernel)" for why in sorted(found)]


def _ranges(versions: list[int]) -> str:
    lo, hi = versions[0], versions[-1]
    return f"{lo}" if lo == hi else f"{lo} to {hi}" if versions == list(range(lo, hi + 1)) \
        else ", ".join(map(str, versions))
