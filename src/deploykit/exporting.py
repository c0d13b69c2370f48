"""Export: any model in, a bundle of verified deployment artifacts out.

``export(model, targets="all", out=...)`` detects the source, plans a route on the
conversion graph to each target, runs every edge in a worker process (a crash, an
exception or a time-out fails only the cells that need that edge), runs each artifact in
its own runtime on the probe set, and writes the bundle atomically with the parity results.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from deploykit import graph
from deploykit._progress import Reporter
from deploykit.bundle import SCHEMA, BundleWriter, load_bundle, tree_size
from deploykit.errors import DeploykitError, ExportError, NoRouteError
from deploykit.parity import ParityResult, Probe, check
from deploykit.sources import Source, detect

LATENCY_RUNS = 30


@dataclass
class Cell:
    """One target's outcome: ``pass``, ``fail`` (parity), ``error`` (conversion) or ``n/a``.

    ``reason`` is kept whole (exception type and message, or every parity failure);
    ``log_tail`` holds the last lines the failing converter printed.
    """

    target: str
    status: str
    route: list[str] = field(default_factory=list)
    reason: str | None = None
    parity: dict[str, Any] | None = None
    bytes: int | None = None
    latency_ms: float | None = None
    log_tail: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # convert, verify, latency

    @property
    def summary(self) -> str:
        return self.reason or ""

    def failure(self) -> dict[str, Any]:
        """The manifest's record of a failed or errored cell."""
        return {"target": self.target, "status": self.status, "route": self.route,
                "reason": self.reason, "log_tail": self.log_tail}


