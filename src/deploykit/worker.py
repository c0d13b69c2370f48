"""Run functions in worker processes: own environment, time limit, crash isolation, reuse.

Keras picks its backend once per process, and converters can segfault or hang. A worker
turns each of those into a typed error for one job while the caller carries on. Importing
TensorFlow or PyTorch costs seconds, so workers are long-lived: a :class:`Pool` keeps one per
environment (e.g. ``KERAS_BACKEND=torch``) and hands it job after job; a worker that crashes
or times out is killed and the next job gets a fresh one, so a crash costs only its own job.

    result = run("deploykit.training.keras_path:fit_in_worker", {"...": ...},
                 env={"KERAS_BACKEND": "torch"}, timeout=600, label="train keras-torch")

The function is named as ``"module:function"``; its keyword arguments and its return value
must be JSON-serialisable (pass arrays as file paths). :func:`run` uses the workers of the
:func:`pool` block it runs in, or a process of its own outside one (:func:`run_in_worker`).

Protocol: requests are JSON lines on the worker's stdin; results are JSON lines on its
original stdout, which the worker moves aside at start, pointing fd 1 at its stderr. Its
stderr is read by a thread in the caller, written into the run log (:mod:`deploykit._runlog`)
with a ``[label]`` prefix, and its tail is quoted in the error when a job fails.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

from deploykit import _runlog
from deploykit._fs import scratch
from deploykit._interrupt import abort_on_ctrl_c, abortable
from deploykit.errors import WorkerCrashed, WorkerError, WorkerTimeout

TAIL_BYTES = 6000  # of a job's output, quoted in errors and failure records
TAIL_LINES = 40
# Idle workers a pool keeps: an export to every target uses five at once (two lanes, three
# environments: no Keras backend, Keras on TensorFlow, Keras on torch), each about 1 GB once
# warm. With four, each export evicted a warm worker and started a cold one.
IDLE = 5
# A worker is replaced after this many jobs: it bounds leaks in converters, and workers slow
# with age (framework caches, a growing heap). With 200, the full suite took 996 s (1744 s
# user); with 24, 913 s (1588 s user), one clean run each.
MAX_JOBS = 24
_END = "\x00deploykit-job-end"  # written by the worker to stderr after each job
# Workers run one math thread each: an export runs two of them at once on two cores, and
# OpenMP threads spinning on oversubscribed cores made one int8 calibration take 55 s instead
# of 7 s. Keras training loses about 8 % to it; one worker then serves training and the
# conversions after it (a framework import saved each time). An ``env`` may override it.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


class Worker:
    """One worker process; :meth:`call` runs a job in it. Not thread-safe (one job at a time).

    Args:
        env: extra environment variables for the process.
    """

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = dict(env or {})
        self.jobs = 0
        self.warm: set[str] = set()  # what its jobs have imported (see Pool.run's ``warm``)
        self.terminal = _terminal_identity()  # the one it can draw progress on
        term = os.dup(_runlog.terminal_fd())  # a fresh number above 2, passed to the child
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "deploykit.worker"], env=self._child_env(term),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=(term,), start_new_session=True)
        finally:
            os.close(term)
        self.results: queue.Queue[bytes] = queue.Queue()
        self.output = _Output(self.proc.stderr)
        threading.Thread(target=self._read_results, daemon=True).start()

    def _child_env(self, term: int) -> dict[str, str]:
        return {**os.environ, **WORKER_ENV, **self.env, _runlog.TERMINAL_FD_ENV: str(term)}

    def _read_results(self) -> None:
        for line in self.proc.stdout:
            self.results.put(line)
        self.results.put(b"")  # end of stream: the process is gone

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def call(self, target: str, kwargs: dict[str, Any] | None = None, *,
             timeout: float = 600.0, label: str = "") -> Any:
        """Run ``target(**kwargs)`` here and return its JSON result.

        Raises:
            WorkerError: the function raised (message and type carried over).
            WorkerCrashed: the process died without a result (signal or hard exit).
            WorkerTimeout: the job ran longer than ``timeout`` seconds; the process is killed.
        """
        self.jobs += 1
        label = label or target
        job = self.output.begin(label)
        try:
            with abortable(self._kill_now):  # Ctrl-C: the job stops now, not when it ends
                self._send(target, kwargs)  # registered first: a job Ctrl-C saw running
                line = self.results.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise WorkerTimeout(f"{label} timed out after {timeout:g} s and was killed",
                                log_tail=self.output.end(job, wait_for_eof=True)) from None
        except BaseException:  # Ctrl-C in the caller: do not leave the worker behind
            self.kill()
            raise
        if not line:
            code = self.proc.wait()
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else \
                f"exited with status {code} without a result"
            tail = self.output.end(job, wait_for_eof=True)
            raise WorkerCrashed(f"{label} {how}", log_tail=tail)
        tail = self.output.end(job)
        return _result(json.loads(line), tail)

    def _send(self, target: str, kwargs: dict[str, Any] | None) -> None:
        try:
            self.proc.stdin.write((json.dumps({"target": target, "kwargs": kwargs or {}})
                                   + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the process is gone; reading the result says how

    def kill(self) -> None:
        self._kill_now()
        self.proc.wait()

    def _kill_now(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # the group may be gone already
            os.killpg(self.proc.pid, signal.SIGKILL)

    def close(self) -> None:
        """Ask the worker to exit (end of its input); kill it if it does not."""
        if self.alive:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def _result(out: dict[str, Any], tail: str) -> Any:
    if out["ok"]:
        return out["value"]
    raise WorkerError(f"{out['type']}: {out['message']}", error_type=out["type"],
                      traceback=out["traceback"], log_tail=tail)


class _Output(threading.Thread):
    """Reads a worker's stderr: into the run log, line by line with the job's label, and into
    a tail buffer per job. The worker marks each job's end, so a job's tail is complete when
    its result arrives."""

    def __init__(self, stream) -> None:
        super().__init__(daemon=True)
        self.stream, self.label, self.buf = stream, "worker", bytearray()
        self.ended = threading.Event()
        self.start()

    def begin(self, label: str) -> str:
        self.label, self.buf = label, bytearray()
        self.ended.clear()
        return label

    def end(self, job: str, wait_for_eof: bool = False) -> str:
        if wait_for_eof:
            self.join(timeout=5)
        else:
            self.ended.wait(timeout=5)
        return _tail(self.buf.decode(errors="replace"))

    def run(self) -> None:
        for line in iter(self.stream.readline, b""):
            text = line.decode(errors="replace")
            if text.startswith(_END):
                self.ended.set()
                continue
            self.buf = (self.buf + line)[-TAIL_BYTES:]
            log = _runlog.current()
            if log is not None:
                log.write(f"[{self.label}] {text if text.endswith(chr(10)) else text + chr(10)}")


def _tail(text: str) -> str:
    return "\n".join(text.rstrip().splitlines()[-TAIL_LINES:])


class Pool:
    """Long-lived workers, keyed by environment; at most ``idle`` are kept between jobs.

    Thread-safe: several threads may :meth:`run` at once; each job gets a worker of its own.
    """

    def __init__(self, idle: int = IDLE) -> None:
        self.idle_limit = idle
        self.idle: list[tuple[tuple, Worker]] = []
        self.lock = threading.Lock()
        self.closed = False

    def run(self, target: str, kwargs: dict[str, Any] | None = None, *,
            env: dict[str, str] | None = None, timeout: float = 600.0, label: str = "",
            warm: tuple[str, ...] = (), draws: bool = False, any_backend: bool = False) -> Any:
        """Run a job on a worker with ``env`` (see :meth:`Worker.call`); an idle worker that
        has imported the job's ``warm`` modules already is taken first. A job that ``draws``
        progress gets a worker started on the caller's current terminal; other jobs never
        touch it, so any worker of the environment serves them. A job that does not use
        Keras (``any_backend``) may take a worker of any Keras backend: a conversion from a
        SavedModel then runs where TensorFlow was imported to write it, and one from a
        ``torch.export`` program where torch was (each worker less saves seconds of imports)."""
        key = _key(env)
        key, w = self._take(key, set(warm), _terminal_identity() if draws else None,
                            any_backend) or (key, Worker(env))
        ok = False
        try:
            result = w.call(target, kwargs, timeout=timeout, label=label)
            ok = True
            w.warm.update(warm)
            return result
        except WorkerError as e:
            ok = not isinstance(e, (WorkerCrashed, WorkerTimeout))
            raise
        finally:
            self._give(key, w, ok)

    def _take(self, key: tuple, warm: set[str], terminal: tuple | int | None,
              any_backend: bool = False) -> tuple[tuple, Worker] | None:
        """The idle worker for ``key`` (and ``terminal``, unless ``None``; of any Keras backend
        with ``any_backend``) that has imported most of ``warm`` (a TensorFlow or PyTorch
        import costs seconds; without this, every worker ended up paying for every
        framework); on a tie, one of ``key`` itself. It comes with its own key, under which
        it goes back to the pool."""
        same = _sans_backend(key) if any_backend else key
        with self.lock:
            fits = [(len(warm & w.warm), k == key, i) for i, (k, w) in enumerate(self.idle)
                    if (k == key or (any_backend and _sans_backend(k) == same))
                    and w.alive and terminal in (None, w.terminal)]
            if not fits:
                return None
            return self.idle.pop(max(fits)[2])

    def _give(self, key: tuple, w: Worker, ok: bool) -> None:
        if not ok or not w.alive or w.jobs >= MAX_JOBS or self.closed:
            w.close()
            return
        with self.lock:
            self.idle.append((key, w))
            evict = self.idle[:-self.idle_limit] if len(self.idle) > self.idle_limit else []
            del self.idle[:len(evict)]
        for _, old in evict:
            old.close()

    def close(self, kill: bool = False) -> None:
        """Stop every idle worker (busy ones stop when their job ends); ``kill``: at once
        (Ctrl-C), not after their frameworks' exit handlers (seconds each)."""
        with self.lock:
            self.closed, workers, self.idle = True, self.idle, []
        for _, w in workers:
            if kill:
                w.kill()
            else:
                w.close()


