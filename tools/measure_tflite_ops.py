"""Measure which builtin op versions a TFLite runtime can load.

    python tools/measure_tflite_ops.py --runtime-python VENV/bin/python --label "tflite-runtime 2.14.0" \
        --out src/deploykit/package/tflite_runtime_2_14.json

Run with deploykit's own Python (it needs the TFLite flatbuffer schema that ai-edge-litert
ships). For every builtin operator code of the current schema and every version 1..MAX it
writes a model that holds only that operator code and an empty subgraph, then asks the
runtime in ``--runtime-python`` to load each one. Loading resolves every operator code
against the runtime's op resolver, so a model loads exactly when the runtime has that op at
that version. The result is the table ``deploykit package`` checks models against; it is
measured on the real runtime binary rather than copied from a ``register.cc``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CUSTOM = 32  # BuiltinOperator.CUSTOM: resolved by name, not by version

MAX_VERSION = 20
PROBE = r"""
import json, sys
from pathlib import Path
try:
    from tflite_runtime.interpreter import Interpreter
except ImportError:
    from ai_edge_litert.interpreter import Interpreter
ok = []
for f in sorted(Path(sys.argv[1]).glob("*.tflite")):
    try:
        Interpreter(model_content=f.read_bytes())
        ok.append(f.stem)
    except Exception:
        pass
print(json.dumps(ok))
"""


def model(code: int, version: int) -> bytes:
    """A model holding one operator code and an empty subgraph (a builtin op code is
    resolved when the model loads, used or not)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    m = s.ModelT()
    m.version = 3
    oc = s.OperatorCodeT()
    oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), version
    m.operatorCodes = [oc]
    sg = s.SubGraphT()
    sg.tensors, sg.inputs, sg.outputs, sg.operators = [], [], [], []
    m.subgraphs, m.buffers = [sg], [s.BufferT()]
    b = flatbuffers.Builder(256)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def builtin_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as s

    return {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}


def measure(runtime_python: str) -> dict[str, dict]:
    """builtin op name -> {"code", "versions" the runtime loads}."""
    names = builtin_names()
    with tempfile.TemporaryDirectory() as d:
        for code in names:
            if code == CUSTOM:
                continue
            for v in range(1, MAX_VERSION + 1):
                Path(d, f"{code}_{v}.tflite").write_bytes(model(code, v))
        r = subprocess.run([runtime_python, "-c", PROBE, d], capture_output=True, text=True,
                           timeout=1800, check=True)
        loaded = json.loads(r.stdout.splitlines()[-1])
    pairs = {tuple(map(int, x.split("_"))) for x in loaded}
    return {name: {"code": code, "versions": sorted(v for c, v in pairs if c == code)}
            for code, name in sorted(names.items()) if code != CUSTOM}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runtime-python", required=True)
    ap.add_argument("--label", required=True, help='e.g. "tflite-runtime 2.14.0"')
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    ops = measure(args.runtime_python)
    how = ("measured by tools/measure_tflite_ops.py: per builtin op its code and the versions "
           "the runtime loads ([] = it does not have the op)")
    lines = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in ops.items())
    text = (f'{{\n "runtime": {json.dumps(args.label)},\n "how": {json.dumps(how)},\n'
            f' "ops": {{\n{lines}\n }}\n}}\n')
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
