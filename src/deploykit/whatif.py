"""The what-if matrix: every flow (flowchart path) × every deployment target, on one dataset.

Each flow trains into ``OUT/models/<dataset>-<flow>/`` and is exported to every target into
the bundle ``OUT/bundles/<dataset>-<flow>/``; every artifact is verified in its own runtime.
A flow or a converter that fails is reported with its reason and the rest still run. The
matrix is written as ``report.json`` and ``report.md`` in ``OUT`` and returned.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deploykit._fs import human_bytes, json_safe
from deploykit._progress import Reporter
from deploykit.errors import DeploykitError
from deploykit.flows import FLOWS
from deploykit.parity import ParityResult

SCHEMA = "deploykit.whatif/2"


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
            flows: tuple[str, ...] = FLOWS, seed: int = 0, epochs: int | None = None,
            quiet: bool = False, label_column: str | None = None,
            targets: str | list[str] = "all", ray: Any = None) -> dict[str, Any]:
    """Train every flow on ``data``, export each to ``targets``; return (and write) the report.

    Worker processes are shared by the whole run (one per Keras backend, reused by every
    flow), and each export converts two cells at a time on a machine with two cores.

    Args:
        data: a builtin dataset name or a CSV/NPZ file.
        out: the folder for models, bundles, reports and logs.
        flows: the flows to train (default: all five).
        seed, epochs, label_column: as for :func:`deploykit.train`.
        quiet: no progress output.
        targets: ``"all"``, a list, or an empty value to only train.
        ray: export on a Ray cluster (as for :func:`deploykit.export`): each flow's export
            starts as soon as it is trained, while the next flow trains here.

    Returns:
        The report (also written as ``OUT/report.json`` and ``OUT/report.md``); a flow that
        failed is a row with its error, a target that failed a cell with its reason.

    Raises:
        DataError: ``data`` cannot be loaded (before anything is trained).
    """
    from deploykit.data import load_dataset
    from deploykit.worker import pool

    dataset = load_dataset(data, label_column=label_column)  # bad data: one error, not five
    run = _Run(str(data), dataset, Path(out).resolve(), seed, epochs, quiet, targets)
    report = Reporter(quiet)
    start = time.perf_counter()
    cluster = _cluster(ray) if run.targets else None
    with pool():
        rows = _flows(flows, run, report, cluster)
    result = {"schema": SCHEMA, "data": str(data), "seed": seed,
              "targets": _columns(rows), "rows": [asdict(r) for r in rows],
              "seconds": round(time.perf_counter() - start, 2)}
    run.out.mkdir(parents=True, exist_ok=True)
    (run.out / "report.json").write_text(json.dumps(json_safe(result), indent=2) + "\n")
    (run.out / "report.md").write_text(markdown(result))
    return result


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


def cell_text(c: dict[str, Any]) -> str:
    """One matrix cell: verdict with worst error or agreement, size, batch-1 latency."""
    if c["status"] == "n/a":
        return "n/a (no route)"
    if c["status"] == "error":
        return "ERROR: " + (c["reason"] or "")[:80]
    p = ParityResult.from_dict(c["parity"])
    if c["status"] == "fail" and p.max_abs is None:
        return "FAIL: " + (c["reason"] or "")[:80]
    lat = f" {c['latency_ms']:.2f}ms" if c.get("latency_ms") is not None else ""
    verdict = {"pass": "PASS", "vacuous": "VACUOUS"}.get(c["status"], "FAIL")
    return f"{verdict} {p.worst} {human_bytes(c['bytes'])}{lat}"


def matrix_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Rows = flows, columns = targets."""
    targets = result.get("targets", [])
    header = ["flow", *targets]
    cells = []
    for r in result["rows"]:
        by = {c["target"]: c for c in r.get("cells") or []}
        if not r["ok"]:
            cells.append([r["flow"], *[f"FAILED: {r['error']}"[:60]] * len(targets)])
            continue
        cells.append([r["flow"], *[cell_text(by[t]) if t in by else "" for t in targets]])
    return header, cells


def table_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the comparison, shared by the terminal and Markdown renderings."""
    metric_names: list[str] = []
    for r in result["rows"]:
        for k in r["metrics"] or {}:
            if k not in metric_names:
                metric_names.append(k)
    header = ["flow", "model", *[f"test {m}" for m in metric_names], "train s", "model size"]
    cells = []
    for r in result["rows"]:
        if not r["ok"]:
            cells.append([r["flow"], f"FAILED: {r['error']}", *[""] * (len(header) - 2)])
            continue
        cells.append([r["flow"], r["model"], *[f"{r['metrics'][m]:.4f}" for m in metric_names],
                      f"{r['train_seconds']:.1f}", human_bytes(r["bytes"])])
    return header, cells


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# What-if: every flow on `{result['data']}`", ""]
    for title, (header, cells) in (("Training", table_rows(result)),
                                   ("Deployment targets (parity, size, batch-1 latency)",
                                    matrix_rows(result))):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in cells]
        lines.append("")
    return "\n".join(lines + _failures_md(result)) + "\n"


def _failures_md(result: dict[str, Any]) -> list[str]:
    """Every failure with its whole reason and the tail of the converter's output."""
    lines = []
    for r in result["rows"]:
        items = [("training", r["error"], r.get("log_tail"))] if not r["ok"] else [
            (c["target"], c["reason"], c.get("log_tail")) for c in r.get("cells") or []
            if c["status"] in ("fail", "error")]
        for target, why, tail in items:
            lines += [f"### {r['flow']} → {target}", "", (why or "").strip(), ""]
            if tail:
                lines += ["<details><summary>last lines of its output</summary>", "", "~~~",
                          tail, "~~~", "", "</details>", ""]
    return ["## Failures", "", *lines] if lines else []
