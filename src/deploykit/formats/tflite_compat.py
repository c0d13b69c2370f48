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


@dataclass(frozen=True)
class OpCode:
    code: int
    version: int
    custom: str | None = None


def _u32(buf: bytes, at: int) -> int:
    return struct.unpack_from("<I", buf, at)[0]


def _field(buf: bytes, table: int, slot: int) -> int | None:
    """Absolute position of a table field, or None when the field is absent."""
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    vsize = struct.unpack_from("<H", buf, vtable)[0]
    if 4 + 2 * slot >= vsize:
        return None
    off = struct.unpack_from("<H", buf, vtable + 4 + 2 * slot)[0]
    return table + off if off else None


def _deref(buf: bytes, at: int) -> int:
    return at + _u32(buf, at)


def operator_codes(model: bytes | str | Path) -> list[OpCode]:
    """The operator codes of a TFLite flatbuffer (schema fields per tflite/schema.fbs)."""
    buf = model if isinstance(model, bytes) else Path(model).read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise BundleError("not a TFLite flatbuffer (no 'TFL3' identifier)")
    try:
        root = _u32(buf, 0)
        codes_at = _field(buf, root, 1)  # Model.operator_codes
        if codes_at is None:
            return []
        vec = _deref(buf, codes_at)
        out = []
        for i in range(_u32(buf, vec)):
            t = _deref(buf, vec + 4 + 4 * i)
            dep = _field(buf, t, 0)  # deprecated_builtin_code: byte
            ver = _field(buf, t, 2)  # version: int = 1
            new = _field(buf, t, 3)  # builtin_code: int = 0
            custom = _field(buf, t, 1)  # custom_code: string
            code = max(struct.unpack_from("<b", buf, dep)[0] if dep else 0,
                       struct.unpack_from("<i", buf, new)[0] if new else 0)
            name = None
            if custom is not None:
                s = _deref(buf, custom)
                name = buf[s + 4:s + 4 + _u32(buf, s)].decode()
            out.append(OpCode(code, struct.unpack_from("<i", buf, ver)[0] if ver else 1, name))
        return out
    except struct.error as e:
        raise BundleError(f"damaged TFLite flatbuffer: {e}") from None


@cache
def _table(runtime: str) -> dict:
    if runtime not in RUNTIMES:
        raise BundleError(f"no op table for '{runtime}': known are {', '.join(RUNTIMES)}")
    doc = json.loads((Path(__file__).with_name(RUNTIMES[runtime])).read_text())
    doc["by_code"] = {v["code"]: (k, v["max"]) for k, v in doc["ops"].items()}
    return doc


def missing_ops(model: bytes | str | Path, runtime: str = "tflite-runtime 2.14") -> list[str]:
    """What ``runtime`` lacks to load ``model``, one line per operator code; [] = it loads."""
    by_code = _table(runtime)["by_code"]
    problems = []
    for op in operator_codes(model):
        if op.code == CUSTOM:
            problems.append(f"custom op '{op.custom}' (not built into {runtime})")
            continue
        name, top = by_code.get(op.code, (f"builtin op code {op.code}", 0))
        if top == 0:
            problems.append(f"{name} version {op.version} ({runtime} does not have {name})")
        elif op.version > top:
            problems.append(f"{name} version {op.version} ({runtime} has up to version {top})")
    return problems
