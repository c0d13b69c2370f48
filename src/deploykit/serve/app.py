"""Flask app factory: Open Inference Protocol v2, ``/predict``, ``/validate``, a page.

Every error is a JSON ``{"error": "..."}`` with a 4xx status naming the problem; model and
target names are looked up in the loaded bundles only and never touch the file system.
"""

from __future__ import annotations

import math
import re
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from deploykit import __version__
from deploykit.errors import InputError, RunnerError
from deploykit.graph import BROWSER
from deploykit.serve.models import ServedModel, add_unique
from deploykit.serve.openapi import V2_ACCEPTED, V2_TYPES
from deploykit.signature import fits

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_BATCH = 1024
NP_TO_V2 = {np_name: v2 for v2, np_name in V2_TYPES.items()}  # numpy -> Open Inference Protocol


BODY_STALLED = "the request body stopped arriving before its end"  # a 408


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def create_app(bundles: list[str | Path], *, targets: list[str] | None = None,
               max_batch: int = MAX_BATCH, max_body_bytes: int = MAX_BODY_BYTES,
               runtime_threads: int | None = 1, batch_window_ms: float = 0.0):
    """Build the Flask app that serves ``bundles``.

    Args:
        bundles: bundle folders, or ``NAME=FOLDER`` to serve one under NAME (two versions
            of one model); each is refused at start if its hashes do not match.
        targets: the artifacts to serve (default: every passing server-side one).
        max_batch: rows a request may carry.
        max_body_bytes: the request body limit.
        runtime_threads: math threads of each runtime (onnxruntime, LiteRT, torch,
            ExecuTorch); 1 suits a server with a worker process per core; None keeps each
            runtime's own default.
        batch_window_ms: dynamic batching: concurrent requests to one artifact that arrive
            within this window run as one batch (0: off; needs a threaded server).

    Returns:
        The Flask app (run it under waitress or gunicorn).

    Raises:
        BundleError: a bundle is damaged or has nothing to serve.
        DeploykitError: two bundles have the same name.
    """
    from flask import Flask

    models: dict[str, ServedModel] = {}
    for b in bundles:
        m = ServedModel(b, targets, threads=runtime_threads, batch_window_ms=batch_window_ms,
                        max_batch=max_batch)
        add_unique(models, m.name, m, b)
    app = Flask("deploykit")
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    _json_provider(app)
    app.extensions["deploykit"] = {"models": models, "max_batch": max_batch}
    _errors(app)
    _v2(app, models, max_batch)
    _simple(app, models, max_batch)
    app.wsgi_app = _fast_path(app, models, max_batch, max_body_bytes)
    return app


def _fast_path(app, models: dict[str, ServedModel], max_batch: int, max_body: int):
    """The inference routes on WSGI before Flask, with the Flask views' own functions."""
    from deploykit.serve.fast import FastPath

    return FastPath(
        app.wsgi_app, models, max_body,
        predict=lambda raw: predict_answer(models, None, None, _parse_json(raw), max_batch),
        infer=lambda m, target, raw, header: infer_answer(m, m.get(target),
                                                          *split_binary(raw, header), max_batch),
        error=lambda e: error_answer(e, app.logger), dumps=dumps)


def _codec():
    """``(loads, dumps)``: orjson when installed (the serve extra brings it: parsing and
    writing JSON was a fifth of a batch-1 request with the standard library), else the
    standard library's. dumps gives bytes and writes numpy arrays as they are."""
    try:
        import orjson
    except ImportError:
        import json

        def dumps(obj: Any) -> bytes:
            return json.dumps(obj, default=lambda a: a.tolist()).encode()
        return json.loads, dumps

    def fast_dumps(obj: Any) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    return orjson.loads, fast_dumps


loads, dumps = _codec()


def _json_provider(app) -> None:
    """Flask's jsonify and get_json through :func:`loads` and :func:`dumps`."""
    from flask.json.provider import JSONProvider

    class Provider(JSONProvider):
        def dumps(self, obj: Any, **kwargs: Any) -> str:
            return dumps(obj).decode()

        def loads(self, s: str | bytes, **kwargs: Any) -> Any:
            return loads(s)

        def response(self, *args: Any, **kwargs: Any):
            body = dumps(self._prepare_response_obj(args, kwargs))
            return self._app.response_class(body, mimetype="application/json")

    app.json = Provider(app)


