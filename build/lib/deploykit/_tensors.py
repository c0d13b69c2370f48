"""Tensors as JSON, ``{"shape", "dtype", "data": base64 little-endian}``: how arrays cross
into JavaScript (the Node runner, the browser page) and back."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

_LITTLE_ENDIAN = {"float32": "<f4", "int64": "<i8", "int32": "<i4", "bool": "u1"}


def tensor_json(a: np.ndarray) -> dict[str, Any]:
    """An array as a JSON tensor (float -> float32, signed ints keep 32/64 bits)."""
    a = np.asarray(a)
    dtype = {"f": "float32", "i": "int64" if a.dtype.itemsize == 8 else "int32",
             "u": "int32", "b": "bool"}[a.dtype.kind]
    data = np.ascontiguousarray(a, dtype=_LITTLE_ENDIAN[dtype]).tobytes()
    return {"shape": list(a.shape), "dtype": dtype, "data": base64.b64encode(data).decode()}


def tensor_from_json(t: dict[str, Any]) -> np.ndarray:
    """The array a JSON tensor holds."""
    raw = base64.b64decode(t["data"])
    return np.frombuffer(raw, dtype=_LITTLE_ENDIAN[t["dtype"]]).reshape(t["shape"]).copy()
