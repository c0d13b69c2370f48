"""Run one function in a fresh Python process, with its own environment and a time limit.

Keras picks its backend once per process, and converters can segfault or hang. A worker
turns each of those into a typed error for one job while the caller carries on:

    result = run_in_worker("deploykit.training.keras_path:fit_in_worker", {"...": ...},
                           env={"KERAS_BACKEND": "torch"}, timeout=600)

The function is named as ``"module:function"``; its keyword arguments and its return
value must be JSON-serialisable (pass arrays as file paths). The worker's stdout is the
caller's and its stderr is forwarded live (progress stays visible); the tail of stderr is
quoted in the error when the job fails.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any

from deploykit.errors import WorkerCrashed, WorkerError, WorkerTimeout

STDERR_TAIL = 2000  # characters of the worker's stderr quoted in an error


def run_in_worker(target: str, kwargs: dict[str, Any] | None = None, *,
                  env: dict[str, str] | None = None, timeout: float = 600.0,
                  forward_output: bool = True) -> Any:
    """Call ``target(**kwargs)`` in a new process and return its JSON result.

    ``forward_output=False`` keeps the worker's stdout and stderr (converter chatter) out of
    the caller's; the tail of its stderr still appears in errors.

    Raises:
        WorkerError: the function raised (message and type carried over).
        WorkerCrashed: the process died without a result (signal or hard exit).
        WorkerTimeout: it ran longer than ``timeout`` seconds and was killed.
    """
    with tempfile.TemporaryDirectory(prefix="deploykit-worker-") as tmp:
        job = Path(tmp)
        (job / "request.json").write_text(json.dumps({"target": target, "kwargs": kwargs or {}}))
        proc = subprocess.Popen([sys.executable, "-m", "deploykit.worker", str(job)],
                                env=_child_env(env), stdin=subprocess.DEVNULL,
                                stdout=None if forward_output else subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        tail = _Tee(proc.stderr, forward_output)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise WorkerTimeout(f"{target} timed out after {timeout:g} s and was killed") from None
        except BaseException:  # Ctrl-C in the caller: do not leave the worker behind
            _kill_group(proc)
            raise
        finally:
            tail.join()
        return _result(job / "result.json", target, code, tail.text())


def _child_env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {**os.environ, **(extra or {})}
    if sys.stderr.isatty():  # keep live progress bars although the child writes to a pipe
        env.setdefault("TTY_INTERACTIVE", "1")
        env.setdefault("FORCE_COLOR", "1")
    return env


class _Tee(threading.Thread):
    """Forward the worker's stderr live and keep its tail for error messages."""

    def __init__(self, stream, forward: bool) -> None:
        super().__init__(daemon=True)
        self.stream, self.buf, self.forward = stream, bytearray(), forward
        self.start()

    def run(self) -> None:
        out = getattr(sys.stderr, "buffer", None) if self.forward else None
        for chunk in iter(lambda: self.stream.read1(4096), b""):
            self.buf = (self.buf + chunk)[-STDERR_TAIL:]
            if out is not None:
                out.write(chunk)
                out.flush()

    def text(self) -> str:
        return self.buf.decode(errors="replace")


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group may be gone already
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _result(path: Path, target: str, code: int, stderr: str) -> Any:
    if not path.exists():
        if code < 0:
            how = f"was killed by {signal.Signals(-code).name}"
        else:
            how = f"exited with status {code} without a result"
        tail = f"\n--- worker stderr (tail) ---\n{stderr.strip()}" if stderr.strip() else ""
        raise WorkerCrashed(f"{target} {how}{tail}")
    out = json.loads(path.read_text())
    if out["ok"]:
        return out["value"]
    raise WorkerError(f"{out['type']}: {out['message']}", error_type=out["type"],
                      traceback=out["traceback"])


def _main(job: Path) -> int:
    request = json.loads((job / "request.json").read_text())
    module, _, name = request["target"].partition(":")
    try:
        value = getattr(importlib.import_module(module), name)(**request["kwargs"])
        out = {"ok": True, "value": value}
    except Exception as e:  # every failure goes back to the caller, typed
        out = {"ok": False, "type": type(e).__name__, "message": str(e),
               "traceback": traceback.format_exc()}
    tmp = job / "result.json.tmp"
    tmp.write_text(json.dumps(out))
    tmp.replace(job / "result.json")  # the caller never reads half a result
    return 0


if __name__ == "__main__":
    sys.exit(_main(Path(sys.argv[1])))