# Variables that change while the caller runs but do not shape a worker: a test runner's, and
# those TensorFlow, PyTorch and Keras set on import in this process (a worker's own imports set
# them again). Keyed on, they made every framework import here start a new set of workers: an
# export after the first paid all its workers' framework imports again.
_VOLATILE = ("PYTEST_CURRENT_TEST", "TF_CPP_MIN_LOG_LEVEL", "TF2_BEHAVIOR",
             "ENABLE_RUNTIME_UPTIME_TELEMETRY", "TPU_ML_PLATFORM", "TPU_ML_PLATFORM_VERSION",
             "TPU_SKIP_MDS_QUERY", "HDF5_PLUGIN_PATH", "KMP_DUPLICATE_LIB_OK",
             "KMP_INIT_AT_FORK", "TORCHINDUCTOR_CACHE_DIR", "RAY_CLIENT_MODE")


def _key(env: dict[str, str] | None) -> tuple:
    """Workers are interchangeable when everything that shapes the process is equal (the
    terminal only for jobs that draw on it: see :meth:`Pool.run`). Keyed on the terminal, a
    test process, whose terminal changes between tests, started a new set of workers at each
    change."""
    full = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in _VOLATILE}
    return tuple(sorted(full.items())), os.getcwd()


def _sans_backend(key: tuple) -> tuple:
    """A worker's key without its Keras backend."""
    env, cwd = key
    return tuple(item for item in env if item[0] != "KERAS_BACKEND"), cwd


