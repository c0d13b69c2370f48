"""The what-if matrix: train along every path of the flowchart on one dataset and compare.

Each path trains into ``OUT/<dataset>-<path>/``; a path that fails is reported with its
reason and the others still run. The comparison is written as ``report.json`` and
``report.md`` in ``OUT`` and returned.
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


def what_if(data: str = "digits", out: str | Path = "whatif-out", *,
            paths: tuple[str, ...] = MATRIX_PATHS, seed: int = 0, epochs: int | None = None,
            quiet: bool = False, target: str | None = None) -> dict[str, Any]:
    """Train every path on ``data``; return (and write) the comparison report."""
    from deploykit.training import train

    out = Path(out)
    report = Reporter(quiet)
    rows = []
    for path in paths:
        report.info(f"[bold]── {path}[/bold]")
        start = time.perf_counter()
        try:
            r = train(path, data, out / f"{Path(str(data)).stem}-{path}", seed=seed,
                      epochs=epochs, quiet=quiet, target=target)
        except DeploykitError as e:
            rows.append(PathRow(path, False, error=str(e).splitlines()[0]))
            report.info(f"[red]{path} failed:[/red] {e}")
            continue
        rows.append(PathRow(path, True, str(r.folder), _model_name(r.card),
                            r.metrics["test"], r.metrics["validation"],
                            round(time.perf_counter() - start, 2), _size(r.folder, r.card)))
    result = {"schema": "deploykit.whatif/1", "data": str(data), "seed": seed,
              "rows": [asdict(r) for r in rows]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "report.md").write_text(markdown(result))
    return result


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
    header, cells = table_rows(result)
    lines = [f"# What-if: every path on `{result['data']}`", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    return "\n".join(lines) + "\n"


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
