"""Shared test helpers. Every test runs against the installed package (``make test``)."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # shared.py, for the controller too

# Two test processes run at once (xdist -n 2) and each export converts two cells at once, on
# two cores: OpenMP threads spinning on oversubscribed cores made a 5 s torch training take
# 300 s. One math thread per process (set before any test imports torch or TensorFlow).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

# torchao (pulled in by executorch) registers enums with torch's pytree on import, and torch
# logs a deprecation warning per enum. deploykit quiets that logger for the imports it makes
# (_lazy.NOISY_ON_IMPORT); a test process that imports executorch another way printed the
# line between two tests' captures. A filter, unlike a level, survives torch resetting its
# loggers' levels.
logging.getLogger("torch.utils._pytree").addFilter(lambda r: r.levelno >= logging.ERROR)

HEAVY = ("tensorflow", "torch", "keras", "executorch", "jax", "ray")
TESTS = Path(__file__).parent


def run_cli(*args: str, timeout: float = 600, env: dict | None = None
            ) -> subprocess.CompletedProcess:
    """Run ``python -m deploykit ARGS`` in a fresh process and capture its output."""
    return subprocess.run([sys.executable, "-m", "deploykit", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="session", autouse=True)
def shared_workers():
    """Worker processes live for the whole test process, as they do for one what-if run:
    each edge test then pays for its framework imports once, not once per edge."""
    from deploykit import worker

    with worker.pool():
        yield


@pytest.fixture
def tests_on_path(monkeypatch):
    """Let worker processes import helper modules from tests/. Their workers cannot serve
    other tests (another environment), so the test also leaves the session's pool alone:
    a ``worker.pool()`` in it opens a pool of its own, closed when its block ends (in the
    session's, such workers evicted warm ones, which the next test started again)."""
    from deploykit import worker

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setattr(worker, "_active", None)


DEVICE_VENVS = TESTS.parent / "test-artifacts" / "device-venvs.txt"


_prebuild = None


def pytest_sessionstart(session):
    """In the controller, once per run: on a full run, start the shared what-if run and the
    model zoo in the background so the tests that read them find them (nearly) done."""
    global _prebuild
    if hasattr(session.config, "workerinput"):
        return
    DEVICE_VENVS.unlink(missing_ok=True)
    full = [str(TESTS) if a == "tests" else a for a in session.config.args] in ([], [str(TESTS)])
    if full and "slow" not in (session.config.getoption("markexpr") or ""):
        import shared

        _prebuild = shared.prebuild()


# Files that read the shared what-if run go last, so on a full run the run started by the
# controller (see above) is done by the time they start, instead of a worker waiting for it
# (a hand-kept list missed three readers: test_bundle_predict's first test waited 130 s).
READS_WHATIF = re.compile(r"\bshared\.(digits|whatif_run)\(")


def pytest_collection_modifyitems(items):
    """What-if readers last (above); within each group, files marked ``waits`` first, so
    the other process's work fills the cores while they wait (test_ray last left a core
    idle for most of the run's last two minutes)."""
    reads = {p: bool(READS_WHATIF.search(p.read_text())) for p in {i.path for i in items}}
    items.sort(key=lambda item: (reads[item.path], item.get_closest_marker("waits") is None))


def pytest_sessionfinish(session):
    if _prebuild is not None and _prebuild.poll() is None:  # nothing asked for it after all
        os.killpg(_prebuild.pid, signal.SIGKILL)  # its what-if or zoo build with it
        _prebuild.wait()


def pytest_terminal_summary(terminalreporter):
    """Report the device-like virtual environments' sizes the package tests measured."""
    if DEVICE_VENVS.exists():
        terminalreporter.section("device environments")
        terminalreporter.write(DEVICE_VENVS.read_text())
