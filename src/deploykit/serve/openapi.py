"""The OpenAPI 3 document for the server's endpoints."""

from __future__ import annotations

from typing import Any

from deploykit import __version__

_ERROR = {"description": "bad input, named in 'error'",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _op(summary: str, body: str | None = None, params: list[str] = ()) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary,
                          "parameters": [{"name": p, "in": "path", "required": True,
                                          "schema": {"type": "string"}} for p in params],
                          "responses": {"200": {"description": "ok"}, "400": _ERROR,
                                        "404": _ERROR, "413": _ERROR}}
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{body}"}}}}
    return op


def document(models: list[str]) -> dict[str, Any]:
    tensor = {"type": "object", "required": ["name", "shape", "datatype", "data"],
              "properties": {"name": {"type": "string"},
                             "shape": {"type": "array", "items": {"type": "integer"}},
                             "datatype": {"type": "string",
                                          "enum": ["FP32", "FP64", "INT64", "INT32", "BOOL"]},
                             "data": {"type": "array", "items": {}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "deploykit serve", "version": __version__,
                 "description": f"Serving: {', '.join(models)}. Open Inference Protocol v2 "
                                "plus /predict and /validate."},
        "paths": {
            "/v2": {"get": _op("server metadata")},
            "/v2/health/live": {"get": _op("liveness")},
            "/v2/health/ready": {"get": _op("readiness")},
            "/v2/models/{model}": {"get": _op("model metadata", params=["model"])},
            "/v2/models/{model}/ready": {"get": _op("model readiness", params=["model"])},
            "/v2/models/{model}/infer": {"post": _op("infer (default target)", "InferRequest",
                                                    ["model"])},
            "/v2/models/{model}/versions/{target}/infer": {
                "post": _op("infer on one artifact", "InferRequest", ["model", "target"])},
            "/predict": {"post": _op("predict a batch of instances", "Instances")},
            "/validate": {"post": _op("re-check parity of every loaded artifact")},
            "/metadata": {"get": _op("bundle manifests with parity")},
        },
        "components": {"schemas": {
            "Error": {"type": "object", "properties": {"error": {"type": "string"}}},
            "Tensor": tensor,
            "InferRequest": {"type": "object", "required": ["inputs"], "properties": {
                "id": {"type": "string"},
                "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}},
                "outputs": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}}}}}},
            # rows (one input), rows of {input: value} objects, or columns by input name
            "Instances": {"type": "object", "properties": {
                "instances": {"type": "array", "items": {"oneOf": [
                    {"type": "array"}, {"type": "object"}]}},
                "inputs": {"type": "object", "additionalProperties": {"type": "array"}}},
                "anyOf": [{"required": ["instances"]}, {"required": ["inputs"]}]},
        }},
    }
