"""The what-if report as text: the terminal's and ``report.md``'s tables, and the cells'
words that the page (:mod:`deploykit.report.page`) lays out too."""

from __future__ import annotations

from typing import Any

from deploykit._fs import human_bytes
from deploykit.parity import ParityResult


def cell_parts(c: dict[str, Any]) -> tuple[str, str, str, str]:
    """A matrix cell's verdict, its figure (worst error or agreement; for a cell that did not
    run, the start of its reason), size and batch-1 latency: each renderer lays them out."""
    if c["status"] == "n/a":
        return "n/a", "no route", "", ""
    p = ParityResult.from_dict(c["parity"]) if c.get("parity") else None
    if p is None or c["status"] == "error" or (c["status"] == "fail" and p.max_abs is None):
        return c["status"].upper(), (c["reason"] or "")[:80], "", ""
    lat = f"{c['latency_ms']:.2f} ms" if c.get("latency_ms") is not None else ""
    return c["status"].upper(), p.worst, human_bytes(c["bytes"]), lat


def cell_text(c: dict[str, Any]) -> str:
    """One matrix cell on one line: verdict with worst error or agreement, size, latency."""
    verdict, figure, size, lat = cell_parts(c)
    if not size:
        return f"{verdict} ({figure})" if c["status"] == "n/a" else f"{verdict}: {figure}"
    return " ".join(x for x in (verdict, figure, size, lat) if x)


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
        seconds = "" if r.get("train_seconds") is None else f"{r['train_seconds']:.1f}"
        cells.append([r["flow"], r["model"], *[f"{r['metrics'][m]:.4f}" for m in metric_names],
                      seconds, human_bytes(r.get("bytes"))])
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
