"""Schemathesis hook for the OpenAPI conformance test (loaded by ``st`` through
SCHEMATHESIS_HOOKS; runs in schemathesis's own venv, imports nothing of deploykit).

An Open Inference Protocol tensor's ``data`` must fill its ``shape``: the product of one
field against the length of another, which JSON Schema cannot state (the server's document
says so). For requests schemathesis generates as valid, this repeats the generated values
to that length; requests meant to be invalid are left as they are.
"""

import math

import schemathesis


@schemathesis.hook
def before_call(ctx, case, kwargs):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or not case.path.endswith("/infer"):
        return
    body = case.body
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        return
    for t in body["inputs"]:
        shape, data = t.get("shape"), t.get("data")
        if isinstance(shape, list) and isinstance(data, list) and data:
            n = int(math.prod(shape))
            t["data"] = (data * (n // len(data) + 1))[:n]
