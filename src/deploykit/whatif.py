"""The what-if matrix: every flow (flowchart path) × every deployment target, on one dataset.

Each flow trains into ``OUT/models/<dataset>-<flow>/`` and is exported to every target into
the bundle ``OUT/bundles/<dataset>-<flow>/``; every artifact is verified in its own runtime.
A flow or a converter that fails is reported with its reason and the rest still run. The
matrix is written as ``report.json``, ``report.md`` and ``report.html`` (one self-contained
page: the matrix, size against latency, fp16 / int8 against fp32; see
:mod:`deploykit.report`) in ``OUT``, and returned.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deploykit._fs import json_safe, write_atomic
from deploykit._progress import Reporter
from deploykit.errors import DeploykitError
from deploykit.flows import DEEP_FLOWS, FLOWS
from deploykit.report import SCHEMA, write_html
from deploykit.report.tables import markdown


@dataclass(frozen=True)
class FlowRow:
    """One row of the matrix: a flow's training result and its cells."""

    flow: str
    ok: bool
    folder: str | None = None
    model: str = ""
    metrics: dict[str, float] | None = None
    validation: dict[str, float] | None = None
    train_seconds: float | None = None
    bytes: int | None = None
    error: str | None = None
    cells: list[dict[str, Any]] | None = None
    export_seconds: dict[str, Any] | None = None
    log_tail: str | None = None


# what a what-if writes in its folder before its reports (report.json marks a finished one)
OUT_ENTRIES = frozenset({"logs", "models", "bundles"})


def _checked_flows(flows) -> tuple[str, ...]:
    """``flows`` (names, or one comma-separated string as ``targets`` takes) once each, in
    order; none, or one not in :data:`FLOWS`, is refused."""
    from deploykit.errors import TrainingError

    if isinstance(flows, str):  # was split into letters: unknown flow(s) ['s', 'k', ...]
        flows = [f.strip() for f in flows.split(",") if f.strip()]
    flows = tuple(dict.fromkeys(flows))
    unknown = [f for f in flows if f not in FLOWS]
    if unknown or not flows:
        raise TrainingError(f"unknown flow(s) {unknown or '(none given)'}: use some of "
                            f"{', '.join(FLOWS)}")
    return flows


def _check_out(out: Path) -> None:
    """Refuse an ``out`` that is a file, or a folder holding what a what-if does not write
    (its report.md replaced the user's own), unless it holds a what-if's report."""
    foreign = out.is_dir() and not (out / "report.json").is_file() and \
        bool({p.name for p in out.iterdir()} - OUT_ENTRIES)
    if out.is_file() or foreign:
        raise DeploykitError(f"{out} exists and is not a what-if output folder; choose "
                             f"another --out or remove it")


@dataclass(frozen=True)
class _Run:
    data: str
    dataset: Any  # the loaded deploykit.data.Dataset, shared by every flow
    out: Path
    seed: int
    epochs: int | None
    quiet: bool
    targets: str | list[str]


def what_if(data: str = "digits", out: str | Path = "whatif-out", *,
            flows: tuple[str, ...] | str = FLOWS, seed: int = 0, epochs: int | None = None,
            quiet: bool = False, label_column: str | None = None,
            targets: str | list[str] = "all", ray: Any = None) -> dict[str, Any]:
    """Train every flow on ``data``, export each to ``targets``; return (and write) the report.

    Worker processes are shared by the whole run (one per Keras backend, reused by every
    flow), and each export converts two cells at a time on a machine with two cores.

    Args:
        data: a builtin dataset name or a CSV/NPZ file.
        out: the folder for models, bundles, reports and logs.
        flows: the flows to train (default: all five), or a comma-separated string.
        seed, epochs, label_column: as for :func:`deploykit.train`.
        quiet: no progress output.
        targets: ``"all"``, a list, or an empty value to only train.
        ray: export on a Ray cluster (as for :func:`deploykit.export`): each flow's export
            starts as soon as it is trained, while the next flow trains here.

    Returns:
        The report (also written as ``OUT/report.json``, ``report.md`` and ``report.html``);
        a flow that failed is a row with its error, a target that failed a cell with its
        reason; ``auto`` is what ``--flow auto`` would choose from these validation scores.

    Raises:
        DataError: ``data`` cannot be loaded. TrainingError: no flows, an unknown one, or a
        seed or epochs training cannot use. DeploykitError: ``out`` holds files a what-if
        does not write. All before anything is trained.
    """
    from deploykit.data import load_dataset
    from deploykit.training.common import check_options
    from deploykit.worker import pool

    flows = _checked_flows(flows)
    check_options(seed, epochs)
    _check_out(Path(out))
    dataset = load_dataset(data, label_column=label_column)  # bad data: one error, not five
    run = _Run(str(data), dataset, Path(out).resolve(), seed, epochs, quiet, targets)
    report = Reporter(quiet)
    if dataset.note:
        report.info(dataset.note)
    start = time.perf_counter()
    cluster = _cluster(ray) if run.targets else None
    with pool():
        rows = _flows(flows, run, report, cluster)
    result = {"schema": SCHEMA, "data": str(data), "seed": seed,
              "targets": _columns(rows), "rows": [asdict(r) for r in rows],
              "auto": _auto(rows, dataset.task),
              "seconds": round(time.perf_counter() - start, 2)}
    write_reports(json_safe(result), run.out)
    return result


