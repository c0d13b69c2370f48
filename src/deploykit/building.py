"""Building one bundle's cells: convert along every route, verify each artifact, time them.

Each edge runs once (intermediates such as a SavedModel or a ``torch.export`` program are
shared by every target behind them), in a reused worker process (:mod:`deploykit.worker`),
``lanes`` at a time, as soon as its input exists; each artifact is verified in its runtime
as it arrives. Latency is measured afterwards, one artifact at a time, so no conversion
competes with it for the cores. A converter that raises, crashes or hangs fails the cells
behind it, with its whole reason and the last lines it printed.
"""

from __future__ import annotations

import shutil
import statistics
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from deploykit import formats, graph
from deploykit.artifact import Artifact, Failure
from deploykit.bundle import BundleWriter, tree_size
from deploykit.errors import DeploykitError, NoRouteError
from deploykit.parity import ParityResult, Probe, check
from deploykit.signature import Signature
from deploykit.sources import Source

LATENCY_RUNS = 30
# How latency_ms is measured, written into the manifest beside it. It is the exporting
# process's number, with each runtime's default threads: `deploykit serve` runs one thread
# per runtime in each worker (see benchmarks/bench_runners.py for that setting).
LATENCY_SETTINGS = {"batch": 1, "statistic": "median", "calls": LATENCY_RUNS,
                    "warm_up_calls": 1, "runtime_threads": "each runtime's default",
                    "measured_in": "the exporting process, one artifact at a time"}
RAY_LATENCY_SETTINGS = {**LATENCY_SETTINGS, "measured_in": "the Ray task that verified it, on "
                        "the node in its placement.verified_on, beside that node's other tasks"}


@dataclass
class Cell:
    """One target's outcome: ``pass``, ``fail`` (parity), ``vacuous`` (agreed on a probe set
    that cannot detect a fault), ``error`` (conversion) or ``n/a``.

    ``reason`` is kept whole (exception type and message, or every parity failure);
    ``log_tail`` holds the last lines the failing converter printed.
    """

    target: str
    status: str
    route: list[str] = field(default_factory=list)
    reason: str | None = None
    parity: ParityResult | None = None
    bytes: int | None = None
    latency_ms: float | None = None
    log_tail: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # convert, verify, latency
    placement: dict[str, Any] | None = None  # on a Ray cluster: the nodes that made it
    runtime: str | None = None  # the runner that loads the target's artifacts
    converter_versions: dict[str, str] = field(default_factory=dict)  # along its route
    verified_with: dict[str, str] = field(default_factory=dict)  # the runtime that checked it

    def failure(self) -> Failure:
        """The manifest's record of a failed or errored cell."""
        return Failure(self.target, self.status, tuple(self.route), self.reason or "",
                       self.log_tail)


