"""Where output goes: the user's terminal gets progress and tables, a run log gets the rest.

Frameworks print a lot (TensorFlow's C++ ``I0000`` lines, torchao warnings, cpuinfo probes,
converter progress). A user must see none of it unless something fails, and then find all of
it. So a long command runs inside :func:`capture`:

* file descriptors 1 and 2 of this process are pointed at the run log, so anything a
  framework writes (Python or C++) lands there;
* deploykit's own progress bars and tables go to :func:`terminal_err` / :func:`terminal_out`,
  duplicates of the original descriptors taken before the redirection;
* worker processes (:mod:`deploykit.worker`) write their output into the same log, one
  ``[label]`` prefix per line, and get the terminal's descriptor to draw progress on.

With ``verbose=True`` nothing is redirected and worker output is echoed live as well.
Outside :func:`capture` (deploykit used as a library), the process's own streams are left
alone and worker output is kept only as the tail quoted in errors, except while a runtime
loads in this process (:func:`native_output_logged`): what its C++ code prints then goes to
the ``deploykit.native`` logger instead of the caller's terminal.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TextIO

TERMINAL_FD_ENV = "DEPLOYKIT_TERMINAL_FD"  # set for worker processes: where progress may go


@dataclass
class RunLog:
    """An append-only log file shared by this process and its workers."""

    path: Path
    verbose: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def write(self, text: str) -> None:
        data = text.encode(errors="replace")
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        if self.verbose:
            stream = terminal_err()
            stream.write(text)
            stream.flush()


_state = threading.local()
_log: RunLog | None = None
_terminal: tuple[TextIO, TextIO] | None = None  # (stdout, stderr) while capturing


def current() -> RunLog | None:
    """The run log of the command in progress, if any."""
    return _log


def terminal_out() -> TextIO:
    """The user's standard output (tables, JSON), even while fd 1 goes to the run log."""
    return _terminal[0] if _terminal else sys.stdout


def terminal_err() -> TextIO:
    """The user's standard error (progress, warnings, errors)."""
    if _terminal:
        return _terminal[1]
    fd = os.environ.get(TERMINAL_FD_ENV)
    if fd and fd.isdigit():  # inside a worker: the caller's terminal
        stream = getattr(_state, "worker_terminal", None)
        if stream is None:
            try:
                stream = os.fdopen(int(fd), "w", buffering=1, closefd=False)
            except OSError:
                stream = sys.stderr
            _state.worker_terminal = stream
        return stream
    return sys.stderr


def new_log_path(folder: str | Path, command: str) -> Path:
    """``FOLDER/logs/COMMAND-YYYYmmdd-HHMMSS.log`` (a counter is added if it exists)."""
    logs = Path(folder).resolve() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stem = f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = logs / f"{stem}.log", 1
    while path.exists():
        n += 1
        path = logs / f"{stem}-{n}.log"
    return path


@contextmanager
def capture(path: str | Path, *, verbose: bool = False) -> Iterator[RunLog]:
    """Send this process's output and its workers' to the log at ``path``.

    The terminal keeps deploykit's own output (use :func:`terminal_out` and
    :func:`terminal_err`). ``verbose`` leaves the descriptors alone and echoes workers live.
    """
    global _log, _terminal
    log = RunLog(Path(path).resolve(), verbose)
    log.path.parent.mkdir(parents=True, exist_ok=True)
    log.write(f"# deploykit run log, {time.strftime('%Y-%m-%d %H:%M:%S')}, pid {os.getpid()}\n")
    previous = (_log, _terminal)
    _log = log
    if verbose:
        try:
            yield log
        finally:
            _log, _terminal = previous
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    out = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    err = os.fdopen(os.dup(saved[1]), "w", buffering=1)
    fd = os.open(log.path, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    _terminal = (out, err)
    try:
        yield log
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in saved:
            os.close(f)
        for stream in (out, err):
            try:
                stream.close()
            except BrokenPipeError:  # the reader of a pipe left (`deploykit inspect B | head`)
                pass
        _log, _terminal = previous


@dataclass
class _Redirect:
    """Descriptor 2 pointed at ``held`` while runtimes load (see :func:`native_output_logged`)."""

    saved: int  # the caller's descriptor 2, put back when the last window ends
    held: IO[bytes]  # the temporary file that gets what native code writes meanwhile
    depth: int = 0  # windows open now, in any thread
    failed: bool = False  # one of them raised: what was printed is logged as a warning


_native_lock = threading.Lock()
_native: _Redirect | None = None


@contextmanager
def native_output_logged() -> Iterator[None]:
    """Send what native code writes to stderr meanwhile (TensorFlow's ``I0000`` lines,
    LiteRT's ``INFO: Created ... delegate``, ExecuTorch's ``cpuinfo`` probes) to the
    ``deploykit.native`` logger rather than the caller's terminal: at DEBUG level, or
    WARNING when the block raised (what a runtime printed as it failed to load).

    For deploykit used as a library: inside :func:`capture` the run log has it all already,
    as it has a worker process's stderr, and nothing changes there. Descriptor 2 is the
    whole process's, so overlapping uses (runners loading in several threads) share one
    redirection, undone when the last one ends; other threads' stderr meanwhile goes to the
    logger too, not lost.
    """
    global _native
    if _log is not None or TERMINAL_FD_ENV in os.environ:
        yield
        return
    with _native_lock:
        if _native is None:
            _native = _redirect_stderr()
        if _native is None:
            yield  # no descriptor 2 to take over (a daemon's): nothing reaches a terminal
            return
        redirect = _native
        redirect.depth += 1
    try:
        yield
    except BaseException:
        redirect.failed = True
        raise
    finally:
        with _native_lock:
            redirect.depth -= 1
            if not redirect.depth:
                _native = None
                _restore_stderr(redirect)


def _redirect_stderr() -> _Redirect | None:
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        return None
    held = tempfile.TemporaryFile()
    os.dup2(held.fileno(), 2)
    return _Redirect(saved, held)


def _restore_stderr(redirect: _Redirect) -> None:
    sys.stderr.flush()
    os.dup2(redirect.saved, 2)
    os.close(redirect.saved)
    redirect.held.seek(0)
    text = redirect.held.read().decode(errors="replace").strip()
    redirect.held.close()
    if text:
        logging.getLogger("deploykit.native").log(
            logging.WARNING if redirect.failed else logging.DEBUG, "%s", text)


def terminal_fd() -> int:
    """A descriptor of the user's terminal (stderr) for worker processes to draw progress on."""
    stream = terminal_err()
    try:
        return stream.fileno()
    except (OSError, ValueError, AttributeError):
        return 2
