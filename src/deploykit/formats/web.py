"""Browser runtimes driven from Python through Node: ``onnx-web`` (onnxruntime-web, wasm) and
``tfjs`` (see tfjs.py). The JS side lives in ``targets/web`` (run.mjs); a runner keeps one
Node process per artifact and talks JSON lines to it, so parity for these targets is checked
by the same engines a browser runs.
"""

from __future__ import annotations

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


class NodeRunner(Runner):
    """A Runner whose runtime is a long-lived ``node run.mjs serve`` process.

    Replies are read by a thread into a queue, so a wedged node process becomes a
    :class:`RunnerError` after :attr:`timeout` seconds (and is killed) instead of a hang.
    """

    timeout: float = 120.0

    def _load(self) -> None:
        if shutil.which("node") is None:
            raise MissingDependencyError("node", "", "to run browser targets",
                                         "Install Node.js 18 or newer.")
        self.proc = subprocess.Popen(["node", "run.mjs", "serve"], cwd=web_dir(),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.replies: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            info = self._call({"op": "load", "runtime": self.runtime, "path": str(self.path)})
        except BaseException:
            self.close()
            raise
        self.input_names, self.node_outputs = info["inputs"], info["outputs"]

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.replies.put(line)
        self.replies.put("")  # end of stream

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        try:
            line = self.replies.get(timeout=self.timeout)
        except queue.Empty:
            self.close()
            raise RunnerError(f"{self.runtime}: node did not answer within {self.timeout:g} s; "
                              f"killed it") from None
        if not line:
            raise RunnerError(f"{self.runtime}: the node process exited "
                              f"(status {self.proc.poll()})")
        reply = json.loads(line)
        if not reply["ok"]:
            raise RunnerError(f"{self.runtime}: {reply['error']}")
        return reply

    def _predict(self, inputs):
        feed = {name: tensor_json(v) for name, v in self._feed(self.input_names, inputs).items()}
        out = self._call({"op": "predict", "inputs": feed})["outputs"]
        return {k: tensor_from_json(out[k]) for k in self.node_outputs}

    def close(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is None or proc.poll() is not None:
            return
        try:
            proc.stdin.close()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()

    def __del__(self) -> None:
        self.close()


@register_runner("onnx-web")
class OnnxWebRunner(NodeRunner):
    """An ONNX file on onnxruntime-web's wasm backend in Node."""