class Build:
    """The cells of one export; :meth:`run` returns them with the artifacts that were made.

    With a ``cluster`` (:class:`deploykit.cluster.Cluster`), edges and verifications run as
    Ray tasks on its nodes; everything else (planning, the bundle) stays here.
    """

    def __init__(self, source: Source, wanted: list[str], writer: BundleWriter, probe: Probe,
                 timeout: float, lanes: int, cluster=None) -> None:
        self.source, self.wanted, self.writer, self.probe = source, wanted, writer, probe
        self.timeout, self.lanes, self.cluster = timeout, lanes, cluster
        self.probe_ref = cluster.put(probe) if cluster else None
        self.work = writer.root / ".work"
        self.routes: dict[str, list[graph.Edge]] = {}
        self.cells: dict[str, Cell] = {}
        self.runners: dict[str, Any] = {}
        self.arts: dict[str, Artifact] = {}
        self.edge_seconds: dict[str, float] = {}
        self.produced: dict[str, tuple[Path, dict[str, Any]]] = {}
        self.failed: dict[str, tuple[str, str | None]] = {}  # node -> (reason, log tail)

    def run(self, report, timings: dict[str, Any]) -> tuple[list[Cell], list[Artifact]]:
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
            if self.cluster:
                self.cluster.release(self.work)
        timings["edges"] = {e.name: round(self.edge_seconds[e.dst], 3)
                            for e in {e for r in self.routes.values() for e in r}
                            if e.dst in self.edge_seconds}
        shutil.rmtree(self.work)
        return [self.cells[t] for t in self.wanted], \
            [self.arts[t] for t in self.wanted if t in self.arts]

    def _context(self) -> graph.EdgeContext:
        src = self.source
        (self.work / src.node).mkdir(parents=True)
        self.produced[src.node] = (self.work / src.node, {"file": src.write(self.work / src.node)})
        calib = self.work / "calibration.npz"  # int8 calibration rows, by input name
        rows = dict(src.probe_inputs)
        if src.calibration is not None:  # training inputs of a one-input model
            rows = {src.signature.inputs[0].name: src.calibration}
        np.savez(calib, **{s.name: rows[s.name].astype(s.dtype) for s in src.signature.inputs})
        signature = src.signature.to_dict()
        if src.fixed_batch:  # converters see the batch the program was fixed to
            for spec in signature["inputs"]:
                spec["shape"][0] = src.fixed_batch
        return graph.EdgeContext(signature, str(calib))

    def _convert_all(self, ctx: graph.EdgeContext, advance) -> None:
        needed: dict[str, graph.Edge] = {}
        for route in self.routes.values():
            for e in route:
                needed.setdefault(e.dst, e)
        started: set[str] = set()
        with ThreadPoolExecutor(self.lanes, thread_name_prefix="deploykit-cell") as ex:
            running: dict[Future, str] = {  # a target that is the source itself: verify it
                ex.submit(self._verify, t): t for t, r in self.routes.items() if not r}
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
                        advance(status=f"{verified}: {self._said(self.cells[verified])}")
                    elif node in self.failed:
                        self._finish_failed(node, advance)
                    elif node in self.wanted:
                        running[ex.submit(self._verify, node)] = node

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
        convert = self.cluster.convert if self.cluster else run_edge_in_worker
        try:
            info = convert(e, self.produced[e.src], self.work / e.dst, ctx, self.timeout)
            self.produced[e.dst] = (self.work / e.dst, info)
        except DeploykitError as err:
            why = reason(err)
            self.failed[e.dst] = (why if e.name in why else f"{e.name}: {why}",
                                  getattr(err, "log_tail", None) or None)
        finally:
            self.edge_seconds[e.dst] = time.perf_counter() - start
        return e.dst

    def _finish_failed(self, node: str, advance) -> None:
        if node in self.wanted and node not in self.cells:
            why, tail = self.failed[node]
            names = [self.source.node, *[e.dst for e in self.routes[node]]]
            self.cells[node] = Cell(node, "error", names, why, log_tail=tail,
                                    runtime=graph.NODES[node].runtime)
            advance(status=f"{node}: error")

    def _along(self, target: str, key: str) -> dict[str, str]:
        """What every edge on ``target``'s route reported under ``key`` (``versions``: the
        converters that wrote it; ``options``: what they needed beyond their defaults)."""
        infos = [self.produced[e.dst][1] for e in self.routes[target]]
        return {k: v for info in infos or [self.produced[target][1]]
                for k, v in info.get(key, {}).items()}

    def _verify(self, target: str) -> str:
        folder, info = self.produced[target]
        art = self._artifact(target, info, self.writer.add_artifact(target, folder, info["file"]))
        start = time.perf_counter()
        if self.cluster:
            result, any_length, ms, placement = self._verify_remote(art)
        else:
            result, any_length, ms, placement = self._verify_here(art)
        self.arts[target] = art.replace(parity=result, any_length=any_length, latency_ms=ms,
                                        placement=placement)
        self.cells[target] = Cell(
            target, result.status, list(art.route),
            None if result else ("; ".join(result.failures) or result.vacuous), result,
            tree_size(self.writer.root / art.folder), ms,
            seconds={"convert": round(self.edge_seconds.get(target, 0.0), 3),
                     "verify": round(time.perf_counter() - start, 3)}, placement=placement,
            runtime=art.runtime, converter_versions=art.converter_versions,
            verified_with=art.verified_with)
        return target

    def _artifact(self, target: str, info: dict[str, Any], rel: str) -> Artifact:
        n = graph.NODES[target]
        return Artifact(target, n.runtime, rel,
                        (self.source.node, *[e.dst for e in self.routes[target]]),
                        n.profile, ParityResult(target, n.profile, False), runs=n.runs,
                        batch=info.get("batch") or self.source.fixed_batch,
                        outputs=tuple(info["outputs"]) if info.get("outputs") else None,
                        converter_versions=self._along(target, "versions"),
                        converter_options=self._along(target, "options"),
                        verified_with=runtime_version(n))

    def _verify_here(self, art: Artifact):
        """Parity in this process; the runner stays open for :meth:`_measure_latency`."""
        sig = self.source.signature
        result, runner = check_artifact(self.writer.root, sig, art, self.probe)
        any_length = bool(result) and takes_any_length(self.writer.root, sig, art, self.probe)
        if runner is not None:
            self.runners[art.target] = runner
        return result, any_length, None, None

    def _verify_remote(self, art: Artifact):
        """Parity, any-length and latency in a Ray task; where each step of it ran. A runtime
        that crashes, hangs or loses its node twice fails this cell only."""
        try:
            value, verified = self.cluster.verify(self.writer.root / art.folder, art,
                                                  self.source.signature, self.probe_ref)
        except DeploykitError as err:
            value = {"parity": ParityResult(art.target, art.profile, False,
                                            failures=[reason(err)]).to_dict(),
                     "any_length": False, "latency_ms": None}
            verified = {"node": None}
        edges = {e.name: self.produced[e.dst][1]["placement"] for e in self.routes[art.target]}
        placement: dict[str, Any] = {
            "converted_on": edges[self.routes[art.target][-1].name]["node"] if edges else None,
            "verified_on": verified["node"], "edges": {k: v["node"] for k, v in edges.items()}}
        retried = [f"{k}: {v['retried']}" for k, v in {**edges, "verify": verified}.items()
                   if "retried" in v]
        if retried:
            placement["retried"] = retried
        return ParityResult.from_dict(value["parity"]), value["any_length"], \
            value["latency_ms"], placement

    @staticmethod
    def _said(cell: Cell) -> str:
        """A cell's verdict for the progress line (and that it was run again on another node)."""
        again = (cell.placement or {}).get("retried")
        return f"{cell.status} (run again after a node was lost: {'; '.join(again)})" if again \
            else cell.status

    def _measure_latency(self) -> None:
        """Batch-1 latency of each passing artifact, one at a time (nothing else runs)."""
        for target in self.wanted:
            runner = self.runners.pop(target, None)
            if runner is None:
                continue
            try:
                start = time.perf_counter()
                if self.cells[target].status == "pass":
                    ms = latency(runner, self.probe)
                    self.arts[target] = self.arts[target].replace(latency_ms=ms)
                    self.cells[target].latency_ms = ms
                    self.cells[target].seconds["latency"] = round(time.perf_counter() - start, 3)
            finally:
                runner.close()