def _terminal_identity() -> tuple[int, int] | int:
    """Which file the terminal a worker draws progress on is, not its descriptor's number:
    each command run in one process takes a new duplicate of the same terminal (and a number
    may be reused for another file), which started a fresh set of workers per command."""
    fd = _runlog.terminal_fd()
    try:
        st = os.fstat(fd)
    except OSError:
        return fd
    return st.st_dev, st.st_ino


_active: Pool | None = None


@contextlib.contextmanager
def pool(idle: int = IDLE) -> Iterator[Pool]:
    """Reuse worker processes until the block ends (``deploykit.workers()`` from the API).

    Nested blocks share the outermost pool, so an export inside a what-if run reuses the
    workers the run has already started. The workers stop when the outermost block ends.

    Args:
        idle: how many idle workers to keep between jobs (the least recently used go first).

    Yields:
        The :class:`Pool`.
    """
    global _active
    if _active is not None:
        yield _active
        return
    _active = Pool(idle)
    interrupted = False
    try:
        with abort_on_ctrl_c():
            yield _active
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        p, _active = _active, None
        p.close(kill=interrupted)


def keep_pool(idle: int = IDLE) -> Pool:
    """Open a pool for the rest of this process's life unless one is open: a Ray worker's
    tasks (:mod:`deploykit.cluster`) reuse its warm workers. They end with this process (their
    input closes)."""
    global _active
    if _active is None:
        _active = Pool(idle)
    return _active


