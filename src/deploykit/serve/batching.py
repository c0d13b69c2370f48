"""Dynamic batching: concurrent requests to one artifact become one runtime call.

The first request to arrive while none is waiting leads: it waits ``window`` seconds (or
until ``max_rows`` rows have gathered), takes every request queued by then, runs their rows
as one batch and hands each its own rows back. Requests are validated one by one first, so
a bad request fails alone; requests whose rows differ in shape (sequence lengths) run as
separate batches. It needs a server that handles requests concurrently (threads); whether
it pays depends on the model (benchmarks/bench_serve.py --batch-window-ms measures it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

Arrays = dict[str, np.ndarray]


@dataclass
class _Job:
    arrays: Arrays
    done: threading.Event = field(default_factory=threading.Event)
    result: Arrays | None = None
    error: BaseException | None = None

    @property
    def rows(self) -> int:
        return len(next(iter(self.arrays.values())))

    @property
    def kind(self) -> tuple:
        return tuple((k, v.shape[1:], v.dtype.str) for k, v in self.arrays.items())


class Batcher:
    """Wraps ``predict`` (named arrays in, named arrays out, rows along axis 0)."""

    def __init__(self, predict: Callable[[Arrays], Arrays], window_s: float,
                 max_rows: int) -> None:
        self.predict = predict
        self.window = window_s
        self.max_rows = max_rows
        self.lock = threading.Lock()
        self.queue: list[_Job] = []
        self.rows = 0
        self.leading = False
        self.full = threading.Event()

    def __call__(self, arrays: Arrays) -> Arrays:
        job = _Job(arrays)
        with self.lock:
            self.queue.append(job)
            self.rows += job.rows
            lead, self.leading = not self.leading, True
            if self.rows >= self.max_rows:
                self.full.set()
        if lead:
            self.full.wait(self.window)
            with self.lock:
                jobs, self.queue, self.rows, self.leading = self.queue, [], 0, False
                self.full.clear()
            self._run(jobs)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def _run(self, jobs: list[_Job]) -> None:
        groups: dict[tuple, list[_Job]] = {}
        for j in jobs:
            groups.setdefault(j.kind, []).append(j)
        for group in groups.values():
            try:
                self._run_group(group)
            except BaseException as e:  # every waiting request gets the error, none hangs
                for j in group:
                    j.error = e
            finally:
                for j in group:
                    j.done.set()

    def _run_group(self, group: list[_Job]) -> None:
        if len(group) == 1:
            group[0].result = self.predict(group[0].arrays)
            return
        names = list(group[0].arrays)
        out = self.predict({k: np.concatenate([j.arrays[k] for j in group]) for k in names})
        start = 0
        for j in group:
            j.result = {k: v[start:start + j.rows] for k, v in out.items()}
            start += j.rows
