"""Progress and messages for long work, silenced by ``quiet``.

Thin wrapper over rich so the rest of the code says *what* progresses, not how it is drawn.
Progress goes to the user's stderr (also from worker processes, and while framework output is
redirected to the run log: see :mod:`deploykit._runlog`), so stdout stays clean for tables.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Reporter:
    """Prints progress bars and one-line messages unless ``quiet``."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self._console = None

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            from deploykit._runlog import terminal_err

            self._console = Console(file=terminal_err(), highlight=False)
        return self._console

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message)

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[..., None]]:
        """Yield ``advance(n=1, status="")``, which moves a bar and shows a short status."""
        if self.quiet:
            yield lambda n=1, status="": None
            return
        progress = _live_progress(self.console)
        tid = progress.add_task(description, total=total, status="")

        def advance(n: int = 1, status: str = "") -> None:
            progress.update(tid, advance=n, status=status)

        try:
            yield advance
        finally:
            _release(progress)


# One live display per process: rich allows no more, and exports on a Ray cluster run several
# bars at once (one per model). Each task() adds its row; the display stops with the last one.
_live: list = []  # [progress, users] while a display is up
_live_lock = threading.Lock()


def _live_progress(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with _live_lock:
        if not _live:
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), TextColumn("{task.fields[status]}"))
            progress = Progress(*columns, console=console, transient=False)
            progress.start()
            _live.extend([progress, 0])
        _live[1] += 1
        return _live[0]


def _release(progress) -> None:
    with _live_lock:
        _live[1] -= 1
        if _live[1] == 0:
            _live.clear()
            progress.stop()
