"""The shape of the code: no import cycles, short functions, and formats as plug-ins that
every consumer finds through the registry (a format registered from outside, by an entry
point, reaches --to all, `deploykit formats`, export, the server's defaults and packages)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "deploykit"
TESTS = Path(__file__).resolve().parent
MAX_FUNCTION_LINES = 60


def _module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """deploykit modules ``path`` names in an import anywhere (function bodies included):
    ``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to ``a.b``."""
    found = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Import):
            found |= {a.name for a in n.names} & modules
        elif isinstance(n, ast.ImportFrom) and n.module:
            for a in n.names:
                sub = f"{n.module}.{a.name}"
                found |= {sub if sub in modules else n.module} & modules
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in SRC.rglob("*.py")}
    return {m: _imports(p, set(files)) - {m} for m, p in files.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(m: str, stack: list[str]) -> list[str] | None:
        state[m] = 1
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return [*stack[stack.index(n):], n] if n in stack else [m, n]
            if n not in state and (found := visit(n, [*stack, n])):
                return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m, [m])):
            return found
    return None


def test_the_import_walk_sees_known_edges():
    g = _graph()
    assert "deploykit.graph" in g["deploykit.formats.tflite"]
    assert "deploykit.formats.base" in g["deploykit.formats.tflite"]
    assert "deploykit.bundle" in g["deploykit.formats"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_inside_the_package():
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_bundle_and_the_graph_import_no_runner():
    g = _graph()
    for m in ("deploykit.bundle", "deploykit.artifact", "deploykit.graph"):
        assert not {n for n in g[m] if n.startswith("deploykit.formats")}, m


def test_every_subpackage_is_in_the_wheel():
    """pyproject lists the packages by hand (``deploykit.targets`` maps to another folder), so
    a new subpackage missing there would be missing from every non-editable install."""
    import tomllib

    listed = set(tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())
                 ["tool"]["setuptools"]["packages"])
    found = {_module(p.parent / "x.py").rsplit(".", 1)[0] for p in SRC.rglob("__init__.py")}
    assert found - listed == set(), "add these to [tool.setuptools] packages"


def test_no_function_is_longer_than_60_lines():
    long = []
    for p in SRC.rglob("*.py"):
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = n.end_lineno - n.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{p.relative_to(SRC)}:{n.lineno} {n.name} ({lines} lines)")
    assert not long, long


FAKE = '''
"""A format from outside deploykit: ONNX bytes under another name, served and packaged."""
import shutil
from deploykit.formats.base import register_runner
from deploykit.formats.onnx import OnnxRunner
from deploykit.graph import edge, node

node("fakefmt", "fakefmt", column=99, serve_rank=-1, devices=("edge",), extra="onnx",
     distributions=("onnxruntime",), description="a plug-in format for the tests")


@edge("onnx", "fakefmt", requires=("onnx",))
def onnx_to_fakefmt(src, out, ctx):
    shutil.copy2(src, out / "model.fake")
    return {"file": "model.fake", "versions": {"fakefmt": "0.1"}}


@register_runner("fakefmt")
class FakeRunner(OnnxRunner):
    """onnxruntime on the renamed file."""
'''

CHECK = '''
import json, sys
from deploykit import graph
from deploykit.exporting import export, resolve_targets
from deploykit.package import package
from deploykit.serve.models import ServedModel
from sources_for_tests import sklearn_model, sample

out = {"all": resolve_targets("all"), "formats": graph.describe()}
r = export(sklearn_model(), "onnx,fakefmt", out=sys.argv[1] + "/b", sample=sample(), quiet=True)
out["cells"] = {c.target: [c.status, c.reason] for c in r.cells}
m = ServedModel(sys.argv[1] + "/b")
out["served"], out["default"] = sorted(m.served), m.default
p = package(sys.argv[1] + "/b", "edge", sys.argv[1] + "/pkg")
out["packaged"] = [a["target"] for a in json.loads((p / "package.json").read_text())["artifacts"]]
print(json.dumps(out))
'''


def _plugin(tmp: Path) -> Path:
    """A package installed only as far as Python's entry points are concerned: a module and a
    dist-info declaring it in the ``deploykit.formats`` group."""
    site = tmp / "site"
    (site / "fakefmt-0.1.dist-info").mkdir(parents=True)
    (site / "deploykit_fakefmt.py").write_text(FAKE)
    (site / "fakefmt-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fakefmt\nVersion: 0.1\n")
    (site / "fakefmt-0.1.dist-info" / "entry_points.txt").write_text(
        "[deploykit.formats]\nfakefmt = deploykit_fakefmt\n")
    return site


def test_a_format_from_a_plugin_reaches_every_consumer(tmp_path):
    site = _plugin(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(TESTS)])}
    r = subprocess.run([sys.executable, "-c", CHECK, str(tmp_path)], capture_output=True,
                       text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.splitlines()[-1])
    assert got["all"][-1] == "fakefmt"  # column 99: last in --to all and in the matrix
    assert "fakefmt" in got["formats"] and "onnx_to_fakefmt" in got["formats"]
    assert got["cells"]["fakefmt"][0] == "pass", got["cells"]  # converted in a worker, verified
    assert got["served"] == ["fakefmt", "onnx"] and got["default"] == "fakefmt"
    assert got["packaged"] == ["onnx", "fakefmt"]
    shown = subprocess.run([sys.executable, "-m", "deploykit", "formats"], capture_output=True,
                           text=True, env=env, timeout=120)
    assert "fakefmt" in shown.stdout and "a plug-in format for the tests" in shown.stdout


def _public_api():
    import importlib

    import deploykit

    for name in deploykit.__all__:
        if name != "__version__":
            yield f"deploykit.{name}", getattr(deploykit, name)
    for module, names in {"deploykit.package": ["package"], "deploykit.serve": ["create_app"],
                          "deploykit.browser": ["check"],
                          "deploykit.formats": ["load", "open_runner", "open_artifact"],
                          "deploykit.graph": ["node", "edge", "plan"]}.items():
        for name in names:
            yield f"{module}.{name}", getattr(importlib.import_module(module), name)


def test_public_functions_have_google_style_docstrings():
    """Args for every parameter-taking function, Returns where one returns something."""
    import inspect

    missing = []
    for name, fn in _public_api():
        fn = inspect.unwrap(fn)
        doc = inspect.getdoc(fn) or ""
        sig = inspect.signature(fn)
        if [p for p in sig.parameters if p != "self"] and "Args:" not in doc:
            missing.append(f"{name}: Args")
        returns = sig.return_annotation not in (None, "None", inspect.Signature.empty)
        if returns and "Returns:" not in doc and "Yields:" not in doc:
            missing.append(f"{name}: Returns")
    assert not missing, missing