# -- errors ---------------------------------------------------------------------------------------
def _errors(app) -> None:
    from flask import jsonify
    from werkzeug.exceptions import HTTPException

    @app.errorhandler(ApiError)
    @app.errorhandler(InputError)
    @app.errorhandler(RunnerError)
    @app.errorhandler(TimeoutError)  # reading the body: the server's read timeout
    def known_error(e: Exception):
        status, message = error_answer(e, app.logger)
        return jsonify(error=message), status

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        msg = {413: f"request body is larger than the limit of "
                    f"{app.config['MAX_CONTENT_LENGTH']} bytes",
               # a bug in deploykit: Flask has logged its traceback (the server's run log)
               500: INTERNAL}.get(e.code, e.description)
        headers = {k: v for k, v in e.get_headers() if k == "Allow"}  # 405 names the methods
        return jsonify(error=msg), e.code, headers


INTERNAL = "internal error in deploykit; the server's run log has the details, please report it"


def error_answer(e: Exception, logger) -> tuple[int, str]:
    """``(status, message)`` for an error a request met: the request's fault (4xx, named)
    or the runtime's (500; its traceback goes to ``logger``, the server's run log)."""
    if isinstance(e, ApiError):
        return e.status, str(e)
    if isinstance(e, TimeoutError):  # reading the body: the server's read timeout
        return 408, BODY_STALLED
    if isinstance(e, InputError):
        return 400, str(e)
    logger.error("runtime failed" if isinstance(e, RunnerError) else "internal error",
                 exc_info=e)
    if isinstance(e, RunnerError):
        return 500, f"the model's runtime failed: {e} (the server's run log has the details)"
    return 500, INTERNAL


def _body() -> dict[str, Any]:
    """The JSON object of the request (whatever its Content-Type says)."""
    return _parse_json(request_bytes())


def request_bytes() -> bytes:
    """The request's body, read once. A chunked body (no Content-Length) past the size limit
    is a 413: Werkzeug stops reading it at the limit without a word, and the truncated JSON
    was a 400, or a 200 for a body padded with spaces. A body the WSGI server cannot read (a
    malformed chunk) is the client's fault: a 400 naming it, not a 500."""
    from flask import current_app, request
    from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

    try:
        data = request.get_data(cache=True)
        if request.content_length is None and \
                len(data) >= current_app.config["MAX_CONTENT_LENGTH"] and \
                request.environ["wsgi.input"].read(1):  # past the limit Werkzeug kept to
            raise RequestEntityTooLarge
    except TimeoutError:  # the server's read timeout: a 408 (error_answer)
        raise
    except HTTPException as e:
        stalled = e.__cause__ or e.__context__  # Werkzeug makes the read timeout a bare 400
        if isinstance(stalled, TimeoutError):
            raise stalled from None
        raise
    except Exception as e:  # noqa: BLE001  (each WSGI server raises its own kinds)
        raise ApiError(400, f"the request body could not be read: {type(e).__name__}: "
                            f"{e}") from None
    return data


def _raw_body() -> tuple[bytes, bytes]:
    """``(json part, binary part)``: the Open Inference Protocol's binary tensor extension
    puts raw tensor bytes after a JSON header of ``Inference-Header-Content-Length`` bytes."""
    from flask import request

    return split_binary(request_bytes(),
                        request.headers.get("Inference-Header-Content-Length"))


def split_binary(data: bytes, header: str | None) -> tuple[bytes, bytes]:
    """``data`` cut at the ``Inference-Header-Content-Length`` header's value (None: all
    JSON)."""
    if header is None:
        return data, b""
    try:
        n = int(header)
    except ValueError:
        raise ApiError(400, "Inference-Header-Content-Length must be an integer") from None
    if not 0 <= n <= len(data):
        raise ApiError(400, "Inference-Header-Content-Length is larger than the body")
    return data[:n], data[n:]


