"""The hot path: POST /predict and POST /v2/models/NAME[/versions/TARGET]/infer straight on
WSGI, before Flask.

Flask's request machinery (context, routing, request and response objects) cost about twice
the model and the checks together at batch 1 (benchmarks/bench_serve.py). These two routes
answer here with the very functions the Flask views call (``predict_answer``,
``infer_answer``, ``error_answer`` of :mod:`deploykit.serve.app`, handed in by it), so
answers and errors are the same either way;
every other request, and any of these that this path does not take as it is (a query
string, no or too large a Content-Length, a model name it does not know), goes on to Flask
untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class FastPath:
    """WSGI middleware in front of the Flask app (``app.wsgi_app``).

    Args:
        app: the Flask app's WSGI callable.
        models: the served models by name.
        max_body: the request body limit in bytes.
        predict: body bytes -> the /predict answer (no ?model, no ?target).
        infer: (model, target or None, body bytes, Inference-Header-Content-Length or None)
            -> the v2 infer answer (JSON and the binary tensor extension).
        error: exception -> (status, message), as the Flask error handlers answer it.
        dumps: JSON-able answer -> bytes.
    """

    def __init__(self, app, models: dict, max_body: int, *, predict: Callable,
                 infer: Callable, error: Callable, dumps: Callable) -> None:
        self.app = app
        self.models = models
        self.max_body = max_body
        self.predict, self.infer, self.error, self.dumps = predict, infer, error, dumps

    def __call__(self, environ: dict[str, Any], start_response):
        answer = self._route(environ)
        if answer is None:
            return self.app(environ, start_response)
        try:
            status, payload = 200, answer()
        except Exception as e:  # noqa: BLE001  (each kind is answered as the Flask views do)
            status, message = self.error(e)
            payload = {"error": message}
        body = self.dumps(payload)
        start_response(_STATUS.get(status, f"{status} Error"),
                       [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    def _route(self, environ: dict[str, Any]):
        """A function making this request's answer, or None to leave it to Flask."""
        if environ.get("REQUEST_METHOD") != "POST" or environ.get("QUERY_STRING"):
            return None
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            return None
        if not 0 < length <= self.max_body:
            return None
        path = environ.get("PATH_INFO", "")
        if path == "/predict":
            return lambda: self.predict(_read(environ, length))
        return self._infer_route(environ, path, length)

    def _infer_route(self, environ: dict[str, Any], path: str, length: int):
        parts = path.split("/")  # "", v2, models, NAME, [versions, TARGET,] infer
        if len(parts) not in (5, 7) or parts[:3] != ["", "v2", "models"] or parts[-1] != "infer" \
                or len(parts) == 7 and parts[4] != "versions":
            return None
        m = self.models.get(parts[3])
        target = parts[5] if len(parts) == 7 else None
        if m is None or target is not None and target not in m.served:
            return None  # Flask answers the 404
        header = environ.get("HTTP_INFERENCE_HEADER_CONTENT_LENGTH")  # binary extension
        return lambda: self.infer(m, target, _read(environ, length), header)


def _read(environ: dict[str, Any], length: int) -> bytes:
    return environ["wsgi.input"].read(length)  # a read timeout is answered by ``error``: 408


_STATUS = {200: "200 OK", 400: "400 Bad Request", 404: "404 Not Found",
           408: "408 Request Timeout", 413: "413 Content Too Large",
           422: "422 Unprocessable Content", 500: "500 Internal Server Error"}
