"""Functions run by tests/test_worker.py inside worker processes."""

import os
import signal
import sys
import time


def add(a, b):
    return {"sum": a + b, "backend": os.environ.get("KERAS_BACKEND")}


def fail():
    raise ValueError("bad value from worker")


def segfault():
    print("about to crash", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)


def hang():
    time.sleep(600)


def pid():
    return os.getpid()


def noisy():
    """Print the way frameworks do: Python stdout and stderr, and C-level writes to fd 2."""
    print("python stdout line", flush=True)
    print("python stderr line", file=sys.stderr, flush=True)
    os.write(2, b"I0000 c-level stderr line\n")
    return "quiet result"


def slow_pid():
    """The pid after a pause, so two jobs started together need two workers."""
    time.sleep(1)
    return os.getpid()


def temp_file():
    """A temporary file left for an exit handler to remove, as TensorFlow's autograph does."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".py", delete=False) as f:
        f.write(b"# generated\n")
    return f.name


def unused_after_frameworks():
    """Which of the modules deploykit's processes skip (``_lazy.UNUSED_ON_IMPORT``) importing
    TensorFlow and Keras imported, and whether each imports when asked for afterwards."""
    import importlib

    import keras  # noqa: F401
    import tensorflow  # noqa: F401

    skipped = ("jax", "pandas", "sklearn", "scipy")
    imported = sorted(m for m in skipped if m in sys.modules)
    return {"imported_by_frameworks": imported,
            "importable": sorted(m for m in skipped if importlib.import_module(m))}


def pid_then_hang(path):
    """Write this worker's pid to ``path``, then hang (a long conversion)."""
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)
