"""Ctrl-C stops the work in flight at once, not when it ends.

Conversions run in worker processes (their own process group, so the terminal's SIGINT does
not reach them) or as Ray tasks, waited on by threads. Python raises KeyboardInterrupt in the
main thread only; leaving a thread pool then waits for every running job, so an interrupted
export took 20-60 s to stop, saying nothing. Whatever waits on a job registers how to stop it
(:func:`abortable`); under :func:`abort_on_ctrl_c`, SIGINT stops them all, and the threads
waiting on them return at once with the error of a killed job while the interrupt unwinds.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

_stops: dict[int, Callable[[], None]] = {}
_lock = threading.Lock()
_aborting = threading.Event()  # set by Ctrl-C, until its abort_on_ctrl_c block ends


@contextlib.contextmanager
def abortable(stop: Callable[[], None]) -> Iterator[None]:
    """Within the block, :func:`abort_running` calls ``stop`` (it must not block long). A
    block entered after it ran (a thread that was about to start its job when Ctrl-C came)
    calls ``stop`` at once: that job waited to its end."""
    token = object()
    with _lock:
        _stops[id(token)] = stop
        late = _aborting.is_set()
    try:
        if late:
            with contextlib.suppress(Exception):
                stop()
        yield
    finally:
        with _lock:
            _stops.pop(id(token), None)


def abort_running() -> None:
    """Stop every job registered by :func:`abortable`, and those registered from now on
    (errors are the job's to report)."""
    with _lock:
        _aborting.set()
        stops = list(_stops.values())
    for stop in stops:
        with contextlib.suppress(Exception):
            stop()


def _on_sigint(signum: int, frame) -> None:
    # in a thread: killing or cancelling is not work for a signal handler
    threading.Thread(target=abort_running, name="deploykit-abort", daemon=True).start()
    raise KeyboardInterrupt


@contextlib.contextmanager
def abort_on_ctrl_c() -> Iterator[None]:
    """SIGINT stops the registered jobs, then raises KeyboardInterrupt as usual. Only in the
    main thread, and only over Python's own handler (a caller's own handler is left alone)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _aborting.clear()
