"""Export: any model in, a bundle of verified deployment artifacts out.

``export(model, targets="all", out=...)`` detects the source, plans a route on the
conversion graph to each target, converts and verifies every cell (:mod:`deploykit.building`:
a crash, an exception or a time-out fails only the cells that need that edge), and writes
the bundle atomically with the parity results. ``verify(bundle)`` re-checks a bundle from
the bundle alone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from deploykit import formats, graph
from deploykit._progress import Reporter
from deploykit.building import (
    LATENCY_SETTINGS,
    RAY_LATENCY_SETTINGS,
    Build,
    Cell,
    check_artifact,
    takes_any_length,
)
from deploykit.bundle import SCHEMA, BundleWriter, load_bundle
from deploykit.errors import DeploykitError, ExportError, SourceError
from deploykit.parity import ParityResult, Probe, profile_rules
from deploykit.sources import Source, detect

__all__ = ["Cell", "ExportReport", "VerifyReport", "export", "export_many", "verify",
           "resolve_targets"]


@dataclass
class ExportReport:
    """What :func:`export` made: the bundle, its source, one :class:`Cell` per target, and
    where the time went (seconds: source, convert_verify, latency, write, total, edges)."""

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
    """Target names from what a user wrote.

    Args:
        targets: ``"all"`` (every target, in matrix order), a comma-separated string or a list.

    Returns:
        The target names.

    Raises:
        ExportError: a name is not a target (the message lists the known ones).
    """
    formats.load()
    known = graph.targets()
    if isinstance(targets, str):
        targets = known if targets == "all" else \
            [t.strip() for t in targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in known]
    if unknown or not targets:
        raise ExportError(f"unknown target(s) {unknown or '(none given)'}: use 'all' or some of "
                          f"{', '.join(known)}")
    return list(dict.fromkeys(targets))  # each once, in the order given


def default_lanes() -> int:
    """Cells converted and verified at once: one per core, at most two (memory)."""
    return max(1, min(2, os.cpu_count() or 1))


def export(model: Any, targets: str | list[str] = "all", *, out: str | Path,
           sample: np.ndarray | Mapping[str, np.ndarray] | str | Path | None = None,
           task: str | None = None, labels: list[str] | None = None, quiet: bool = False,
           timeout: float = 600.0, lanes: int | None = None, ray: Any = None) -> ExportReport:
    """Export ``model`` to ``targets``, verify every artifact, and write the bundle ``out``.

    Args:
        model: a model folder from ``deploykit train``, a model file or SavedModel folder,
            or an in-memory model (see :func:`deploykit.sources.detect`).
        targets: ``"all"``, a comma-separated string or a list of target names.
        out: the bundle folder to write (an older bundle there is replaced).
        sample: example inputs (the probe set; a ``torch.nn.Module``'s input shape): an array,
            arrays by input name, or a ``.npy``/``.npz`` file (:func:`~.sources.read_sample`).
        task, labels: when they cannot be read from the model.
        quiet: no progress output.
        timeout: seconds allowed to each converter.
        lanes: cells converted at once (default: one per core, at most two; on Ray, twice
            the cluster's CPUs, and Ray queues what does not fit).
        ray: run the cells as tasks on a Ray cluster: ``True`` (the one ``RAY_ADDRESS`` names,
            else a new one on this machine), an address (``"HEAD:6379"``), or a
            :class:`deploykit.cluster.Cluster` shared by several exports. The bundle is
            written here either way; each artifact records the nodes that made it.

    Returns:
        The :class:`ExportReport`: targets without a route are ``n/a`` cells naming what is
        reachable, failed conversions are ``error`` cells with the whole reason.

    Raises:
        ExportError: an unknown target. SourceError: a model deploykit does not recognise.
        BundleError: ``out`` exists and is not a bundle. ClusterError: the Ray cluster cannot
        be reached. DataError: a sample file that cannot be read.
    """
    wanted = resolve_targets(targets)
    cluster = _cluster(ray)  # an unreachable cluster is said before the model loads
    t0 = time.perf_counter()
    source = detect(model if not isinstance(model, (str, Path)) else Path(model).resolve(),
                    sample=sample, task=task, labels=labels)
    if not source.name:  # a model file or object: the bundle's folder names it
        source.name = Path(out).resolve().name
    probe = Probe(source.probe_inputs, source.reference, source.y, source.task,
                  source.shorter, source.signature.scores)
    writer = BundleWriter(out)
    timings: dict[str, Any] = {"source": time.perf_counter() - t0}
    try:
        with _local_workers(cluster):
            cells, artifacts = Build(source, wanted, writer, probe, timeout,
                                     lanes or _lanes(cluster), cluster).run(Reporter(quiet),
                                                                            timings)
        cells = _named_in_place(cells, writer)
        t = time.perf_counter()
        manifest = _manifest(source, writer.add_probe(probe), cluster is not None)
        bundle = writer.commit(manifest, artifacts,
                               [c.failure() for c in cells if c.status not in ("pass", "n/a")])
        timings["write"] = time.perf_counter() - t
    except BaseException:
        writer.abort()
        raise
    timings["total"] = time.perf_counter() - t0
    return ExportReport(bundle, _source_facts(source), cells,
                        {k: round(v, 3) if isinstance(v, float) else v for k, v in timings.items()})


def _named_in_place(cells: list[Cell], writer: BundleWriter) -> list[Cell]:
    """Reasons name a file where the bundle will be, not in its work folder (gone once the
    bundle is in place: a reason said "cannot load .../.b.partial-9zq/artifacts/...")."""
    work, out = str(writer.root), str(writer.out)

    def fix(text: str | None) -> str | None:
        return text.replace(work, out) if text else text

    return [replace(c, reason=fix(c.reason), log_tail=fix(c.log_tail),
                    parity=c.parity and replace(c.parity, failures=[
                        fix(f) for f in c.parity.failures])) for c in cells]


MODEL_SUFFIXES = (".keras", ".skops", ".pt2", ".onnx")


def models_in(paths: list[str | Path]) -> list[Path]:
    """The models ``paths`` name: each path is a model, or a folder of models (deploykit model
    folders, SavedModel folders and model files directly inside it, in name order).

    Raises:
        SourceError: a path does not exist, a folder holds no model, or two models would
        write bundles of the same name.
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise SourceError(f"model not found: {p}")
        found += [p] if _is_model(p) or not p.is_dir() else \
            [c for c in sorted(p.iterdir()) if _is_model(c)] or _no_models(p)
    names = [bundle_name(m) for m in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SourceError(f"several models would write the bundle {twice[0]!r}: rename one, or "
                          f"export them one at a time")
    return found


def bundle_name(model: Path) -> str:
    """The bundle folder a model gets when several are exported at once."""
    return model.stem if model.suffix in MODEL_SUFFIXES else model.name


def _is_model(p: Path) -> bool:
    return (p / "deploykit-model.json").is_file() or (p / "saved_model.pb").is_file() or \
        (p.is_file() and p.suffix in MODEL_SUFFIXES)


def _no_models(folder: Path) -> list[Path]:
    raise SourceError(f"{folder}: neither a model nor a folder of models (deploykit model "
                      f"folders, SavedModel folders, {', '.join(MODEL_SUFFIXES)} files)")


def export_many(models: list[str | Path], targets: str | list[str] = "all", *,
                out: str | Path, quiet: bool = False, timeout: float = 600.0,
                ray: Any = None) -> list[ExportReport]:
    """Export several models, one bundle each in ``out/<model name>``.

    On a Ray cluster (``ray``: as for :func:`export`) the models are exported at once and
    their cells share the cluster; here they go one after another and share the workers.

    Args:
        models: models, or folders of models (see :func:`models_in`).
        targets, quiet, timeout, ray: as for :func:`export`.

    Returns:
        One :class:`ExportReport` per model, in the order of :func:`models_in`; a model whose
        export raised has a report without a bundle and one ``error`` cell naming why.

    Raises:
        SourceError: as for :func:`models_in`. ExportError: an unknown target.
    """
    from concurrent.futures import ThreadPoolExecutor

    from deploykit.worker import pool

    found, wanted, cluster = models_in(models), resolve_targets(targets), _cluster(ray)

    def one(model: Path) -> ExportReport:
        try:
            return export(model, wanted, out=Path(out) / bundle_name(model), quiet=quiet,
                          timeout=timeout, ray=cluster)
        except DeploykitError as e:
            why = f"{type(e).__name__}: {e}"
            return ExportReport(None, {"model": str(model)}, [Cell("*", "error", reason=why)])

    if cluster is None:
        with pool():
            return [one(m) for m in found]
    with ThreadPoolExecutor(max(1, min(len(found), 2 * cluster.cpus))) as ex:
        return list(ex.map(one, found))


def _cluster(ray: Any):
    """The :class:`deploykit.cluster.Cluster` that ``ray`` asks for, or None (this machine)."""
    if ray is None or ray is False:
        return None
    from deploykit.cluster import Cluster

    if isinstance(ray, Cluster):
        return ray
    return Cluster(None if ray is True else str(ray))


def _local_workers(cluster):
    """This machine's worker pool, unless the cells run on a cluster."""
    from contextlib import nullcontext

    from deploykit.worker import pool

    return nullcontext() if cluster is not None else pool()


def _lanes(cluster) -> int:
    return default_lanes() if cluster is None else max(2, 2 * cluster.cpus)


def run_edge(edge: str, src: str, out: str, ctx: dict[str, Any]) -> dict[str, Any]:
    """Worker side: run one registered converter."""
    formats.load()
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


def _source_facts(source: Source) -> dict[str, Any]:
    return {"framework": source.framework, "backend": source.backend, "node": source.node,
            "versions": source.versions, "notes": source.notes}


def _manifest(source: Source, probe_paths: dict[str, str], on_ray: bool) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "name": source.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": _source_facts(source),
        "task": {"kind": source.task, "labels": source.labels},
        "signature": source.signature.to_dict(),
        "input_image_shape": source.image_shape,
        "metrics": source.metrics,
        "probe": probe_paths,
        "profiles": profile_rules(),
        "latency": RAY_LATENCY_SETTINGS if on_ray else LATENCY_SETTINGS,  # how latency_ms was
        # measured
        "deploykit": metadata.version("deploykit"),
    }


@dataclass
class VerifyReport:
    """Each artifact's parity, re-checked from the bundle alone."""

    bundle: Path
    results: list[ParityResult]

    @property
    def ok(self) -> bool:
        """Every artifact passes (a bundle with none proves nothing: not ok)."""
        return bool(self.results) and all(self.results)


def verify(bundle: str | Path) -> VerifyReport:
    """Re-check every artifact of a bundle using only the bundle (hashes, then parity).

    Args:
        bundle: the bundle folder.

    Returns:
        The :class:`VerifyReport` (truthy ``ok`` when every artifact passes).

    Raises:
        BundleError: the bundle is missing, incomplete or was changed after export.
    """
    b = load_bundle(bundle)
    probe = b.probe()
    results = []
    for art in b.artifacts:
        result, runner = check_artifact(b.root, b.signature, art, probe)
        if runner is not None:
            runner.close()
        if result and art.any_length and not takes_any_length(b.root, b.signature, art, probe):
            result = replace(result, passed=False, failures=[
                "recorded as taking any length, but disagrees at a shorter one"])
        results.append(result)
    return VerifyReport(b.root, results)