def reason(err: BaseException) -> str:
    """The whole message, led by the exception type (the worker's, for a worker's error)."""
    text = str(err).strip()
    kind = getattr(err, "error_type", None) or type(err).__name__
    return text if text.startswith(kind) else f"{kind}: {text}"


def run_edge_in_worker(e: graph.Edge, src: tuple[Path, dict[str, Any]], out: Path,
                       ctx: graph.EdgeContext, timeout: float) -> dict[str, Any]:
    """Run one converter in a worker (:func:`deploykit.exporting.run_edge` on that side)."""
    from deploykit import worker

    out.mkdir(parents=True)
    env = {"KERAS_BACKEND": e.keras_backend} if e.keras_backend else {}
    return worker.run("deploykit.exporting:run_edge",
                      {"edge": e.name, "src": str((src[0] / src[1]["file"]).resolve()),
                       "out": str(out.resolve()), "ctx": asdict(ctx)}, env=env,
                      timeout=min(timeout, e.timeout), label=e.name, warm=e.requires,
                      any_backend=e.keras_backend is None)


def check_artifact(root: Path, signature: Signature, art: Artifact, probe: Probe):
    """Parity of one artifact in its runtime; the open runner too when it loaded."""
    try:
        runner = formats.open_runner(art.runtime, root / art.path, art.signature(signature),
                                     art.outputs)
    except DeploykitError as e:
        return ParityResult(art.target, art.profile, False, failures=[reason(e)]), None
    try:
        return check(art.target, art.profile, runner.predict, probe), runner
    except BaseException:
        runner.close()
        raise


def takes_any_length(root: Path, signature: Signature, art: Artifact, probe: Probe) -> bool:
    """Whether a server-side artifact also agrees with the original on the probe cut to a
    shorter length along the inputs' open axes (mobile and browser runtimes take static
    shapes; a converter that traced one length in fails here)."""
    if probe.shorter is None or art.runs != "server":
        return False
    result, runner = check_artifact(root, signature, art.replace(any_length=True), probe.shorter)
    if runner is not None:
        runner.close()
    return bool(result)


def runtime_version(node: graph.Node) -> dict[str, str]:
    """The installed distribution that runs ``node``'s artifacts (Node runtimes: none)."""
    for dist in node.distributions:
        try:
            return {dist: version(dist)}
        except PackageNotFoundError:
            continue
    return {}


def latency(runner, probe: Probe) -> float | None:
    """Median batch-1 latency in ms over :data:`LATENCY_RUNS` calls, after a warm-up."""
    one = probe.rows(slice(0, 1))
    try:
        runner.predict(one)
        times = []
        for _ in range(LATENCY_RUNS):
            t = time.perf_counter()
            runner.predict(one)
            times.append(time.perf_counter() - t)
        return round(statistics.median(times) * 1000, 4)
    except DeploykitError:
        return None
