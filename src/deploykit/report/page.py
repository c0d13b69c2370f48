"""The report page: one self-contained HTML file (inline CSS and SVG, no script, nothing
fetched), rendered from a what-if report (``report.json``) or from one bundle's manifest.

Sections: the matrix as a grid of cells that expand to their evidence; size against batch-1
latency; fp16 / int8 against fp32; training and the auto-path decision. Each verdict is a
symbol and a word as well as a colour, and each picture has a table beside it.
"""

from __future__ import annotations

from html import escape
from typing import Any

from deploykit._fs import human_bytes
from deploykit.artifact import tradeoff
from deploykit.report import plots
from deploykit.report.tables import cell_parts, table_rows

# status → (symbol, word); the CSS colours them, the symbol and word say it without colour
STATUS = {"pass": ("✓", "PASS"), "fail": ("✗", "FAIL"), "error": ("⚠", "ERROR"),
          "vacuous": ("∅", "VACUOUS"), "n/a": ("–", "N/A")}
REDUCED = ("fp16", "int8")


def render(result: dict[str, Any], title: str) -> str:
    """The whole page for ``result`` (the what-if report's schema)."""
    flows = [r["flow"] for r in result["rows"]]
    sections = [_summary(result), _matrix(result), _scatter(result, flows),
                _quantized(result, flows), _training(result)]
    return PAGE.format(title=escape(title), css=CSS, body="\n".join(sections))


def _summary(result: dict[str, Any]) -> str:
    counts: dict[str, int] = {}
    for r in result["rows"]:
        for c in r.get("cells") or []:
            counts[c["status"]] = counts.get(c["status"], 0) + 1
    failed_flows = [r["flow"] for r in result["rows"] if not r["ok"]]
    parts = [f"{n} {STATUS.get(s, ('', s.upper()))[1].lower()}" for s, n in counts.items()]
    said = f"{sum(counts.values())} cells: {', '.join(parts) or 'none'}"
    if failed_flows:
        said += f"; training failed for {', '.join(failed_flows)}"
    if result.get("bundle"):
        made = f"Exported {escape(result['created'])}" if result.get("created") else "Exported"
    else:
        seconds = f" in {result['seconds']:.0f} s" if result.get("seconds") else ""
        made = (f'Data <b>{escape(str(result.get("data", "")))}</b>, seed '
                f'{escape(str(result.get("seed", "")))}{seconds}')
    return (f'<p class="summary">{made}. {escape(said)}.</p>'
            f'<p class="key">{" ".join(_badge(s) for s in STATUS)} — '
            f'open a cell for its route, converters, runtime and full reason.</p>')


def _badge(status: str) -> str:
    symbol, word = STATUS.get(status, ("?", status.upper()))
    return f'<span class="badge {_css(status)}">{symbol} {word}</span>'


def _css(status: str) -> str:
    return "na" if status == "n/a" else status


def _matrix(result: dict[str, Any]) -> str:
    targets = result.get("targets", [])
    head = "".join(f'<th scope="col">{escape(t)}</th>' for t in targets)
    body = []
    for r in result["rows"]:
        name = f'<th scope="row" class="flow">{escape(r["flow"])}</th>'
        if not r["ok"]:
            body.append(f'<tr data-flow="{escape(r["flow"])}">{name}<td colspan="{len(targets)}"'
                        f' class="failed-flow error">{_badge("error")} training failed: '
                        f'{escape(r["error"] or "")}{_tail(r.get("log_tail"))}</td></tr>')
            continue
        by = {c["target"]: c for c in r.get("cells") or []}
        cells = "".join(cell_html(r["flow"], by[t]) if t in by else "<td></td>" for t in targets)
        body.append(f'<tr data-flow="{escape(r["flow"])}">{name}{cells}</tr>')
    heading = "Every target" if result.get("bundle") else "Every flow × every target"
    return (f'<section id="matrix"><h2>{heading}</h2>'
            f'<p>Parity against the original model, artifact size and median batch-1 latency.'
            f'</p><div class="scroll"><table class="matrix"><thead><tr><th scope="col">flow'
            f'</th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div></section>')


def cell_html(flow: str, c: dict[str, Any], tag: str = "td") -> str:
    """One matrix cell: verdict, figure, size and latency, expanding to :func:`details`."""
    symbol, word = STATUS.get(c["status"], ("?", c["status"].upper()))
    figure, size, latency = cell_parts(c)[1:]
    lines = "".join(f"<span>{escape(v)}</span>" for v in (figure, size, latency) if v)
    return (f'<{tag} class="cell {_css(c["status"])}" data-flow="{escape(flow)}" '
            f'data-target="{escape(c["target"])}" data-status="{escape(c["status"])}">'
            f'<details><summary><b>{symbol} {word}</b>{lines}</summary>{details(c)}</details>'
            f'</{tag}>')


