"""Browser runtimes driven from Python through Node: ``onnx-web`` (onnxruntime-web, wasm) and
``tfjs`` (see tfjs.py). The JS side lives in ``targets/web`` (run.mjs); a runner holds one
Node process while its artifact is open and talks JSON lines to it, so parity for these
targets is checked by the same engines a browser runs. A closed runner's process is kept for
the next artifact (up to three idle per web folder).
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
    a wedged process becomes a :class:`RunnerError` after a timeout instead of a hang).

    ``reusable`` turns false for good once a call fails or is interrupted: the engine may be
    broken, or a reply may be left unread, and the next artifact must not meet either.
    """

    def __init__(self, folder: Path) -> None:
        self.folder, self.owner, self.reusable = folder, os.getpid(), True
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
        self.reusable, ok = False, False
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            line = self.replies.get(timeout=timeout)
            ok = True
        except queue.Empty:
            raise RunnerError(f"{runtime}: node did not answer within {timeout:g} s; "
                              f"killed it") from None
        finally:
            if not ok:  # timed out, pipe gone, or interrupted: the process is stopped
                self.stop(kill=True)
        if not line:
            raise RunnerError(f"{runtime}: the node process exited (status {self.proc.poll()})")
        reply = json.loads(line)
        if not reply["ok"]:
            raise RunnerError(f"{runtime}: {reply['error']}")
        self.reusable = True
        return reply

    def stop(self, kill: bool = False) -> None:
        self.reusable = False
        if self.owner != os.getpid() or self.proc.poll() is not None:
            return
        try:
            if kill:
                self.proc.kill()
            else:
                self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


# Node processes whose runner was closed, by web folder: the next runner loads its artifact
# into one of them. Starting Node and its engine costs more than most artifacts' parity runs
# (about 1.2 CPU-s for onnxruntime-web, which compiles its wasm; 0.4 s for TF.js). An export
# keeps its browser runners open until it has timed them, so they go back together, and the
# next export's (what-if, zoo, verify) reuse them. A process that ran a large artifact is not
# kept: wasm memory never shrinks.
_IDLE: dict[Path, list[_Node]] = {}
_IDLE_MAX = 3  # tfjs, tfjs-fp16, onnx-web
_KEEP_UNDER_BYTES = 64 * 2**20
_IDLE_LOCK = threading.Lock()


def _forget_idle() -> None:  # a forked child owns none of its parent's processes
    global _IDLE, _IDLE_LOCK
    _IDLE, _IDLE_LOCK = {}, threading.Lock()


os.register_at_fork(after_in_child=_forget_idle)


def _take_node(folder: Path) -> _Node:
    with _IDLE_LOCK:
        idle = _IDLE.get(folder, [])
        while idle:
            node_ = idle.pop()
            if node_.alive():
                return node_
    return _Node(folder)


def _give_back(node_: _Node, runtime: str, size: int) -> None:
    """Keep ``node_`` for the next runner once it has dropped its model, else stop it."""
    if not node_.reusable or size >= _KEEP_UNDER_BYTES:
        node_.stop()
        return
    try:
        node_.call({"op": "unload"}, runtime, timeout=10)
    except (RunnerError, ValueError):  # not unloaded: the process may be broken
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


def _bytes(path: Path) -> int:
    try:
        return sum(f.stat().st_size for f in (path.rglob("*") if path.is_dir() else [path])
                   if f.is_file())
    except OSError:  # gone meanwhile: do not keep its process
        return _KEEP_UNDER_BYTES


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
        node_ = getattr(self, "node", None)
        if node_ is None:
            raise RunnerError(f"{self.runtime}: {self.path.name} was closed; open it again")
        return node_.call(request, self.runtime, self.timeout)

    def _predict(self, inputs):
        feed = {name: tensor_json(v) for name, v in self._feed(self.input_names, inputs).items()}
        out = self._call({"op": "predict", "inputs": feed})["outputs"]
        return {k: tensor_from_json(out[k]) for k in self.node_outputs}

    def close(self) -> None:
        with self._one_at_a_time:  # not while another thread's predict talks to the process
            node_ = self.__dict__.pop("node", None)
            if node_ is not None and node_.alive():
                _give_back(node_, self.runtime, _bytes(self.path))

    def __del__(self) -> None:  # dropped without close(): its process is not reused
        node_ = self.__dict__.pop("node", None)
        if node_ is not None:
            node_.stop()


@register_runner("onnx-web")
class OnnxWebRunner(NodeRunner):
    """An ONNX file on onnxruntime-web's wasm backend in Node."""
