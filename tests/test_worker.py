from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from deploykit import _runlog, worker
from deploykit.errors import WorkerCrashed, WorkerError, WorkerTimeout
from deploykit.worker import run_in_worker


def test_worker_returns_value_and_sees_its_env(tests_on_path):
    out = run_in_worker("_worker_targets:add", {"a": 2, "b": 3}, env={"KERAS_BACKEND": "torch"})
    assert out == {"sum": 5, "backend": "torch"}


def test_worker_exception_comes_back_typed(tests_on_path):
    with pytest.raises(WorkerError) as e:
        run_in_worker("_worker_targets:fail")
    assert e.value.error_type == "ValueError"
    assert "bad value from worker" in str(e.value)
    assert "Traceback" in e.value.traceback
    assert "bad value from worker" in e.value.log_tail  # the traceback is in its output too


def test_worker_crash_is_reported_with_signal_and_its_output(tests_on_path):
    with pytest.raises(WorkerCrashed) as e:
        run_in_worker("_worker_targets:segfault")
    assert "SIGSEGV" in str(e.value) and "about to crash" in e.value.log_tail


def test_worker_timeout_kills_it(tests_on_path):
    with pytest.raises(WorkerTimeout, match="timed out after 2 s"):
        run_in_worker("_worker_targets:hang", timeout=2)


CTRL_C = """
import faulthandler, os, signal, sys, time
from concurrent.futures import ThreadPoolExecutor
from deploykit import worker
faulthandler.register(signal.SIGUSR1)  # the test's view of a hang: every thread's stack
# SIGINT as a terminal starts a program: full runs of the suite hand it on ignored or blocked
# now and then (a hang with the main thread still in its loop below); say which, for a failure
inherited = signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, [])
print("SIGINT as inherited:", inherited, file=sys.stderr, flush=True)
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
files = sys.argv[1:]
with worker.pool() as p, ThreadPoolExecutor(2) as ex:
    jobs = [ex.submit(p.run, "_worker_targets:pid_then_hang", {"path": f}) for f in files]
    while not all(os.path.exists(f) and os.path.getsize(f) for f in files):
        time.sleep(0.1)
    print("both running", flush=True)
    while True:
        time.sleep(1)
"""


def test_ctrl_c_stops_the_jobs_in_flight_not_after_them(tests_on_path, tmp_path):
    """Two jobs of 600 s run in a pool's workers (their own process groups: the terminal's
    Ctrl-C does not reach them), waited on by threads. Leaving the thread pool waited for
    both to end; now SIGINT kills them and the interrupt comes through at once."""
    import signal

    files, errors = [str(tmp_path / "a"), str(tmp_path / "b")], tmp_path / "stderr"
    with errors.open("w") as stderr:  # a file: a pipe's end is whoever holds a copy of it
        proc = subprocess.Popen([sys.executable, "-c", CTRL_C, *files], stdout=subprocess.PIPE,
                                stderr=stderr, text=True)
    assert proc.stdout.readline() == "both running\n", errors.read_text()
    proc.stdout.close()
    pids = [int(Path(f).read_text()) for f in files]
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=120)  # the jobs would take 600 s
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
        for pid in [proc.pid, *pids]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        pytest.fail(f"SIGINT waited for the jobs in flight:\n{errors.read_text()[-6000:]}")
    err = errors.read_text()
    assert proc.returncode == -signal.SIGINT and err.rstrip().endswith("KeyboardInterrupt"), \
        err[-2000:]
    for pid in pids:  # killed, not left running on their own
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_job_that_starts_after_ctrl_c_is_stopped_at_once(monkeypatch):
    """A thread that registered its job just after SIGINT's abort had looked (it had sent the
    job, or was about to) waited for that job to end: the Ctrl-C test above hung for its
    whole timeout now and then on a busy machine. Such a job is stopped as it registers."""
    import threading

    from deploykit import _interrupt

    monkeypatch.setattr(_interrupt, "_aborting", threading.Event())  # this test's own
    stopped: list[str] = []
    with _interrupt.abortable(lambda: stopped.append("running")):
        _interrupt.abort_running()  # Ctrl-C
    assert stopped == ["running"]
    with _interrupt.abortable(lambda: stopped.append("late")):
        assert stopped == ["running", "late"]


def test_worker_unknown_target_is_an_error():
    with pytest.raises(WorkerError, match="ModuleNotFoundError"):
        run_in_worker("deploykit_nonexistent_module:f")