def write_reports(result: dict[str, Any], out: Path) -> None:
    """``report.json``, ``report.md`` and the self-contained ``report.html`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "report.json", json.dumps(result, indent=2) + "\n")
    write_atomic(out / "report.md", markdown(result))
    write_html(result, out / "report.html")


def _auto(rows: list[FlowRow], task: str) -> dict[str, Any] | None:
    """What ``--flow auto`` would choose from these flows' validation scores (None without
    the sklearn flow or any deep flow it would need)."""
    from deploykit.training.auto import DEFAULT_DEEP_FLOW, decision
    from deploykit.training.common import primary_metric

    metric = primary_metric(task)
    scores = {r.flow: r.validation[metric] for r in rows if r.ok and r.validation}
    deep = [f for f in (DEFAULT_DEEP_FLOW, *DEEP_FLOWS) if f in scores]
    if "sklearn" not in scores:
        return None
    return decision(task, scores, deep_flow=deep[0] if deep else DEFAULT_DEEP_FLOW)


def _flows(flows: tuple[str, ...], run: _Run, report: Reporter, cluster) -> list[FlowRow]:
    """Train each flow here, in turn; export each here after it, or on the cluster while
    the next one trains."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(flows) if cluster else 1) as ex:
        rows = []
        for flow in flows:
            report.info(f"[bold]── {flow}[/bold]")
            trained = _train_one(flow, run, report)
            rows.append(ex.submit(_export_one, flow, *trained, run, report, cluster)
                        if isinstance(trained, tuple) else trained)
            if cluster is None and not isinstance(rows[-1], FlowRow):
                rows[-1].result()  # one at a time: the export has the cores to itself
        return [r if isinstance(r, FlowRow) else r.result() for r in rows]


def _cluster(ray: Any):
    from deploykit.exporting import _cluster

    return _cluster(ray)


def _failed(flow: str, e: DeploykitError, report: Reporter) -> FlowRow:
    report.info(f"[red]{flow} failed:[/red] {str(e).splitlines()[0]}")
    return FlowRow(flow, False, error=f"{type(e).__name__}: {e}",
                   log_tail=getattr(e, "log_tail", None) or None)


def _train_one(flow: str, run: _Run, report: Reporter):
    """``(training result, seconds)``, or the failed row."""
    from deploykit.training import train

    start = time.perf_counter()
    try:
        r = train(flow, run.dataset, run.out / "models" / f"{Path(run.data).stem}-{flow}",
                  seed=run.seed, epochs=run.epochs, quiet=run.quiet)
    except DeploykitError as e:
        return _failed(flow, e, report)
    return r, round(time.perf_counter() - start, 2)


def _export_one(flow: str, r, seconds: float, run: _Run, report: Reporter, cluster) -> FlowRow:
    from deploykit.exporting import export

    bundle = run.out / "bundles" / f"{Path(run.data).stem}-{flow}"
    try:
        exported = export(r.folder, run.targets, out=bundle, quiet=run.quiet,
                          ray=cluster) if run.targets else None
    except DeploykitError as e:
        return _failed(flow, e, report)
    return FlowRow(flow, True, str(r.folder), _model_name(r.card), r.metrics["test"],
                   r.metrics["validation"], seconds, _size(r.folder, r.card),
                   cells=[asdict(c) for c in exported.cells] if exported else [],
                   export_seconds=exported.timings if exported else None)


def failures(result: dict[str, Any]) -> tuple[int, list[tuple[str, str, str]]]:
    """``(reachable cells, [(flow, target, reason)])``: what failed, in matrix order.

    A flow that failed to train counts as one failure (its cells were never reached).
    """
    reachable, failed = 0, []
    for r in result["rows"]:
        if not r["ok"]:
            reachable += 1
            failed.append((r["flow"], "training", r["error"] or ""))
            continue
        for c in r.get("cells") or []:
            if c["status"] != "n/a":
                reachable += 1
            if c["status"] in ("fail", "error", "vacuous"):
                failed.append((r["flow"], c["target"], c["reason"] or ""))
    return reachable, failed


def failure_line(result: dict[str, Any]) -> str | None:
    """One line for the terminal when any reachable cell failed, else None."""
    reachable, failed = failures(result)
    if not failed:
        return None
    named = ", ".join(f"{p} → {t} ({why.split(':')[0]})" for p, t, why in failed[:4])
    more = f" and {len(failed) - 4} more" if len(failed) > 4 else ""
    return f"{len(failed)} of {reachable} reachable cells failed: {named}{more}"


def _model_name(card: dict[str, Any]) -> str:
    backend = f" ({card['backend']})" if card.get("backend") else ""
    return f"{card['framework']}{backend} {card['model']['kind']}"


def _size(folder: Path, card: dict[str, Any]) -> int:
    total = 0
    for rel in card["files"].values():
        p = folder / rel
        total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() \
            else p.stat().st_size
    return total


def _columns(rows: list[FlowRow]) -> list[str]:
    seen: list[str] = []
    for r in rows:
        for c in r.cells or []:
            if c["target"] not in seen:
                seen.append(c["target"])
    return seen