def _parse_json(raw: bytes) -> dict[str, Any]:
    try:
        data = loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        if re.search(rb"\bNaN\b|\bInfinity\b", raw) or "infinity" in str(e):
            raise ApiError(400, "request body is not valid JSON: NaN or Inf is not a JSON "
                                "number (the inputs must be finite)") from None
        raise ApiError(400, f"request body must be a JSON object; this is not valid JSON, "
                            f"or is nested too deeply ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    return data


def _model(models: dict[str, ServedModel], name: str) -> ServedModel:
    if name not in models:
        raise ApiError(404, f"unknown model '{name}' (serving: {', '.join(models)})")
    return models[name]


def _served(model: ServedModel, target: str | None):
    try:
        return model.get(target)
    except LookupError as e:
        raise ApiError(404, str(e)) from None


def _as_array(values: Any, dtype: str, shape: list[int] | None, what: str,
              max_batch: int, missing: bool = False) -> np.ndarray:
    """A request's values for one input (``missing``: JSON null is a missing value, NaN)."""
    if values is None:
        raise ApiError(400, f"{what}: missing data")
    want = np.dtype(dtype)
    arr = _numbers(values, want, what, missing and want.kind == "f")
    if not fits(arr, want):
        raise ApiError(400, f"{what}: values from {arr.min()} to {arr.max()} do not fit "
                            f"{dtype}")  # a cast would wrap them (an id into another id)
    arr = arr.astype(want, copy=False)
    if shape is not None:
        if not isinstance(shape, list) or any(_whole(d) is None or d < 0 for d in shape):
            raise ApiError(400, f"{what}: shape must be a list of non-negative integers")
        shape = [int(d) for d in shape]
        if arr.size != math.prod(shape):
            raise ApiError(400, f"{what}: {arr.size} values do not fill shape {shape}")
        try:  # numpy refuses more than 64 axes, and axes past its index type
            arr = arr.reshape(shape)
        except ValueError:
            raise ApiError(400, f"{what}: shape {shape} is not one an array can have") from None
    if arr.ndim == 0:
        raise ApiError(400, f"{what}: one number, not a batch: send a list of rows")
    if arr.shape[0] == 0:
        raise ApiError(400, f"{what}: empty batch")
    if 0 in arr.shape:
        raise ApiError(400, f"{what}: an axis of size 0 in shape {list(arr.shape)}")
    if arr.shape[0] > max_batch:
        raise ApiError(413, f"{what}: batch of {arr.shape[0]} exceeds the limit of {max_batch}")
    return arr  # shape, dtype and NaN/Inf are checked by the runner against its signature


def _numbers(values: Any, want: np.dtype, what: str, nulls: bool = False) -> np.ndarray:
    """``values`` (nested JSON lists, or an array from binary data) as a numeric array:
    booleans only for a boolean input, decimals not for an integer one, nulls (as NaN) only
    when ``nulls``."""
    bad = ApiError(400, f"{what}: data must be a (nested) list of "
                        f"{'true/false values' if want.kind == 'b' else 'numbers'}"
                        f"{' or nulls (missing values)' if nulls else ''}")
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise bad from None
    if isinstance(values, list):
        kinds = set(map(type, _leaves(values, arr.ndim)))
        if type(None) in kinds and not nulls and want.kind == "f":
            raise ApiError(400, f"{what}: null (a missing value) where this model takes none; "
                                f"send numbers")
        if (bool in kinds) != (want.kind == "b") or \
                not kinds <= {bool, int, float, *((type(None),) if nulls else ())}:
            raise bad  # numpy would have made true 1.0 and "1.5" 1.5
        if type(None) in kinds:
            return np.asarray(values, dtype=np.float64)  # None -> NaN
        if arr.dtype == object and want.kind in "iu":  # an integer past 64 bits
            raise ApiError(400, f"{what}: values do not fit {want}")
        if arr.dtype == object:  # integers beyond int64: still numbers
            arr = np.asarray(values, dtype=np.float64)
    if arr.dtype.kind not in "biuf":
        raise bad
    if want.kind in "iu" and arr.dtype.kind == "f":
        if not np.array_equal(arr, np.trunc(arr)):  # 2.0 is an integer, as in JSON Schema
            raise ApiError(400, f"{what}: {want} data must be integers, got decimals")
        if isinstance(values, list):  # exactly, from the JSON numbers: as floats, int64's
            try:  # max (2**63 - 1 beside a 2.0) is 2**63, and a cast wrapped it to -2**63
                return np.asarray(values, dtype=object).astype(want)
            except OverflowError:
                raise ApiError(400, f"{what}: values do not fit {want}") from None
        info = np.iinfo(want)  # max + 1 is a power of two, exact as a float; max is not
        if not ((arr >= info.min) & (arr < float(int(info.max) + 1))).all():
            raise ApiError(400, f"{what}: values do not fit {want}")
        arr = arr.astype(want)
    return arr


def _whole(v: Any) -> int | None:
    """``v`` as an int when it is a whole JSON number (2 or 2.0; not true), else None."""
    if type(v) is int:
        return v
    if type(v) is float and v.is_integer():
        return int(v)
    return None


def _leaves(values: list, depth: int):
    """The innermost items of nested lists ``depth`` deep (a C-speed walk, no Python loop)."""
    it = iter(values)
    for _ in range(depth - 1):
        it = chain.from_iterable(it)
    return it


def _run(served, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Predict with one artifact; its runner validates the inputs (InputError -> 400) and
    runs a fixed-batch artifact in chunks of its batch."""
    out = served.predict(arrays)
    for k, v in out.items():
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            raise ApiError(422, f"the model produced NaN or Inf in '{k}' for these inputs "
                                f"(inputs far outside the training range?)")
    return out


# -- Open Inference Protocol v2 -------------------------------------------------------------------
def _v2(app, models: dict[str, ServedModel], max_batch: int) -> None:
    _v2_metadata(app, models)
    _v2_infer(app, models, max_batch)


def _v2_metadata(app, models: dict[str, ServedModel]) -> None:
    from flask import jsonify

    @app.get("/v2")
    def server_metadata():
        return jsonify(name="deploykit", version=__version__, extensions=[])

    @app.get("/v2/health/live")
    def live():
        return jsonify(live=True)

    @app.get("/v2/health/ready")
    def ready():
        return jsonify(ready=True)

    @app.get("/v2/models/<name>")
    @app.get("/v2/models/<name>/versions/<target>")
    def model_metadata(name: str, target: str | None = None):
        m = _model(models, name)  # the version's (default: the default's) own shapes
        sig = _served(m, target).artifact.signature(m.signature, with_batch=False)

        def tensors(specs):
            return [{"name": s.name, "datatype": NP_TO_V2.get(s.dtype, s.dtype.upper()),
                     "shape": [-1 if d is None else d for d in s.shape]} for s in specs]

        return jsonify(name=m.name, versions=list(m.served), platform="deploykit",
                       inputs=tensors(sig.inputs), outputs=tensors(sig.outputs))

    @app.get("/v2/models/<name>/ready")
    @app.get("/v2/models/<name>/versions/<target>/ready")
    def model_ready(name: str, target: str | None = None):
        m = _model(models, name)
        if target is not None:
            _served(m, target)
        return jsonify(name=name, ready=True)


def _v2_infer(app, models: dict[str, ServedModel], max_batch: int) -> None:
    from flask import jsonify

    @app.post("/v2/models/<name>/infer")
    @app.post("/v2/models/<name>/versions/<target>/infer")
    def infer(name: str, target: str | None = None):
        m = _model(models, name)  # the path names a model before the body is read
        served = _served(m, target)
        head, binary = _raw_body()
        return jsonify(infer_answer(m, served, head, binary, max_batch))


def infer_answer(m: ServedModel, served, head: bytes, binary: bytes,
                 max_batch: int) -> dict[str, Any]:
    """The Open Inference Protocol answer to one infer request (JSON ``head``, binary
    tensor data after it)."""
    body = _parse_json(head)
    _check_types(body, {"id": str, "parameters": dict}, "request")
    wanted = _v2_outputs(body, [s.name for s in m.signature.outputs])  # before the work
    out = _run(served, _v2_inputs(body.get("inputs"), m.signature.inputs, binary, max_batch))
    return {"model_name": m.name, "model_version": served.target, "id": body.get("id", ""),
            "outputs": [{"name": k, "datatype": NP_TO_V2.get(out[k].dtype.name, "FP32"),
                         "shape": list(out[k].shape), "data": out[k].reshape(-1)}
                        for k in wanted]}


def _check_types(obj: dict[str, Any], types: dict[str, type], what: str) -> None:
    """Optional fields, when present, have their protocol types."""
    for key, kind in types.items():
        if key in obj and not isinstance(obj[key], kind):
            raise ApiError(400, f"{what} field '{key}' must be a JSON "
                                f"{ {str: 'string', dict: 'object', list: 'array'}[kind]}")


def _v2_inputs(inputs: Any, specs, binary: bytes, max_batch: int) -> dict[str, np.ndarray]:
    """A v2 request's input tensors by name; binary data (the binary tensor extension) is
    laid out in the order of the inputs that declare a ``binary_data_size``."""
    names = [s.name for s in specs]
    if not isinstance(inputs, list) or len(inputs) != len(specs) or not all(
            isinstance(t, dict) for t in inputs):
        raise ApiError(400, f"'inputs' must be a list of {len(specs)} tensor object(s) named "
                            f"{names}, each with name, shape, datatype, data")
    by_name = {s.name: s for s in specs}
    arrays, offset = {}, 0
    for t in inputs:
        name = t.get("name")
        spec = by_name.get(name) if isinstance(name, str) else None
        if spec is None:
            raise ApiError(400, f"unknown input '{t.get('name')}' (expected {names})")
        if spec.name in arrays:
            raise ApiError(400, f"input '{spec.name}' is sent twice")
        params = t.get("parameters")
        size = _whole(params.get("binary_data_size")) if isinstance(params, dict) else None
        part = b""
        if size is not None and size >= 0:  # else _v2_input names the problem
            part, offset = binary[offset:offset + size], offset + size
        arrays[spec.name] = _v2_input(t, spec, part, max_batch)
    if offset != len(binary):
        raise ApiError(400, f"the inputs' binary_data_size values add up to {offset}, but "
                            f"{len(binary)} bytes were sent")
    return arrays


def _v2_input(t: dict[str, Any], spec, binary: bytes, max_batch: int) -> np.ndarray:
    """One v2 input tensor (JSON data or the binary tensor extension) as an array."""
    accepted = V2_ACCEPTED[np.dtype(spec.dtype).kind]
    if not isinstance(t.get("datatype"), str) or t["datatype"] not in accepted:
        raise ApiError(400, f"input '{spec.name}': datatype {t.get('datatype')!r} is not one "
                            f"of {accepted} (the input is {spec.dtype})")
    data = t.get("data")
    _check_types(t, {"parameters": dict}, f"input '{spec.name}'")
    params = t.get("parameters", {})
    if "binary_data_size" in params:  # binary tensor extension
        size = _whole(params["binary_data_size"])
        if size is None or size < 0:
            raise ApiError(400, f"input '{spec.name}': binary_data_size must be a byte count, "
                                f"got {params['binary_data_size']!r}")
        if data is not None:
            raise ApiError(400, f"input '{spec.name}': send its values as 'data' or as binary "
                                f"data (binary_data_size), not both")
        if size != len(binary):
            raise ApiError(400, f"input '{spec.name}': binary_data_size {size} does not "
                                f"match the {len(binary)} bytes sent")
        dtype = np.dtype(V2_TYPES[t["datatype"]]).newbyteorder("<")
        if size % dtype.itemsize:
            raise ApiError(400, f"input '{spec.name}': {size} bytes is not a whole number "
                                f"of {t['datatype']} values")
        data = np.frombuffer(binary, dtype=dtype)
    return _as_array(data, V2_TYPES[t["datatype"]], t.get("shape"), f"input '{spec.name}'",
                     max_batch, spec.missing)


def _v2_outputs(body: dict[str, Any], names: list[str]) -> list[str]:
    """The output names a v2 request asked for (all of them when it names none)."""
    requested = body.get("outputs", [])
    if not isinstance(requested, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested):
        raise ApiError(400, "'outputs' must be a list of {\"name\": \"...\"} objects")
    for o in requested:
        _check_types(o, {"parameters": dict}, f"output '{o['name']}'")
    wanted = [o["name"] for o in requested] or names
    missing = [w for w in wanted if w not in names]
    if missing:
        raise ApiError(400, f"unknown output(s) {missing} (has {names})")
    return list(dict.fromkeys(wanted))  # an output asked for twice is answered once


# -- simple endpoints -----------------------------------------------------------------------------
def _simple(app, models: dict[str, ServedModel], max_batch: int) -> None:
    _predict_routes(app, models, max_batch)
    _file_routes(app, models)


def _pick(models: dict[str, ServedModel], name: str | None) -> ServedModel:
    if name is None:
        if len(models) > 1:
            raise ApiError(400, f"several models are served; pass ?model= one of "
                                f"{', '.join(models)}")
        return next(iter(models.values()))
    return _model(models, name)


def _answer(m: ServedModel, target: str, out: dict[str, np.ndarray], n: int) -> dict[str, Any]:
    """The /predict reply: predictions, labels for a classifier, and every output by name
    when the model has outputs that those do not show."""
    answer: dict[str, Any] = {"model": m.name, "target": target}
    if m.task == "classification":
        from deploykit.parity import class_indices
        from deploykit.predicting import labels_of

        scores, label = m.signature.scores, class_indices(out)
        answer["labels"] = labels_of(out, m.labels, scores)
        if scores in out:
            answer["predictions"] = out[scores].reshape(n, -1).tolist()
        elif label is not None:
            answer["predictions"] = label.reshape(-1).tolist()
        else:
            answer["predictions"] = next(iter(out.values())).reshape(n, -1).tolist()
        shown = {scores, "label"} if label is not None else {scores}
    else:
        answer["predictions"] = next(iter(out.values())).reshape(n, -1).tolist()
        shown = set(list(out)[:1])
    if set(out) - shown:
        answer["outputs"] = {k: v.reshape(n, -1).tolist() for k, v in out.items()}
    return answer


def predict_answer(models: dict[str, ServedModel], model: str | None, target: str | None,
                   body: dict[str, Any], max_batch: int) -> dict[str, Any]:
    """The /predict answer to ``body`` for ``?model=&target=``."""
    m = _pick(models, model)
    served = _served(m, target)
    arrays = _request_inputs(body, m.signature.inputs, max_batch)
    n = len(next(iter(arrays.values())))
    return _answer(m, served.target, _run(served, arrays), n)


def _predict_routes(app, models: dict[str, ServedModel], max_batch: int) -> None:
    from flask import jsonify, request

    @app.post("/predict")
    def predict():
        return jsonify(predict_answer(models, request.args.get("model"),
                                      request.args.get("target"), _body(), max_batch))

    @app.get("/metadata")
    def metadata():
        return jsonify({name: {**m.bundle.manifest, "served": list(m.served),
                               "default": m.default} for name, m in models.items()})

    @app.post("/validate")
    def validate():
        m = _pick(models, request.args.get("model"))
        body = _body() if request_bytes().strip() else None
        x = None
        if body and not {"instances", "inputs"} & set(body):  # a typo ran on the probe set
            raise ApiError(400, f"unknown field(s) {sorted(body)}: post {{\"instances\": ...}} "
                                f"or {{\"inputs\": ...}}, or no body for the probe set")
        if body:
            x = _request_inputs(body, m.signature.inputs, max_batch)
            _run(m.get(None), x)  # the reference: NaN or Inf there is a 422, as for /predict
        rows = m.validate(x)
        return jsonify(model=m.name, reference="probe set" if x is None else m.default,
                       passed=all(r["passed"] for r in rows), artifacts=rows)

    from deploykit.serve.openapi import document

    doc = document(models, max_batch)  # built once, at start

    @app.get("/openapi.json")
    def openapi():
        return jsonify(doc)


def _request_inputs(body: dict[str, Any], specs, max_batch: int) -> dict[str, np.ndarray]:
    """The inputs of a /predict or /validate body, by name. One input: ``{"instances": rows}``
    (rows of ``{feature: value}`` objects for a model fitted on a DataFrame). Several: rows of
    objects, ``{"instances": [{"name": row, ...}, ...]}``, or columns,
    ``{"inputs": {"name": rows, ...}}`` (TF Serving's two formats)."""
    names = [s.name for s in specs]
    several = (f"this model takes {len(specs)} inputs {names}: send "
               f"{{\"instances\": [{{name: row, ...}}, ...]}} or {{\"inputs\": {{name: rows}}}}")
    if "inputs" in body and "instances" in body:
        raise ApiError(400, "send either 'instances' or 'inputs', not both")
    rows = body.get("instances")
    if isinstance(rows, dict):  # one row of {column: value}, not a list of them
        raise ApiError(400, "'instances' must be a list of rows, got an object")
    objects = isinstance(rows, list) and bool(rows) and all(isinstance(r, dict) for r in rows)
    if isinstance(body.get("inputs"), dict):
        columns = body["inputs"]
    elif "instances" in body and len(specs) == 1 and not objects:
        columns = {names[0]: rows}
    elif objects and len(specs) == 1 and specs[0].columns and (
            rows[0].keys() != {names[0]} or not isinstance(rows[0][names[0]], list)):
        columns = {names[0]: specs[0].ordered(rows)}  # a feature may be "x" too
    elif "instances" in body:  # rows of {name: row}; for one input too, as TF Serving takes
        if not objects:
            raise ApiError(400, several)
        columns = {k: [r.get(k) for r in rows] for k in {k for r in rows for k in r}}
    else:
        raise ApiError(400, several if len(specs) > 1 else "expected {\"instances\": [[...], ...]}")
    unknown, missing = sorted(set(columns) - set(names)), [n for n in names if n not in columns]
    if unknown or missing:
        raise ApiError(400, f"inputs do not match the model: missing {missing or 'none'}, "
                            f"unknown {unknown or 'none'} (expected {names})")
    return {s.name: _as_array(s.coded(columns[s.name]) if (s.words or s.filled) and
                              columns[s.name] is not None else columns[s.name], s.dtype,
                              None, "instances" if len(specs) == 1 else f"input '{s.name}'",
                              max_batch, s.missing)
            for s in specs}


def _file_routes(app, models: dict[str, ServedModel]) -> None:
    @app.get("/web/<path:rel>")
    def web_files(rel: str):
        from flask import send_from_directory

        from deploykit.errors import MissingDependencyError
        from deploykit.formats.web import web_dir

        try:
            root = web_dir()
        except MissingDependencyError:
            raise ApiError(404, "targets/web is not installed on this server") from None
        return send_from_directory(root, rel)  # safe_join: no way out of the folder

    @app.get("/bundles/<name>/<path:rel>")
    def bundle_files(name: str, rel: str):
        from flask import send_from_directory

        m = _model(models, name)
        allowed = {a.target for a in m.bundle.artifacts if a.runs == BROWSER}
        parts = rel.split("/")
        if len(parts) < 3 or parts[0] != "artifacts" or parts[1] not in allowed or \
                any(p in ("", ".", "..") for p in parts):
            raise ApiError(404, f"not a browser artifact of '{name}': {rel}")
        folder = (m.bundle.root / "artifacts" / parts[1]).resolve()
        if folder not in (m.bundle.root / rel).resolve().parents:
            raise ApiError(404, f"not a browser artifact of '{name}': {rel}")
        return send_from_directory(m.bundle.root, rel)

    @app.get("/report/<name>")
    def report(name: str):
        from deploykit.report import bundle_result, render

        return render(bundle_result(_model(models, name).bundle.manifest))

    @app.get("/")
    def index():
        from deploykit.serve.page import render

        return render(models)