def details(c: dict[str, Any]) -> str:
    """A cell's evidence: route, converters, verifying runtime, parity, timings, the reason."""
    items = [("route", " → ".join(c.get("route") or []) or "none")]
    if c.get("runtime"):
        items.append(("runtime", c["runtime"]))
    items += [(k, _versions(c.get(field))) for k, field in
              (("converters", "converter_versions"), ("verified with", "verified_with"))
              if c.get(field)]
    p = c.get("parity")
    if p:
        items += _parity(p)
    if c.get("seconds"):
        items.append(("seconds", ", ".join(f"{k} {v:g}" for k, v in c["seconds"].items())))
    if c.get("placement"):
        items.append(("placement", "; ".join(f"{k}: {v}" for k, v in c["placement"].items())))
    dl = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in items)
    why = f'<p class="reason">{escape(c["reason"])}</p>' if c.get("reason") else ""
    return f"<dl>{dl}</dl>{why}{_tail(c.get('log_tail'))}"


def _versions(v: dict[str, str] | None) -> str:
    return ", ".join(f"{k} {x}" for k, x in (v or {}).items())


def _parity(p: dict[str, Any]) -> list[tuple[str, str]]:
    items = [("profile", p.get("profile") or "")]
    if p.get("batches"):
        items.append(("batches", ", ".join(f"{k}: {v}" for k, v in p["batches"].items())))
    for o in p.get("outputs") or []:
        if o.get("max_abs") is not None:
            items.append((f"output {o['name']}", f"max|Δ| {o['max_abs']:.2e}, max rel "
                                                 f"{o.get('max_rel') or 0:.2e}"))
    if p.get("label_agreement") is not None:
        items.append(("labels agree", f"{p['label_agreement']:.2%}"))
    m = p.get("metric")
    if m:
        items.append((m["name"], f"{m['artifact']:.4f} (original {m['original']:.4f})"))
    return items


def _tail(tail: str | None) -> str:
    return (f"<details class=\"tail\"><summary>last lines of its output</summary><pre>"
            f"{escape(tail)}</pre></details>") if tail else ""


def _scatter(result: dict[str, Any], flows: list[str]) -> str:
    targets = result.get("targets", [])
    points, rows = [], []
    for r in result["rows"]:
        for c in r.get("cells") or []:
            if c.get("latency_ms") is None or not c.get("bytes"):
                continue
            metric = (c.get("parity") or {}).get("metric")
            said = f"{metric['name']} {metric['artifact']:.4f}" if metric else ""
            title = (f"{r['flow']} → {c['target']}: {human_bytes(c['bytes'])}, "
                     f"{c['latency_ms']:.3f} ms batch-1" + (f", {said}" if said else ""))
            points.append(plots.Point(r["flow"], c["target"], c["bytes"], c["latency_ms"], title))
            rows.append((r["flow"], c, said))
    table = "".join(
        f'<tr><td>{_flow_key(f, flows)}</td><td>{_target_key(c["target"], targets)}</td>'
        f'<td class="num">{human_bytes(c["bytes"])}</td><td class="num">'
        f'{c["latency_ms"]:.3f} ms</td><td>{escape(said)}</td><td>{_badge(c["status"])}</td>'
        f'</tr>' for f, c, said in rows)
    head = ("<th>flow</th><th>target</th><th>size</th><th>batch-1</th>"
            "<th>task metric (probe set)</th><th>verdict</th>")
    return (f'<section id="tradeoff"><h2>Size against speed</h2><p>One colour per flow, one '
            f'shape per target; hover a mark for its figures. Down and to the left is smaller '
            f'and faster.</p><figure class="wide">{plots.scatter(points, flows, targets)}'
            f'<figcaption>{_legend(flows, targets)}</figcaption></figure>'
            f'{_table_of("the plotted artifacts", len(rows), head, table)}</section>')


def _table_of(what: str, n: int, head: str, body: str) -> str:
    """A picture's table: the same figures in rows, for reading without the picture."""
    return (f'<details class="table"><summary>{escape(what.capitalize())} as a table ({n} '
            f'rows)</summary><div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>'
            f'{body}</tbody></table></div></details>')


def _flow_key(flow: str, flows: list[str]) -> str:
    return (f'<span class="entry"><span class="swatch" style="background:'
            f'{plots.colour(flows.index(flow))}"></span>{escape(flow)}</span>')


def _target_key(target: str, targets: list[str]) -> str:
    return f'<span class="entry">{plots.legend_marker(targets.index(target))}{escape(target)}</span>'


def _legend(flows: list[str], targets: list[str]) -> str:
    return ('<span class="legend">' + " ".join(_flow_key(f, flows) for f in flows) +
            '</span><span class="legend">' + " ".join(_target_key(t, targets) for t in targets)
            + "</span>")


