from __future__ import annotations

import pytest

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


def test_worker_crash_is_reported_with_signal_and_stderr(tests_on_path):
    with pytest.raises(WorkerCrashed) as e:
        run_in_worker("_worker_targets:segfault")
    assert "SIGSEGV" in str(e.value) and "about to crash" in str(e.value)


def test_worker_timeout_kills_it(tests_on_path):
    with pytest.raises(WorkerTimeout, match="timed out after 2 s"):
        run_in_worker("_worker_targets:hang", timeout=2)


def test_worker_unknown_target_is_an_error():
    with pytest.raises(WorkerError, match="ModuleNotFoundError"):
        run_in_worker("deploykit_nonexistent_module:f")
