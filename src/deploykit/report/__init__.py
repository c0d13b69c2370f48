"""``report.html``: the what-if matrix, or one bundle, as one self-contained page.

``what-if`` writes ``OUT/report.html`` beside ``report.json``; ``deploykit report OUT``
writes it again from ``report.json`` alone, and ``deploykit report BUNDLE`` makes the same
page for one bundle from its ``manifest.json`` (one row: the bundle's source). The page is
rendered by :mod:`deploykit.report.page` with the pictures of :mod:`deploykit.report.plots`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploykit._fs import read_schema_json, write_atomic
from deploykit.errors import ReportError

SCHEMA = "deploykit.whatif/2"  # report.json
REPORT_JSON, REPORT_HTML, MANIFEST = "report.json", "report.html", "manifest.json"


def render(result: dict[str, Any]) -> str:
    """The page for a what-if report (or :func:`bundle_result`), as a string."""
    from deploykit.report.page import render

    bundle = result.get("bundle")
    title = f"deploykit bundle {bundle}" if bundle else \
        f"deploykit what-if: every flow on {result.get('data', '')}"
    return render(result, title)


def write_html(result: dict[str, Any], path: Path) -> Path:
    """Write :func:`render`'s page to ``path`` (atomically); return ``path``."""
    write_atomic(path, render(result))
    return path


def regenerate(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` for a what-if output folder or a bundle (``deploykit report``).

    Args:
        folder: a what-if ``OUT`` folder (its ``report.json`` is all that is read) or a
            bundle folder (its ``manifest.json``).
        out: where to write the page (default: ``report.html`` in ``folder``).

    Returns:
        The page's path.

    Raises:
        ReportError: ``folder`` holds neither file, the file is not one deploykit wrote, or
            the page cannot be written.
    """
    root = Path(folder)
    try:
        page = render(_result_in(root))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ReportError(f"{root}: malformed report data ({type(e).__name__}: {e}); "
                          f"re-run the what-if or the export") from None
    target = Path(out) if out else root / REPORT_HTML
    if target.is_dir():
        target = target / REPORT_HTML
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, page)
    except OSError as e:
        raise ReportError(f"cannot write {target}: {e.strerror or e}") from None
    return target


def _result_in(root: Path) -> dict[str, Any]:
    """The report data in a what-if folder (``report.json``) or a bundle (its manifest)."""
    from deploykit import bundle

    if (root / REPORT_JSON).is_file():
        return read_schema_json(root / REPORT_JSON, SCHEMA, ReportError)
    if (root / MANIFEST).is_file():
        return bundle_result(read_schema_json(root / MANIFEST, bundle.READS, ReportError))
    raise ReportError(f"{root} holds neither a what-if {REPORT_JSON} nor a bundle "
                      f"{MANIFEST}; give a what-if --out folder or a bundle folder")


def bundle_result(manifest: dict[str, Any]) -> dict[str, Any]:
    """One bundle's manifest in the what-if report's shape: one row, the bundle's source."""
    from deploykit.artifact import Artifact, Failure

    arts = [Artifact.from_dict(a) for a in manifest["artifacts"]]
    fails = [Failure.from_dict(f) for f in manifest.get("failed", [])]
    cells = [artifact_cell(a) for a in arts] + [failure_cell(f) for f in fails
                                                if f.target not in {a.target for a in arts}]
    source = manifest.get("source") or {}
    backend = f" ({source['backend']})" if source.get("backend") else ""
    metrics = manifest.get("metrics") or {}
    row = {"flow": f"{source.get('framework', 'model')}{backend}", "ok": True,
           "model": manifest.get("name", ""), "metrics": metrics.get("test") or {},
           "validation": metrics.get("validation"), "cells": cells}
    return {"bundle": manifest.get("name", ""), "data": manifest.get("name", ""),
            "seed": "", "targets": [c["target"] for c in cells], "rows": [row],
            "created": manifest.get("created")}


def artifact_cell(a) -> dict[str, Any]:
    """A bundle's :class:`~deploykit.artifact.Artifact` as a report cell."""
    p = a.parity
    return {"target": a.target, "status": p.status, "runtime": a.runtime,
            "route": list(a.route), "parity": p.to_dict(),
            "bytes": a.bytes, "latency_ms": a.latency_ms,
            "reason": "; ".join(p.failures) or p.vacuous or None,
            "converter_versions": a.converter_versions, "verified_with": a.verified_with,
            "placement": a.placement}


def failure_cell(f) -> dict[str, Any]:
    """A bundle's :class:`~deploykit.artifact.Failure` as a report cell."""
    return {"target": f.target, "status": f.status, "route": list(f.route),
            "reason": f.reason, "log_tail": f.log_tail}