def test_a_workers_temporary_files_go_with_it_even_when_it_is_killed(tests_on_path, tmp_path,
                                                                     monkeypatch):
    """A job's temporary files (TensorFlow's autograph leaves its generated modules for an exit
    handler) live in the worker's own folder: gone when the worker ends, and when it is killed,
    gone once the next worker on this host starts."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    done = Path(run_in_worker("_worker_targets:temp_file"))
    assert done.parent.parent == tmp_path and done.parent.name.startswith("deploykit-worker-")
    assert not done.parent.exists()
    w = worker.Worker()
    killed = Path(w.call("_worker_targets:temp_file"))
    w.kill()
    assert killed.exists()  # nothing of that process ran after the signal
    later = Path(run_in_worker("_worker_targets:temp_file"))
    assert not killed.parent.exists() and later.parent != killed.parent
    assert list(tmp_path.iterdir()) == []


def test_pool_reuses_a_worker_per_environment(tests_on_path):
    with worker.pool():
        first = worker.run("_worker_targets:pid")
        assert worker.run("_worker_targets:pid") == first  # the same process, imports kept
        other = worker.run("_worker_targets:pid", env={"KERAS_BACKEND": "torch"})
        assert other != first
        assert worker.run("_worker_targets:add", {"a": 1, "b": 1},
                          env={"KERAS_BACKEND": "torch"})["backend"] == "torch"
        with worker.pool():  # a nested block shares the outer pool's workers
            assert worker.run("_worker_targets:pid") == first
    assert run_in_worker("_worker_targets:pid") not in (first, other)  # a process of its own


def test_a_job_without_keras_takes_a_worker_of_any_backend(tests_on_path):
    """A conversion that does not use Keras runs in an idle worker of another Keras backend
    (the one that imported its framework); a Keras job still gets a worker of its own
    backend only."""
    with worker.pool():
        on_torch = worker.run("_worker_targets:pid", env={"KERAS_BACKEND": "torch"},
                              warm=("torch",))
        assert worker.run("_worker_targets:pid", env={}, warm=("torch",),
                          any_backend=True) == on_torch
        assert worker.run("_worker_targets:pid", env={}) != on_torch  # not without any_backend
        assert worker.run("_worker_targets:pid", env={"KERAS_BACKEND": "tensorflow"},
                          any_backend=False) != on_torch


def test_pool_prefers_warm_workers_and_ignores_variables_framework_imports_set(tests_on_path,
                                                                              monkeypatch):
    """A job goes to the idle worker that has imported what it needs; TensorFlow setting
    variables on import in this process does not retire every worker."""
    with worker.pool(), ThreadPoolExecutor(2) as threads:
        tf, torch = threads.map(lambda w: worker.run("_worker_targets:slow_pid", warm=(w,)),
                                ["tensorflow", "torch"])
        assert tf != torch  # two jobs at once: two workers
        monkeypatch.setenv("TPU_SKIP_MDS_QUERY", "set-by-an-import-in-the-test")
        assert worker.run("_worker_targets:pid", warm=("torch",)) == torch
        assert worker.run("_worker_targets:pid", warm=("tensorflow",)) == tf


@pytest.mark.slow  # imports every framework in a fresh process
def test_framework_imports_in_the_caller_leave_its_workers_usable():
    """What TensorFlow, PyTorch, ExecuTorch, Ray and the runtimes set in the environment on
    import does not change which workers fit (in a fresh process: this one has imported
    them already). Two variables TensorFlow sets and one Ray sets were missing from the
    list, and a test process started new workers once it imported TensorFlow itself."""
    code = ("import json\nfrom deploykit import worker\nkey = worker._key(None)\n"
            "import tensorflow, executorch.runtime, ray\n"  # torch, through executorch
            "print(json.dumps(key == worker._key(None)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "true", r.stdout


@pytest.mark.slow  # imports TensorFlow and Keras in a fresh worker
def test_a_worker_imports_tensorflow_and_keras_without_what_deploykit_never_uses(tests_on_path):
    """TensorFlow and Keras import jax, pandas, scikit-learn and scipy for features deploykit
    never uses (1.6 CPU-s in each worker); a worker skips those imports, and each module still
    imports for anyone else (litert-torch uses jax, the scikit-learn converters sklearn)."""
    out = run_in_worker("_worker_targets:unused_after_frameworks",
                        env={"KERAS_BACKEND": "tensorflow"})
    assert out == {"imported_by_frameworks": [],
                   "importable": ["jax", "pandas", "scipy", "sklearn"]}


def test_pool_keeps_workers_across_commands_and_terminals(tests_on_path, tmp_path):
    """Each command run in one process (the CLI's ``capture``) takes a new duplicate of the
    terminal: its workers carry on. On another terminal they still take jobs that do not
    draw; a job that draws progress gets a worker started on the terminal it draws on."""
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    with worker.pool():
        with _runlog.capture(first):
            one = worker.run("_worker_targets:pid", draws=True)
        with open(tmp_path / "other", "w") as elsewhere, _runlog.capture(second):
            assert worker.run("_worker_targets:pid", draws=True) == one
            os.dup2(elsewhere.fileno(), 2)  # another terminal
            with _runlog.capture(tmp_path / "third.log"):
                assert worker.run("_worker_targets:pid") == one
                drawing = worker.run("_worker_targets:pid", draws=True)
                assert drawing != one
                assert worker.run("_worker_targets:pid", draws=True) == drawing


@pytest.mark.parametrize("job, error", [("segfault", WorkerCrashed), ("hang", WorkerTimeout)])
def test_pool_crash_or_hang_costs_only_that_job(tests_on_path, job, error):
    with worker.pool():
        before = worker.run("_worker_targets:pid")
        with pytest.raises(error):
            worker.run(f"_worker_targets:{job}", timeout=3)
        after = worker.run("_worker_targets:pid")  # a fresh worker answers the next job
        assert after != before
        assert worker.run("_worker_targets:add", {"a": 2, "b": 2})["sum"] == 4


def test_pool_error_keeps_the_worker(tests_on_path):
    with worker.pool():
        before = worker.run("_worker_targets:pid")
        with pytest.raises(WorkerError, match="bad value"):
            worker.run("_worker_targets:fail")
        assert worker.run("_worker_targets:pid") == before


def test_worker_output_goes_to_the_run_log_with_its_label(tests_on_path, tmp_path, capfd):
    log = tmp_path / "run.log"
    with _runlog.capture(log, verbose=False), worker.pool():
        assert worker.run("_worker_targets:noisy", label="edge_x") == "quiet result"
    out, err = capfd.readouterr()
    text = log.read_text()
    for line in ("python stdout line", "python stderr line", "I0000 c-level stderr line"):
        assert f"[edge_x] {line}" in text
        assert line not in out + err  # nothing reached the terminal