def run(target: str, kwargs: dict[str, Any] | None = None, *, env: dict[str, str] | None = None,
        timeout: float = 600.0, label: str = "", warm: tuple[str, ...] = (),
        draws: bool = False, any_backend: bool = False) -> Any:
    """Run ``target(**kwargs)`` on the open :func:`pool`'s workers, else in a process of its own.

    Args:
        target: ``"module:function"``.
        kwargs: its keyword arguments (JSON-serialisable).
        env: extra environment variables for the worker (e.g. ``KERAS_BACKEND``).
        timeout: seconds the job may take.
        label: the job's name in the run log and in errors.
        warm: the modules the job imports (an open pool prefers a worker that has them).
        draws: the job draws progress on the caller's terminal (a pooled worker must have
            been started on the terminal the caller has now).
        any_backend: the job does not use Keras, so a pooled worker of any Keras backend
            serves it.

    Returns:
        The function's JSON result.

    Raises:
        WorkerError, WorkerCrashed, WorkerTimeout: see :meth:`Worker.call`.
    """
    if _active is not None:
        return _active.run(target, kwargs, env=env, timeout=timeout, label=label, warm=warm,
                           draws=draws, any_backend=any_backend)
    return run_in_worker(target, kwargs, env=env, timeout=timeout, label=label)


def run_in_worker(target: str, kwargs: dict[str, Any] | None = None, *,
                  env: dict[str, str] | None = None, timeout: float = 600.0,
                  label: str = "") -> Any:
    """Call ``target(**kwargs)`` in a new process of its own and return its JSON result.

    Args:
        target, kwargs, env, timeout, label: as for :func:`run`.

    Returns:
        The function's JSON result.

    Raises:
        WorkerError, WorkerCrashed, WorkerTimeout: see :meth:`Worker.call`.
    """
    w = Worker(env)
    try:
        return w.call(target, kwargs, timeout=timeout, label=label)
    finally:
        w.close()


# -- the worker process ---------------------------------------------------------------------------
def _serve() -> int:
    """Answer JSON-line requests from stdin until it closes.

    The jobs' temporary files go to a folder of this process's own, removed when it ends, or
    by the next worker on this host when it is killed: TensorFlow removes the modules its
    autograph writes only at a normal exit, and Ray kills a Ray worker's children with it
    (they piled up in /tmp on every node)."""
    from deploykit._lazy import skip_unused_imports

    skip_unused_imports()
    results = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever the job prints goes to stderr, which the caller logs
    with scratch("deploykit-worker") as tmp:
        tempfile.tempdir = os.environ["TMPDIR"] = str(tmp)
        for line in sys.stdin:
            request = json.loads(line)
            out = _call(request["target"], request["kwargs"])
            sys.stdout.flush()
            sys.stderr.write(f"{_END}\n")
            sys.stderr.flush()
            results.write(json.dumps(out) + "\n")
    return 0


def _call(target: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    module, _, name = target.partition(":")
    start = time.perf_counter()
    try:
        value = getattr(importlib.import_module(module), name)(**kwargs)
        return {"ok": True, "value": value, "seconds": time.perf_counter() - start}
    except Exception as e:  # every failure goes back to the caller, typed
        tb = traceback.format_exc()
        sys.stderr.write(tb)  # the run log keeps the whole traceback
        return {"ok": False, "type": type(e).__name__, "message": str(e), "traceback": tb}


if __name__ == "__main__":
    sys.exit(_serve())
