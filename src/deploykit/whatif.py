"""The what-if matrix: every flowchart path × every deployment target, on one dataset.

Each path trains into ``OUT/models/<dataset>-<path>/`` and is exported to every target into
the bundle ``OUT/bundles/<dataset>-<path>/``; every artifact is verified in its own runtime.
A path or a converter that fails is reported with its reason and the rest still run. The
matrix is written as ``report.json`` and ``report.md`` in ``OUT`` and returned.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deploykit._progress import Reporter
from deploykit.errors import DeploykitError

MATRIX_PATHS = ("sklearn", "tensorflow", "torch", "keras-tensorflow", "keras-torch")


@dataclass(frozen=True)
class PathRow:
    path: str
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


def what_if(data: str = "digits", out: str | Path = "whatif-out", *,
            paths: tuple[str, ...] = MATRIX_PATHS, seed: int = 0, epochs: int | None = None,
            quiet: bool = False, target: str | None = None,
            targets: str | list[str] = "all") -> dict[str, Any]:
    """Train every path on ``data``, export each to ``targets``; return (and write) the report.

    Worker processes are shared by the whole run (one per Keras backend, reused by every
    path), and each export converts two cells at a time on a machine with two cores.
    """
    from deploykit.worker import pool

    out = Path(out).resolve()
    report = Reporter(quiet)
    rows = []
    start = time.perf_counter()
    with pool():
        for path in paths:
            report.info(f"[bold]── {path}[/bold]")
            rows.append(_one_path(path, data, out, seed, epochs, quiet, target, targets, report))
    result = {"schema": "deploykit.whatif/1", "data": str(data), "seed": seed,
              "targets": _columns(rows), "rows": [asdict(r) for r in rows],
              "seconds": round(time.perf_counter() - start, 2)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "report.md").write_text(markdown(result))
    return result


def _one_path(path, data, out: Path, seed, epochs, quiet, target, targets, report) -> PathRow:
    from deploykit.exporting import export
    from deploykit.training import train

    start = time.perf_counter()
    try:
        name = f"{Path(str(data)).stem}-{path}"
        r = train(path, data, out / "models" / name, seed=seed, epochs=epochs, quiet=quiet,
                  target=target)
        seconds = round(time.perf_counter() - start, 2)
        exported = export(r.folder, targets, out=out / "bundles" / name, quiet=quiet) \
            if targets else None
    except DeploykitError as e:
        report.info(f"[red]{path} failed:[/red] {str(e).splitlines()[0]}")
        return PathRow(path, False, error=f"{type(e).__name__}: {e}",
                       log_tail=getattr(e, "log_tail", None) or None)
    return PathRow(path, True, str(r.folder), _model_name(r.card), r.metrics["test"],
                   r.metrics["validation"], seconds, _size(r.folder, r.card),
                   cells=[asdict(c) for c in exported.cells] if exported else [],
                   export_seconds=exported.timings if exported else None)


def failures(result: dict[str, Any]) -> tuple[int, list[tuple[str, str, str]]]:
    """``(reachable cells, [(path, target, reason)])``: what failed, in matrix order.

    A path that failed to train counts as one failure (its cells were never reached).
    """
    reachable, failed = 0, []
    for r in result["rows"]:
        if not r["ok"]:
            reachable += 1
            failed.append((r["path"], "training", r["error"] or ""))
            continue
        for c in r.get("cells") or []:
            if c["status"] != "n/a":
                reachable += 1
            if c["status"] in ("fail", "error"):
                failed.append((r["path"], c["target"], c["reason"] or ""))
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


def _columns(rows: list[PathRow]) -> list[str]:
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
    p = c["parity"] or {}
    if c["status"] == "fail" and not p.get("outputs"):
        return "FAIL: " + (c["reason"] or "")[:80]
    if p.get("profile") == "int8" and p.get("label_agreement") is not None:
        q = f"agree {p['label_agreement']:.1%}"
    else:
        q = f"{max((o['max_abs'] for o in p.get('outputs', [])), default=0):.0e}"
    lat = f" {c['latency_ms']:.2f}ms" if c.get("latency_ms") is not None else ""
    verdict = "PASS" if c["status"] == "pass" else "FAIL"
    return f"{verdict} {q} {_human(c['bytes'] or 0)}{lat}"


def matrix_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Rows = paths, columns = targets."""
    targets = result.get("targets", [])
    header = ["path", *targets]
    cells = []
    for r in result["rows"]:
        by = {c["target"]: c for c in r.get("cells") or []}
        if not r["ok"]:
            cells.append([r["path"], *[f"FAILED: {r['error']}"[:60]] * len(targets)])
            continue
        cells.append([r["path"], *[cell_text(by[t]) if t in by else "" for t in targets]])
    return header, cells


def table_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the comparison, shared by the terminal and Markdown renderings."""
    metric_names: list[str] = []
    for r in result["rows"]:
        for k in r["metrics"] or {}:
            if k not in metric_names:
                metric_names.append(k)
    header = ["path", "model", *[f"test {m}" for m in metric_names], "train s", "model size"]
    cells = []
    for r in result["rows"]:
        if not r["ok"]:
            cells.append([r["path"], f"FAILED: {r['error']}", *[""] * (len(header) - 2)])
            continue
        cells.append([r["path"], r["model"], *[f"{r['metrics'][m]:.4f}" for m in metric_names],
                      f"{r['train_seconds']:.1f}", _human(r["bytes"])])
    return header, cells


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# What-if: every path on `{result['data']}`", ""]
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
            lines += [f"### {r['path']} → {target}", "", (why or "").strip(), ""]
            if tail:
                lines += ["<details><summary>last lines of its output</summary>", "", "~~~",
                          tail, "~~~", "", "</details>", ""]
    return ["## Failures", "", *lines] if lines else []


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
