"""The OpenAPI 3 document for the server's endpoints, with each served model's own request
schemas: the batch limit, every axis's size, the value range of each input's dtype, the
input names. A request the document calls valid is one the server accepts, and the other way
round, with two exceptions JSON Schema cannot state:

* an Open Inference Protocol tensor's ``data`` must fill its ``shape`` (the product of one
  field against the length of another);
* a column of words takes its codes too, which a v2 tensor's flat ``data`` cannot tell
  from the other columns' numbers (the server refuses a number that is no code);
* with several models, ``/predict?model=NAME`` takes NAME's inputs (a query parameter
  choosing the body's schema); the body is documented as any of the models' schemas
  (``anyOf``: two models of one signature have the same schema, which ``oneOf`` would refuse).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from deploykit import __version__

# the Open Inference Protocol datatypes a server input of each numpy kind accepts
V2_ACCEPTED = {"f": ["FP32", "FP64", "INT32", "INT64"], "i": ["INT32", "INT64"],
               "u": ["INT32", "INT64"], "b": ["BOOL"]}
# Open Inference Protocol datatype -> numpy
V2_TYPES = {"FP32": "float32", "FP64": "float64", "INT64": "int64", "INT32": "int32",
            "BOOL": "bool"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Error"}}}}


_ANSWERS = {"200": {"description": "ok"}, "400": _error("bad input, named in 'error'"),
            "404": _error("no such model or target")}
_RUNS = {"408": _error("the body stopped arriving before its end (the server's read timeout)"),
         "413": _error("the body or the batch is larger than the server's limit"),
         "422": _error("valid inputs for which the model gives NaN or Inf"),
         "500": _error("the model's runtime failed (the server's run log has the details)")}


def _op(summary: str, body: str | None = None, *, path: dict[str, list[str]] | None = None,
        query: dict[str, list[str]] | None = None, body_required: bool = True,
        runs: bool = False) -> dict[str, Any]:
    params = [{"name": k, "in": "path", "required": True,
               "schema": {"type": "string", "enum": v}} for k, v in (path or {}).items()]
    params += [{"name": k, "in": "query", "required": False,
                "schema": {"type": "string", "enum": v}} for k, v in (query or {}).items()]
    op: dict[str, Any] = {"summary": summary, "parameters": params,
                          "responses": {**_ANSWERS, **(_RUNS if runs else {})}}
    if body:
        op["requestBody"] = {"required": body_required, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{body}"}}}}
    return op


def _leaf(spec, sent: str | None = None) -> dict[str, Any]:
    """One value of an input: what its dtype holds and, for ids, the input's range. ``sent``:
    the dtype a v2 request sends it as (an INT32 value for a float input), which narrows it."""
    dtype = np.dtype(spec.dtype)
    via = np.dtype(sent) if sent else dtype
    if dtype.kind == "b":
        return {"type": "boolean"}
    if via.kind == "f":  # the server's input dtype bounds the value (float64 sent to float32)
        top = float(np.finfo(dtype).max)
        lo, hi = spec.range or (-top, top)  # float ids (Keras truncates them): the table's
        return {"type": ["number", "null"] if spec.missing else "number",  # null: missing
                "minimum": lo, "maximum": hi}
    infos = [np.iinfo(d) for d in (via, dtype) if d.kind in "iu"]
    lo, hi = max(int(i.min) for i in infos), min(int(i.max) for i in infos)
    if spec.range:
        lo, hi = max(lo, spec.range[0]), min(hi, spec.range[1])
    return {"type": "integer", "minimum": lo, "maximum": hi}


def _cells(spec) -> list[dict[str, Any]]:
    """Each column of a table with columns of words or gaps: a word (any, when the model
    takes unknown ones), its code, null where a missing value is taken; the other columns'
    values (null too where a gap is filled)."""
    number = _leaf(spec)  # true and false are 1 and 0 there, as a DataFrame's booleans
    out = [{**number, "type": [*np.atleast_1d(number["type"]).tolist(), "boolean"]}
           for _ in range(spec.shape[1])]
    for f in spec.filled:  # null: a gap, which takes the training data's median
        types = out[f.column]["type"]
        out[f.column] = {**out[f.column], "type": types + ["null"] * ("null" not in types)}
    for w in spec.words:
        if not w.words:  # a column the model does not read: anything
            out[w.column] = {}
            continue
        known = [x for x in w.words if x is not None]
        codes = [*range(len(w.words)), *(c for c in (w.unknown, w.missing)
                                          if c is not None and not np.isnan(c))]
        out[w.column] = {"anyOf": [
            {"type": "string"} if w.unknown is not None else {"type": "string", "enum": known},
            {"type": "number", "enum": sorted(set(codes))},
            *([{"type": "null"}] if w.missing is not None else [])]}
    return out


def _row(spec) -> dict[str, Any]:
    """One row of an input (its shape after the batch axis) as nested arrays."""
    if spec.words or spec.filled:
        n = spec.shape[1]
        return {"type": "array", "prefixItems": _cells(spec), "items": False,
                "minItems": n, "maxItems": n}
    schema = _leaf(spec)
    for axis in range(len(spec.shape) - 1, 0, -1):
        d = spec.shape[axis]
        if d is None:
            top = spec.opened_from[axis] if spec.opened_from and axis in spec.open_axes else None
            schema = {"type": "array", "items": schema, "minItems": 1,
                      **({"maxItems": top} if top else {})}
        else:
            schema = {"type": "array", "items": schema, "minItems": d, "maxItems": d}
    return schema


def _rows(spec, max_batch: int) -> dict[str, Any]:
    return {"type": "array", "items": _row(spec), "minItems": 1, "maxItems": max_batch}


def _instances(sig, max_batch: int) -> dict[str, Any]:
    """/predict: ``instances`` (rows; rows of {name: row} for several inputs, or of
    {feature: value} for a model fitted on a DataFrame) or ``inputs``
    (columns by name), exactly one of the two."""
    specs = sig.inputs
    objects = {"type": "object", "required": [s.name for s in specs],
               "additionalProperties": False, "properties": {s.name: _row(s) for s in specs}}
    if len(specs) == 1:  # rows, or rows of {name: row} (all one or all the other)
        instances = {"anyOf": [_rows(specs[0], max_batch), {
            "type": "array", "minItems": 1, "maxItems": max_batch, "items": objects}]}
        if specs[0].columns:  # or rows of {feature: value}, for a model fitted on a DataFrame
            features = {"type": "object", "required": list(specs[0].columns),
                        "additionalProperties": False,
                        "properties": dict(zip(specs[0].columns, _cells(specs[0]) if
                                               specs[0].words or specs[0].filled else [_leaf(specs[0])] *
                                               len(specs[0].columns), strict=True))}
            instances["anyOf"].append({"type": "array", "minItems": 1, "maxItems": max_batch,
                                       "items": features})
    else:
        instances = {"type": "array", "minItems": 1, "maxItems": max_batch, "items": objects}
    columns = {"type": "object", "required": [s.name for s in specs],
               "additionalProperties": False,
               "properties": {s.name: _rows(s, max_batch) for s in specs}}
    return {"type": "object", "properties": {"instances": instances, "inputs": columns}}


def _tensor(spec, max_batch: int) -> dict[str, Any]:
    """An Open Inference Protocol input tensor; ``data`` flat, row-major, of its datatype."""
    common = {"name": {"type": "string", "enum": [spec.name]},
              "shape": {"type": "array", "prefixItems": _dims(spec, max_batch),
                        "minItems": len(spec.shape), "maxItems": len(spec.shape)},
              # binary_data_size belongs to the binary tensor extension (raw bytes after the
              # JSON, Inference-Header-Content-Length header), which this JSON body is not
              "parameters": {"type": "object", "not": {"required": ["binary_data_size"]}}}
    return {"oneOf": [
        {"type": "object", "required": ["name", "shape", "datatype", "data"], "properties": {
            **common, "datatype": {"type": "string", "enum": [v2]},
            "data": {"type": "array", "minItems": 1, "items": _leaf(spec, V2_TYPES[v2])}}}
        for v2 in V2_ACCEPTED[np.dtype(spec.dtype).kind]]}


def _dims(spec, max_batch: int) -> list[dict[str, Any]]:
    """Each axis of an input's shape: the batch up to the limit, the fixed sizes, the open
    axes up to the longest length checked."""
    dims: list[dict[str, Any]] = [{"type": "integer", "minimum": 1, "maximum": max_batch}]
    for axis, d in enumerate(spec.shape[1:], start=1):
        if d is not None:
            dims.append({"type": "integer", "enum": [d]})
            continue
        top = spec.opened_from[axis] if spec.opened_from and axis in spec.open_axes else None
        dims.append({"type": "integer", "minimum": 1, **({"maximum": top} if top else {})})
    return dims


def _infer(sig, max_batch: int) -> dict[str, Any]:
    tensors = [_tensor(s, max_batch) for s in sig.inputs]
    n = len(tensors)
    return {"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {"type": "array", "minItems": n, "maxItems": n,
                   "items": tensors[0] if n == 1 else {"oneOf": tensors}},
        "outputs": {"type": "array", "items": {
            "type": "object", "required": ["name"], "properties": {
                "name": {"type": "string", "enum": [s.name for s in sig.outputs]},
                "parameters": {"type": "object"}}}}}}


def _keys(names) -> dict[str, str]:
    """Each model's component key: its name with what a key cannot hold made ``_``, and a
    ``-2``, ``-3``... where that makes two names one key ("c c" and "c_c")."""
    keys: dict[str, str] = {}
    for name in names:
        key = base = re.sub(r"[^A-Za-z0-9._-]", "_", name)
        n = 2
        while key in keys.values():
            key, n = f"{base}-{n}", n + 1
        keys[name] = key
    return keys


def _schemas(models: dict[str, Any], max_batch: int) -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Error": {"type": "object", "required": ["error"],
                  "properties": {"error": {"type": "string"}}}}
    keys = _keys(models)
    for name, m in models.items():
        sig = m.get(None).artifact.signature(m.signature, with_batch=False)
        predict = _instances(sig, max_batch)
        schemas[f"Instances.{keys[name]}"] = {**predict, "oneOf": [
            {"required": ["instances"]}, {"required": ["inputs"]}]}
        schemas[f"Validate.{keys[name]}"] = {  # nothing (the probe set), or one of the two
            **predict, "not": {"required": ["instances", "inputs"]},
            "anyOf": [{"maxProperties": 0}, {"required": ["instances"]}, {"required": ["inputs"]}]}
        schemas[f"InferRequest.{keys[name]}"] = _infer(sig, max_batch)
    for kind in ("Instances", "Validate", "InferRequest") if len(models) > 1 else ():
        schemas[kind] = {"anyOf": [{"$ref": f"#/components/schemas/{kind}.{keys[n]}"}
                                   for n in models]}
    return schemas


def document(models: dict[str, Any], max_batch: int) -> dict[str, Any]:
    """The document for a server of ``models`` (name -> ServedModel)."""
    one = next(iter(models)) if len(models) == 1 else None
    kind = (lambda k: f"{k}.{_keys([one])[one]}") if one else (lambda k: k)
    names = {"model": list(models)}
    targets = {"target": sorted({t for m in models.values() for t in m.served})}
    return {
        "openapi": "3.1.0",  # 3.1: JSON Schema 2020-12, for prefixItems
        "info": {"title": "deploykit serve", "version": __version__,
                 "description": f"Serving: {', '.join(models)}. Open Inference Protocol v2 "
                                "plus /predict and /validate; request schemas are each "
                                "model's own (batch limit, shapes, value ranges)."},
        "paths": {
            "/v2": {"get": _op("server metadata")},
            "/v2/health/live": {"get": _op("liveness")},
            "/v2/health/ready": {"get": _op("readiness")},
            "/v2/models/{model}": {"get": _op("model metadata", path=names)},
            "/v2/models/{model}/ready": {"get": _op("model readiness", path=names)},
            "/v2/models/{model}/versions/{target}": {"get": _op(
                "model metadata of one artifact", path={**names, **targets})},
            "/v2/models/{model}/versions/{target}/ready": {"get": _op(
                "readiness of one artifact", path={**names, **targets})},
            "/v2/models/{model}/infer": {"post": _op(
                "infer (default target)", kind("InferRequest"), path=names, runs=True)},
            "/v2/models/{model}/versions/{target}/infer": {"post": _op(
                "infer on one artifact", kind("InferRequest"), path={**names, **targets},
                runs=True)},
            "/predict": {"post": _op("predict a batch of instances", kind("Instances"),
                                     query={**names, **targets}, runs=True)},
            "/validate": {"post": _op("re-check parity of every loaded artifact (on the probe "
                                      "set, or on the posted inputs)", kind("Validate"),
                                      query=names, body_required=False, runs=True)},
            "/metadata": {"get": _op("bundle manifests with parity")},
            "/openapi.json": {"get": _op("this document")},
            "/": {"get": _op("a page of every served artifact's parity (HTML)")},
            "/report/{model}": {"get": _op("the bundle's report page (HTML)", path=names)},
        },
        "components": {"schemas": _schemas(models, max_batch)},
    }