def _quantized(result: dict[str, Any], flows: list[str]) -> str:
    bars, rows = [], []
    for r in result["rows"]:
        for c, fp32 in _reduced(r.get("cells") or []):
            t = tradeoff(c["bytes"], fp32["bytes"], (c.get("parity") or {}).get("metric"))
            change = _change(t["metric"], t["metric_change"])
            label = f"{t['size_vs_fp32']:.0%} of {fp32['target']}, {change}"
            bars.append(plots.Bar(r["flow"], c["target"], t["size_vs_fp32"], label))
            rows.append(f'<tr><td>{_flow_key(r["flow"], flows)}</td><td>{escape(c["target"])}'
                        f'</td><td class="num">{human_bytes(c["bytes"])}</td><td>'
                        f'{escape(fp32["target"])} {human_bytes(fp32["bytes"])}</td>'
                        f'<td class="num">{t["size_vs_fp32"]:.0%}</td><td>{escape(change)}'
                        f'</td><td>{_badge(c["status"])}</td></tr>')
    head = ("<th>flow</th><th>artifact</th><th>size</th><th>fp32 sibling</th><th>share</th>"
            "<th>metric change</th><th>verdict</th>")
    return (f'<section id="reduced"><h2>fp16 and int8 against fp32</h2><p>Each reduced-'
            f'precision artifact\'s size as a share of its fp32 sibling (same runtime), and the '
            f'change of the task metric on the probe set against the original model.</p>'
            f'<figure class="wide">{plots.bars(bars, flows)}</figure>'
            f'{_table_of("the compared artifacts", len(rows), head, "".join(rows))}</section>')


def _change(metric: str | None, change: float | None) -> str:
    if change is None:
        return "metric unknown (no true labels)"
    return f"{metric} {'unchanged' if change == 0 else f'{change:+.4f}'}"


def _reduced(cells: list[dict[str, Any]]):
    """``(reduced cell, its fp32 sibling)`` for every fp16 / int8 cell that has both sizes."""
    def runtime(c: dict[str, Any]) -> str:  # reports before the runtime was recorded
        return c.get("runtime") or c["target"].removesuffix("-fp16").removesuffix("-int8")

    fp32 = {runtime(c): c for c in cells
            if (c.get("parity") or {}).get("profile") == "fp32" and c.get("bytes")}
    for c in cells:
        if (c.get("parity") or {}).get("profile") in REDUCED and c.get("bytes") \
                and runtime(c) in fp32:
            yield c, fp32[runtime(c)]


def _training(result: dict[str, Any]) -> str:
    header, cells = table_rows(result)
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(v)}</td>" for v in row) + "</tr>"
                   for row in cells)
    auto = result.get("auto")
    decision = (f'<p class="auto"><b>Auto path: {escape(auto["chosen"])}</b> — '
                f'{escape(auto["reason"])}. <span class="rule">Rule: {escape(auto["rule"])}.'
                f'</span></p>') if auto else ""
    return (f'<section id="training"><h2>Training</h2><div class="scroll"><table>'
            f'<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{decision}'
            f'</section>')


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{css}</style></head>
<body><header><h1>{title}</h1></header><main>
{body}
</main><footer>Written by deploykit from its report data; this file needs nothing else.</footer>
</body></html>
"""

# A cell and its evidence: shared with the page of ``deploykit serve``.
CELL_CSS = """
.cell{min-width:6.2rem;font-size:.82rem}.cell summary{cursor:pointer;list-style:none}
.cell summary span{display:block;white-space:nowrap}.cell details[open]{min-width:15rem}
.cell dl{margin:.3rem 0}.cell dt{font-weight:600}
.cell dd{margin:0 0 .15rem .6rem;overflow-wrap:anywhere}
.reason{white-space:pre-wrap;overflow-wrap:anywhere;margin:.3rem 0}
pre{white-space:pre-wrap;overflow-wrap:anywhere;font-size:.8rem;background:#f6f6f6;padding:4px}
.pass{background:#dff3e0}.fail{background:#f9d3d3}.error{background:#fde3c8}
.vacuous{background:#fff2b3}.na{background:#eee;color:#555}
"""

CSS = CELL_CSS + """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;padding:1rem;max-width:1400px;color:#111}
h1{font-size:1.4rem;margin:.2rem 0}h2{font-size:1.15rem;margin:1.6rem 0 .4rem}
table{border-collapse:collapse}th,td{border:1px solid #bbb;padding:4px 6px;text-align:left;
vertical-align:top}thead th{background:#f1f1f1}.num{text-align:right;white-space:nowrap}
.scroll{overflow-x:auto;max-width:100%}
.matrix th.flow{position:sticky;left:0;background:#fff;z-index:1}
.badge{display:inline-block;padding:0 .4em;border:1px solid #999;border-radius:3px;
white-space:nowrap;font-size:.85em}
figure.wide{margin:0;max-width:900px}details.table{margin:.5rem 0}
details.table>summary{cursor:pointer;font-weight:600}details.table td{white-space:nowrap}
svg.plot{width:100%;height:auto;font-size:11px;background:#fff}
svg .grid{stroke:#ddd}svg .ref{stroke:#333;stroke-dasharray:4 3}svg .axis{font-size:12px}
.entry{white-space:nowrap;margin-right:.6rem}
.swatch{display:inline-block;width:.8em;height:.8em;margin-right:.3em;border:1px solid #222;
vertical-align:-1px}.mark{vertical-align:-2px;margin-right:.25em}
.legend{display:block;margin:.3rem 0}
caption{text-align:left;font-weight:600;padding:.2rem 0}
footer{margin-top:2rem;color:#555;font-size:.85rem}
@media (max-width:600px){body{padding:.5rem;font-size:14px}.cell{min-width:6rem}}
"""
