"""Browser runtimes driven from Python through Node: ``onnx-web`` (onnxruntime-web, wasm) and
``tfjs`` (see tfjs.py). The JS side lives in ``targets/web`` (run.mjs); a runner holds one
Node process while its artifact is open and talks JSON lines to it, so parity for these
targets is checked by the same engines a browser runs. A closed runner's process is kept for
the next artifact (up to two idle per Python process).
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from deploykit._tensors import tensor_from_json, tensor_json
from deploykit.errors import MissingDependencyError, RunnerError
from deploykit.formats.base import Runner, register_runner
from deploykit.graph import BROWSER, EdgeContext, edge, node

node("onnx-web", "onnx-web", column=10, runs=BROWSER, serve_rank=8, devices=("web",),
     description="ONNX for the web, run by onnxruntime-web (wasm)")


def web_dir() -> Path:
    """``targets/web`` as shipped with deploykit (or ``$DEPLOYKIT_WEB_DIR``), with its npm
    packages installed.

    Raises:
        MissingDependencyError: its npm packages are not installed (says where to run
            ``npm ci``).
    """
    from deploykit import targets

    env = os.environ.get("DEPLOYKIT_WEB_DIR")
    here = Path(env) if env else targets.folder() / "web"
    if not (here / "run.mjs").is_file() or not (here / "node_modules").is_dir():
        raise MissingDependencyError(
            "@tensorflow/tfjs / onnxruntime-web", "", "to run browser targets",
            f"Run `npm ci` in {here}, or set DEPLOYKIT_WEB_DIR to a copy of deploykit's "
            f"targets/web where it ran.")
    return here


@edge("onnx", "onnx-web", requires=("node",))
def onnx_to_onnx_web(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    """The same ONNX file, shipped for onnxruntime-web; parity is re-checked in wasm."""
    shutil.copy2(src, out / "model.onnx")
    return {"file": "model.onnx", "versions": {"onnxruntime-web": _npm_version("onnxruntime-web")}}


def _npm_version(package: str) -> str:
    try:
        meta = json.loads((web_dir() / "node_modules" / package / "package.json").read_text())
        return meta["version"]
    except (OSError, MissingDependencyError):
        return "unknown"


class _Node:
    """One ``node run.mjs serve`` process, and a thread that reads its replies into a queue (so
    a wedged process becomes a :class:`RunnerError` after a timeout instead of a hang)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.owner = folder, os.getpid()
        self.proc = subprocess.Popen(["node", "run.mjs", "serve"], cwd=folder,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.replies: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.replies.put(line)
        self.replies.put("")  # end of stream

    def alive(self) -> bool:
        return self.owner == os.getpid() and self.proc.poll() is None

    def call(self, request: dict[str, Any], runtime: str, timeout: float) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        try:
            line = self.replies.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            raise RunnerError(f"{runtime}: node did not answer within {timeout:g} s; "
                              f"killed it") from None
        if not line:
            raise RunnerError(f"{runtime}: the node process exited (status {self.proc.poll()})")
        reply = json.loads(line)
        if not reply["ok"]:
            raise RunnerError(f"{runtime}: {reply['error']}")
        return reply

    def stop(self) -> None:
        if self.owner != os.getpid() or self.proc.poll() is not None:
            return
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


# Node processes whose artifact was closed, by folder: the next runner loads its artifact into
# one of them. Starting Node and importing the engine costs more than most artifacts' parity
# runs (about 1.2 CPU-s for onnxruntime-web, which compiles its wasm; 0.4 s for TF.js), and an
# export verifies several browser artifacts one after another.
_IDLE: dict[Path, list[_Node]] = {}
_IDLE_MAX = 2
_IDLE_LOCK = threading.Lock()


def _take_node(folder: Path) -> _Node:
    with _IDLE_LOCK:
        idle = _IDLE.get(folder, [])
        while idle:
            node_ = idle.pop()
            if node_.alive():
                return node_
    return _Node(folder)


def _give_back(node_: _Node, runtime: str) -> None:
    """Keep ``node_`` for the next runner once it has dropped its model, else stop it."""
    try:
        node_.call({"op": "unload"}, runtime, timeout=10)
    except (RunnerError, OSError, ValueError):
        node_.stop()
        return
    with _IDLE_LOCK:
        idle = _IDLE.setdefault(node_.folder, [])
        if node_.alive() and len(idle) < _IDLE_MAX:
            idle.append(node_)
            return
    node_.stop()


@atexit.register
def _stop_idle() -> None:
    with _IDLE_LOCK:
        nodes = [n for idle in _IDLE.values() for n in idle]
        _IDLE.clear()
    for n in nodes:
        n.stop()


class NodeRunner(Runner):
    """A Runner whose runtime is a ``node run.mjs serve`` process, taken from the processes
    earlier runners closed when one is idle (:func:`_take_node`) and given back on
    :meth:`close`. A process that timed out (:attr:`timeout` seconds) is killed, not reused.
    """

    timeout: float = 120.0

    def _load(self) -> None:
        if shutil.which("node") is None:
            raise MissingDependencyError("node", "", "to run browser targets",
                                         "Install Node.js 18 or newer.")
        self.node = _take_node(web_dir())
        try:
            info = self._call({"op": "load", "runtime": self.runtime, "path": str(self.path)})
        except BaseException:
            self.close()
            raise
        self.input_names, self.node_outputs = info["inputs"], info["outputs"]

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.node.call(request, self.runtime, self.timeout)

    def _predict(self, inputs):
        feed = {name: tensor_json(v) for name, v in self._feed(self.input_names, inputs).items()}
        out = self._call({"op": "predict", "inputs": feed})["outputs"]
        return {k: tensor_from_json(out[k]) for k in self.node_outputs}

    def close(self) -> None:
        node_ = self.__dict__.pop("node", None)
        if node_ is not None and node_.alive():
            _give_back(node_, self.runtime)

    def __del__(self) -> None:  # dropped without close(): its process is not reused
        node_ = self.__dict__.pop("node", None)
        if node_ is not None:
            node_.stop()


@register_runner("onnx-web")
class OnnxWebRunner(NodeRunner):
    """An ONNX file on onnxruntime-web's wasm backend in Node."""
