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
