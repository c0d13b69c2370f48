"""Export: any model in, a bundle of verified deployment artifacts out.

``export(model, targets="all", out=...)`` detects the source, plans a route on the
conversion graph to each target, runs every edge in a worker process (a crash, an
exception or a time-out fails only the cells that need that edge), runs each artifact in
its own runtime on the probe set, and writes the bundle atomically with the parity results.
"""

from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from deploykit import graph
from deploykit._progress import Reporter
from deploykit.bundle import SCHEMA, BundleWriter, load_bundle
from deploykit.errors import DeploykitError, ExportError, NoRouteError
from deploykit.parity import ParityResult, Probe, check
from deploykit.sources import Source, detect

LATENCY_RUNS = 30


@dataclass
class Cell:
    """One target's outcome: ``pass``, ``fail`` (parity), ``error`` (conversion) or ``n/a``."""

    target: str
    status: str
    route: list[str] = field(default_factory=list)
    reason: str | None = None
    parity: dict[str, Any] | None = None
    bytes: int | None = None
    latency_ms: float | None = None

    @property
    def summary(self) -> str:
        return self.reason or ""


@dataclass
class ExportReport:
    bundle: Path | None
    source: dict[str, Any]
    cells: list[Cell]

    @property
    def ok(self) -> bool:
        """Every requested target that has a route produced a passing artifact."""
        return all(c.status in ("pass", "n/a") for c in self.cells)

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": str(self.bundle) if self.bundle else None, "source": self.source,
                "cells": [asdict(c) for c in self.cells]}


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


def export(model: Any, targets: str | list[str] = "all", *, out: str | Path,
           sample: np.ndarray | None = None, task: str | None = None,
           labels: list[str] | None = None, quiet: bool = False, timeout: float = 600.0
           ) -> ExportReport:
    """Export ``model`` to ``targets``, verify every artifact, and write the bundle ``out``.

    Returns the :class:`ExportReport`; targets without a route are ``n/a`` cells naming
    what is reachable, failed conversions are ``error`` cells with the reason.
    """
    wanted = resolve_targets(targets)
    report = Reporter(quiet)
    source = detect(model, sample=sample, task=task, labels=labels)
    probe = Probe({source.signature.inputs[0].name: source.probe_inputs}, source.reference,
                  source.y, source.task)
    writer = BundleWriter(out)
    try:
        cells, artifacts = _build(source, wanted, writer, probe, report, timeout)
        manifest = _manifest(source, writer.add_probe(probe), artifacts)
        bundle = writer.commit(manifest)
    except BaseException:
        writer.abort()
        raise
    return ExportReport(bundle, manifest["source"], cells)


def _build(source: Source, wanted: list[str], writer: BundleWriter, probe: Probe,
           report: Reporter, timeout: float):
    work = writer.root / ".work"
    (work / source.node).mkdir(parents=True)
    produced: dict[str, tuple[Path, dict[str, Any]]] = {
        source.node: (work / source.node, {"file": source.write(work / source.node)})}
    failed: dict[str, str] = {}
    calib = work / "calibration.npy"
    np.save(calib, (source.calibration if source.calibration is not None
                    else source.probe_inputs).astype(np.float32))
    ctx = graph.EdgeContext(source.signature.to_dict(), str(calib))
    cells, artifacts = [], []
    with report.task(f"export {source.name}", total=len(wanted)) as advance:
        for target in wanted:
            cell, art = _one_target(source, target, produced, failed, ctx, work, writer, probe,
                                    timeout)
            cells.append(cell)
            if art:
                artifacts.append(art)
            advance(status=f"{target}: {cell.status}")
    shutil.rmtree(work)
    return cells, artifacts


def _one_target(source, target, produced, failed, ctx, work, writer, probe, timeout):
    try:
        route = graph.plan(source.node, target)
    except NoRouteError as e:
        return Cell(target, "n/a", reason=str(e)), None
    names = [source.node, *[e.dst for e in route]]
    for e in route:
        if e.dst in produced or e.dst in failed or e.src in failed:
            continue
        try:
            produced[e.dst] = (work / e.dst, _run_edge(e, produced[e.src], work / e.dst, ctx,
                                                       timeout))
        except DeploykitError as err:
            failed[e.dst] = f"{e.name} failed: {str(err).splitlines()[0][:400]}"
    bad = next((failed[n] for n in names if n in failed), None)
    if bad:
        return Cell(target, "error", names, bad), None
    folder, info = produced[target]
    rel = writer.add_artifact(target, folder, info["file"])
    node = graph.NODES[target]
    art = {"target": target, "format": node.runtime, "runtime": node.runtime, "path": rel,
           "route": names, "batch": info.get("batch"), "outputs": info.get("outputs"),
           "converter_versions": info.get("versions", {}), "profile": node.profile}
    result, latency = _verify(writer.root, source.signature, art, probe)
    art["parity"], art["latency_ms"] = result.to_dict(), latency
    art["verified_with"] = _runtime_version(art["runtime"])
    status = "pass" if result else "fail"
    reason = None if result else "; ".join(result.failures)[:600]
    from deploykit.bundle import tree_size
    return Cell(target, status, names, reason, result.to_dict(),
                tree_size(writer.root / "artifacts" / target), latency), art


def _run_edge(e: graph.Edge, src: tuple[Path, dict[str, Any]], out: Path,
              ctx: graph.EdgeContext, timeout: float) -> dict[str, Any]:
    from deploykit.worker import run_in_worker

    out.mkdir(parents=True)
    env = {"KERAS_BACKEND": e.keras_backend} if e.keras_backend else {}
    return run_in_worker("deploykit.exporting:run_edge",
                         {"edge": e.name, "src": str(src[0] / src[1]["file"]), "out": str(out),
                          "ctx": asdict(ctx)}, env=env, timeout=min(timeout, e.timeout),
                         forward_output=False)


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


def _verify(root: Path, signature, art: dict[str, Any], probe: Probe
            ) -> tuple[ParityResult, float | None]:
    """Parity of one artifact in its runtime, plus its median batch-1 latency in ms."""
    from deploykit.bundle import Bundle
    from deploykit.formats.base import open_runner

    b = Bundle(root, {"signature": signature.to_dict()})
    try:
        runner = open_runner(art["runtime"], root / art["path"], b.artifact_signature(art),
                             art.get("outputs"))
    except DeploykitError as e:
        return ParityResult(art["target"], art["profile"], False, failures=[str(e)]), None
    try:
        result = check(art["target"], art["profile"], runner.predict, probe, art.get("batch"))
        return result, _latency(runner, probe) if result else None
    finally:
        runner.close()


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


def _manifest(source: Source, probe_paths: dict[str, str], artifacts: list[dict[str, Any]]
              ) -> dict[str, Any]:
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
    b = load_bundle(bundle)
    probe = b.probe()
    results = [_verify(b.root, b.signature, art, probe)[0] for art in b.artifacts]
    return VerifyReport(b.root, results)