@dataclass
class ExportReport:
    bundle: Path | None
    source: dict[str, Any]
    cells: list[Cell]
    timings: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every requested target that has a route produced a passing artifact."""
        return all(c.status in ("pass", "n/a") for c in self.cells)

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": str(self.bundle) if self.bundle else None, "source": self.source,
                "cells": [asdict(c) for c in self.cells], "timings": self.timings}


def resolve_targets(targets: str | list[str] | tuple[str, ...]) -> list[str]:
    graph.load_registry()
    if isinstance(targets, str):
        targets = [t for t in graph.TARGETS if t in graph.NODES] if targets == "all" else \
            [t.strip() for t in targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in graph.NODES or not graph.NODES[t].is_target]
    if unknown or not targets:
        known = ", ".join(n for n, v in graph.NODES.items() if v.is_target)
        raise ExportError(f"unknown target(s) {unknown or '(none given)'}: use 'all' or some of "
                          f"{known}")
    return list(targets)


def default_lanes() -> int:
    """Cells converted and verified at once: one per core, at most two (memory)."""
    return max(1, min(2, os.cpu_count() or 1))


def export(model: Any, targets: str | list[str] = "all", *, out: str | Path,
           sample: np.ndarray | None = None, task: str | None = None,
           labels: list[str] | None = None, quiet: bool = False, timeout: float = 600.0,
           lanes: int | None = None) -> ExportReport:
    """Export ``model`` to ``targets``, verify every artifact, and write the bundle ``out``.

    Converters run in reused worker processes, ``lanes`` cells at a time (default: one per
    core, at most two); latency is measured afterwards, one artifact at a time.

    Returns the :class:`ExportReport`; targets without a route are ``n/a`` cells naming
    what is reachable, failed conversions are ``error`` cells with the whole reason.
    """
    from deploykit.worker import pool

    wanted = resolve_targets(targets)
    report = Reporter(quiet)
    t0 = time.perf_counter()
    source = detect(model if not isinstance(model, (str, Path)) else Path(model).resolve(),
                    sample=sample, task=task, labels=labels)
    probe = Probe({source.signature.inputs[0].name: source.probe_inputs}, source.reference,
                  source.y, source.task)
    writer = BundleWriter(Path(out).resolve())
    timings: dict[str, Any] = {"source": time.perf_counter() - t0}
    try:
        with pool():
            cells, artifacts = _Build(source, wanted, writer, probe, timeout,
                                      lanes or default_lanes()).run(report, timings)
        t = time.perf_counter()
        manifest = _manifest(source, writer.add_probe(probe), artifacts,
                             [c.failure() for c in cells if c.status in ("fail", "error")])
        bundle = writer.commit(manifest)
        timings["write"] = time.perf_counter() - t
    except BaseException:
        writer.abort()
        raise
    timings["total"] = time.perf_counter() - t0
    return ExportReport(bundle, manifest["source"], cells,
                        {k: round(v, 3) if isinstance(v, float) else v for k, v in timings.items()})


class _Build:
    """Converts along every route (each edge once, ``lanes`` at a time, an edge as soon as its
    input exists), verifies each artifact as it arrives, then measures latency serially."""

    def __init__(self, source: Source, wanted: list[str], writer: BundleWriter, probe: Probe,
                 timeout: float, lanes: int) -> None:
        self.source, self.wanted, self.writer, self.probe = source, wanted, writer, probe
        self.timeout, self.lanes = timeout, lanes
        self.work = writer.root / ".work"
        self.routes: dict[str, list[graph.Edge]] = {}
        self.cells: dict[str, Cell] = {}
        self.runners: dict[str, Any] = {}
        self.arts: dict[str, dict[str, Any]] = {}
        self.edge_seconds: dict[str, float] = {}

    def run(self, report: Reporter, timings: dict[str, Any]):
        for t in self.wanted:
            try:
                self.routes[t] = graph.plan(self.source.node, t)
            except NoRouteError as e:
                self.cells[t] = Cell(t, "n/a", reason=str(e))
        ctx = self._context()
        try:
            with report.task(f"export {self.source.name}", total=len(self.wanted)) as advance:
                advance(len(self.cells))
                start = time.perf_counter()
                self._convert_all(ctx, advance)
                timings["convert_verify"] = time.perf_counter() - start
                start = time.perf_counter()
                self._measure_latency()
                timings["latency"] = time.perf_counter() - start
        finally:
            for runner in self.runners.values():  # left open only when something raised
                runner.close()
        timings["edges"] = {e.name: round(self.edge_seconds[e.dst], 3)
                            for e in {e for r in self.routes.values() for e in r}
                            if e.dst in self.edge_seconds}
        shutil.rmtree(self.work)
        cells = [self.cells[t] for t in self.wanted]
        return cells, [self.arts[t] for t in self.wanted if t in self.arts]

    def _context(self) -> graph.EdgeContext:
        (self.work / self.source.node).mkdir(parents=True)
        self.produced: dict[str, tuple[Path, dict[str, Any]]] = {self.source.node: (
            self.work / self.source.node, {"file": self.source.write(self.work / self.source.node)})}
        self.failed: dict[str, tuple[str, str | None]] = {}  # node -> (reason, log tail)
        calib = self.work / "calibration.npy"
        src = self.source
        np.save(calib, (src.calibration if src.calibration is not None
                        else src.probe_inputs).astype(np.float32))
        return graph.EdgeContext(src.signature.to_dict(), str(calib))

    def _convert_all(self, ctx: graph.EdgeContext, advance) -> None:
        needed: dict[str, graph.Edge] = {}
        for route in self.routes.values():
            for e in route:
                needed.setdefault(e.dst, e)
        started: set[str] = set()
        with ThreadPoolExecutor(self.lanes, thread_name_prefix="deploykit-cell") as ex:
            running: dict[Future, str] = {  # a target that is the source itself: verify it
                ex.submit(self._verify_cell, t): t for t, r in self.routes.items() if not r}
            while True:
                for e in self._ready(needed, started, advance):
                    running[ex.submit(self._convert, e, ctx)] = ""
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in done:
                    verified = running.pop(f)
                    node = f.result()  # a bug in deploykit itself surfaces here
                    if verified:
                        advance(status=f"{verified}: {self.cells[verified].status}")
                    elif node in self.failed:
                        self._finish_failed(node, advance)
                    elif node in self.wanted:
                        running[ex.submit(self._verify_cell, node)] = node

    def _ready(self, needed, started, advance) -> list[graph.Edge]:
        """Edges whose input exists; those whose input failed fail too (transitively)."""
        ready, changed = [], True
        while changed:
            changed = False
            for dst, e in needed.items():
                if dst in started:
                    continue
                if e.src in self.produced:
                    started.add(dst)
                    ready.append(e)
                elif e.src in self.failed:
                    started.add(dst)
                    self.failed[dst] = self.failed[e.src]
                    self._finish_failed(dst, advance)
                    changed = True
        return ready

    def _convert(self, e: graph.Edge, ctx: graph.EdgeContext) -> str:
        start = time.perf_counter()
        try:
            info = _run_edge(e, self.produced[e.src], self.work / e.dst, ctx, self.timeout)
            self.produced[e.dst] = (self.work / e.dst, info)
        except DeploykitError as err:
            why = _reason(err)
            self.failed[e.dst] = (why if e.name in why else f"{e.name}: {why}",
                                  getattr(err, "log_tail", None) or None)
        finally:
            self.edge_seconds[e.dst] = time.perf_counter() - start
        return e.dst

    def _finish_failed(self, node: str, advance) -> None:
        if node in self.wanted and node not in self.cells:
            reason, tail = self.failed[node]
            names = [self.source.node, *[e.dst for e in self.routes[node]]]
            self.cells[node] = Cell(node, "error", names, reason, log_tail=tail)
            advance(status=f"{node}: error")

    def _verify_cell(self, target: str) -> str:
        info = self.produced[target][1]
        names = [self.source.node, *[e.dst for e in self.routes[target]]]
        rel = self.writer.add_artifact(target, self.produced[target][0], info["file"])
        node = graph.NODES[target]
        art = {"target": target, "format": node.runtime, "runtime": node.runtime, "path": rel,
               "route": names, "batch": info.get("batch"), "outputs": info.get("outputs"),
               "converter_versions": info.get("versions", {}), "profile": node.profile}
        start = time.perf_counter()
        result, runner = _check(self.writer.root, self.source.signature, art, self.probe)
        art["parity"], art["latency_ms"] = result.to_dict(), None
        art["verified_with"] = _runtime_version(art["runtime"])
        self.arts[target] = art
        if runner is not None:
            self.runners[target] = runner
        status = "pass" if result else "fail"
        reason = None if result else "; ".join(result.failures)
        self.cells[target] = Cell(
            target, status, names, reason, result.to_dict(),
            tree_size(self.writer.root / "artifacts" / target), None,
            seconds={"convert": round(self.edge_seconds.get(target, 0.0), 3),
                     "verify": round(time.perf_counter() - start, 3)})
        return target

    def _measure_latency(self) -> None:
        """Batch-1 latency of each passing artifact, one at a time (nothing else runs)."""
        for target in self.wanted:
            runner = self.runners.pop(target, None)
            if runner is None:
                continue
            try:
                start = time.perf_counter()
                if self.cells[target].status == "pass":
                    ms = _latency(runner, self.probe)
                    self.arts[target]["latency_ms"] = self.cells[target].latency_ms = ms
                    self.cells[target].seconds["latency"] = round(time.perf_counter() - start, 3)
            finally:
                runner.close()


def _reason(err: BaseException) -> str:
    """The whole message, led by the exception type (the worker's, for a worker's error)."""
    text = str(err).strip()
    kind = getattr(err, "error_type", None) or type(err).__name__
    return text if text.startswith(kind) else f"{kind}: {text}"


def _run_edge(e: graph.Edge, src: tuple[Path, dict[str, Any]], out: Path,
              ctx: graph.EdgeContext, timeout: float) -> dict[str, Any]:
    from deploykit import worker

    out.mkdir(parents=True)
    # Two cells convert at once on two cores: OpenMP threads that spin on oversubscribed cores
    # made one int8 calibration 8x slower (55 s against 7 s); converters gain nothing from them.
    env = {"OMP_NUM_THREADS": "1"}
    if e.keras_backend:
        env["KERAS_BACKEND"] = e.keras_backend
    return worker.run("deploykit.exporting:run_edge",
                      {"edge": e.name, "src": str((src[0] / src[1]["file"]).resolve()),
                       "out": str(out.resolve()), "ctx": asdict(ctx)}, env=env,
                      timeout=min(timeout, e.timeout), label=e.name)


def run_edge(edge: str, src: str, out: str, ctx: dict[str, Any]) -> dict[str, Any]:
    """Worker side: run one registered converter."""
    graph.load_registry()
    e = graph.EDGES[edge]
    try:
        info = e.fn(Path(src), Path(out), graph.EdgeContext(**ctx))
    except DeploykitError:
        raise
    except Exception as err:
        raise ExportError(f"{edge}: {type(err).__name__}: {err}") from err
    if not (Path(out) / info["file"]).exists():
        raise ExportError(f"{edge} reported {info['file']} but did not write it")
    return info


def _check(root: Path, signature, art: dict[str, Any], probe: Probe):
    """Parity of one artifact in its runtime; the open runner too when it loaded."""
    from deploykit.bundle import Bundle
    from deploykit.formats.base import open_runner

    b = Bundle(root, {"signature": signature.to_dict()})
    try:
        runner = open_runner(art["runtime"], root / art["path"], b.artifact_signature(art),
                             art.get("outputs"))
    except DeploykitError as e:
        return ParityResult(art["target"], art["profile"], False, failures=[_reason(e)]), None
    try:
        return check(art["target"], art["profile"], runner.predict, probe, art.get("batch")), \
            runner
    except BaseException:
        runner.close()
        raise


# runtime -> the Python distribution that ran the parity check (Node runtimes: see targets/web)
RUNTIME_DISTRIBUTIONS = {"tflite": ("ai-edge-litert",), "onnx": ("onnxruntime",),
                         "executorch": ("executorch",), "torch_program": ("torch",),
                         "torchscript": ("torch",), "ptl": ("torch",),
                         "saved_model": ("tensorflow", "tensorflow-cpu")}


def _runtime_version(runtime: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    for dist in RUNTIME_DISTRIBUTIONS.get(runtime, ()):
        try:
            return {dist: version(dist)}
        except PackageNotFoundError:
            continue
    return {}


def _latency(runner, probe: Probe) -> float | None:
    one = probe.rows(slice(0, 1))
    try:
        runner.predict(one)  # warm-up
        times = []
        for _ in range(LATENCY_RUNS):
            t = time.perf_counter()
            runner.predict(one)
            times.append(time.perf_counter() - t)
        return round(statistics.median(times) * 1000, 4)
    except DeploykitError:
        return None


def _manifest(source: Source, probe_paths: dict[str, str], artifacts: list[dict[str, Any]],
              failed: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "name": source.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": {"framework": source.framework, "backend": source.backend,
                   "node": source.node, "versions": source.versions},
        "task": {"kind": source.task, "labels": source.labels},
        "signature": source.signature.to_dict(),
        "input_image_shape": source.image_shape,
        "metrics": source.metrics,
        "probe": probe_paths,
        "deploykit": metadata.version("deploykit"),
        "artifacts": artifacts,
        "failed": failed,
    }


@dataclass
class VerifyReport:
    bundle: Path
    results: list[ParityResult]

    @property
    def ok(self) -> bool:
        return all(self.results)


def verify(bundle: str | Path) -> VerifyReport:
    """Re-check every artifact of a bundle using only the bundle (hashes, then parity)."""
    b = load_bundle(Path(bundle).resolve())
    probe = b.probe()
    results = []
    for art in b.artifacts:
        result, runner = _check(b.root, b.signature, art, probe)
        if runner is not None:
            runner.close()
        results.append(result)
    return VerifyReport(b.root, results)
