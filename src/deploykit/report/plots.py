"""The report's two pictures as inline SVG (no script, no fonts fetched): size against batch-1
latency for every artifact, and what fp16 / int8 did to size and to the task metric.

Every mark carries a ``<title>`` (the browser shows it on hover) and a text label or a shape,
so neither picture depends on colour alone; the page puts a table beside each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

# Okabe-Ito: told apart by people with any common colour-vision deficiency.
PALETTE = ("#E69F00", "#0072B2", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#000000")

# One shape per target, drawn around (0, 0) at radius ~5; the 12th target reuses them hollow.
SHAPES = (
    ("circle", "M5,0A5,5 0 1,1 -5,0A5,5 0 1,1 5,0Z"),
    ("square", "M-4.5,-4.5H4.5V4.5H-4.5Z"),
    ("triangle", "M0,-5.5L5,4H-5Z"),
    ("diamond", "M0,-6L5,0L0,6L-5,0Z"),
    ("down triangle", "M0,5.5L5,-4H-5Z"),
    ("plus", "M-1.8,-6H1.8V-1.8H6V1.8H1.8V6H-1.8V1.8H-6V-1.8H-1.8Z"),
    ("cross", "M-5,-3.2L-3.2,-5L0,-1.8L3.2,-5L5,-3.2L1.8,0L5,3.2L3.2,5L0,1.8L-3.2,5L-5,3.2"
              "L-1.8,0Z"),
    ("star", "M0,-6L1.6,-2L6,-1.9L2.5,1L3.7,5.5L0,3L-3.7,5.5L-2.5,1L-6,-1.9L-1.6,-2Z"),
    ("hexagon", "M5,0L2.5,4.3H-2.5L-5,0L-2.5,-4.3H2.5Z"),
    ("pentagon", "M0,-5.5L5.2,-1.7L3.2,4.5H-3.2L-5.2,-1.7Z"),
    ("right triangle", "M5.5,0L-4,5V-5Z"),
)

W, H = 640, 400  # the scatter's drawing size (it scales with the page)
LEFT, RIGHT, TOP, BOTTOM = 70, 16, 16, 48


@dataclass(frozen=True)
class Point:
    """One artifact in the scatter."""

    flow: str
    target: str
    bytes: int
    latency_ms: float
    title: str  # the hover text


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def marker(i: int, fill: str, extra: str = "") -> str:
    """The ``i``-th target's shape in ``fill`` (hollow from the 12th on)."""
    name, d = SHAPES[i % len(SHAPES)]
    paint = f'fill="{fill}" stroke="#222" stroke-width="0.8"' if i < len(SHAPES) \
        else f'fill="white" stroke="{fill}" stroke-width="2"'
    return f'<path d="{d}" {paint} data-shape="{name}"{extra}/>'


def legend_marker(i: int, fill: str = "#777") -> str:
    """A small standalone SVG of the ``i``-th shape, for legends and tables."""
    return (f'<svg class="mark" width="14" height="14" viewBox="-7 -7 14 14" aria-hidden="true">'
            f'{marker(i, fill)}</svg>')


def _log_axis(values: list[float]) -> tuple[float, float]:
    lo, hi = math.log10(min(values)), math.log10(max(values))
    if hi - lo < 1:  # at least one decade, centred on the data
        mid = (hi + lo) / 2
        lo, hi = mid - 0.5, mid + 0.5
    pad = (hi - lo) * 0.06
    return lo - pad, hi + pad


def _ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks inside [10**lo, 10**hi] (only decades when that is already enough)."""
    steps = (1,) if hi - lo > 3 else (1, 2, 5)
    out = []
    for e in range(math.floor(lo), math.ceil(hi) + 1):
        out += [s * 10.0 ** e for s in steps if lo <= math.log10(s * 10.0 ** e) <= hi]
    return out


def _ms(v: float) -> str:
    return f"{v:g} ms"


def _kb(v: float) -> str:
    return f"{v / 1024:g} MB" if v >= 10_000 else f"{v:g} KB"


def scatter(points: list[Point], flows: list[str], targets: list[str]) -> str:
    """Size (y, log) against batch-1 latency (x, log): one colour per flow, one shape per
    target."""
    if not points:
        return '<p class="empty">No artifact passed with a latency to plot.</p>'
    xl, xh = _log_axis([p.latency_ms for p in points])
    yl, yh = _log_axis([p.bytes / 1024 for p in points])  # KB, so the ticks are round

    def x(v: float) -> float:
        return LEFT + (math.log10(v) - xl) / (xh - xl) * (W - LEFT - RIGHT)

    def y(v: float) -> float:
        return H - BOTTOM - (math.log10(v) - yl) / (yh - yl) * (H - TOP - BOTTOM)

    grid = [f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{TOP}" y2="{H - BOTTOM}" class="grid"/>'
            f'<text x="{x(t):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{_ms(t)}</text>'
            for t in _ticks(xl, xh)]
    grid += [f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(t):.1f}" y2="{y(t):.1f}" class="grid"/>'
             f'<text x="{LEFT - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{_kb(t)}</text>'
             for t in _ticks(yl, yh)]
    marks = [f'<g class="point" data-flow="{escape(p.flow)}" data-target="{escape(p.target)}" '
             f'transform="translate({x(p.latency_ms):.1f},{y(p.bytes / 1024):.1f})">'
             f'<title>{escape(p.title)}</title>'
             f'{marker(targets.index(p.target), colour(flows.index(p.flow)))}</g>'
             for p in points]
    return (f'<svg id="scatter" class="plot" viewBox="0 0 {W} {H}" role="img" '
            f'aria-labelledby="scatter-title">'
            f'<title id="scatter-title">Artifact size against batch-1 latency, log scales; '
            f'{len(points)} artifacts (the table below lists them)</title>'
            f'{"".join(grid)}'
            f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 8}" text-anchor="middle" class="axis">'
            f'batch-1 latency (median, log scale)</text>'
            f'<text transform="translate(14,{(TOP + H - BOTTOM) / 2}) rotate(-90)" '
            f'text-anchor="middle" class="axis">artifact size (log scale)</text>'
            f'{"".join(marks)}</svg>')


@dataclass(frozen=True)
class Bar:
    """One reduced-precision artifact against its fp32 sibling."""

    flow: str
    target: str
    size_vs_fp32: float  # its bytes / the fp32 artifact's bytes
    label: str  # what the bar says in words (size and metric change)


def bars(items: list[Bar], flows: list[str]) -> str:
    """One horizontal bar per fp16 / int8 artifact: its size as a share of fp32 (the 100 %
    line is fp32), labelled with the share and the task-metric change."""
    if not items:
        return '<p class="empty">No fp16 or int8 artifact with an fp32 sibling to compare.</p>'
    row, left, width = 24, 190, 300
    top = max(1.0, *(b.size_vs_fp32 for b in items))
    h = TOP + row * len(items) + 30

    def scale(v: float) -> float:
        return left + v / top * width

    out = []
    for i, b in enumerate(items):
        y0 = TOP + i * row
        out.append(
            f'<g class="bar" data-flow="{escape(b.flow)}" data-target="{escape(b.target)}">'
            f'<title>{escape(b.flow)} → {escape(b.target)}: {escape(b.label)}</title>'
            f'<text x="{left - 6}" y="{y0 + 15}" text-anchor="end">{escape(b.flow)} '
            f'{escape(b.target)}</text>'
            f'<rect x="{left}" y="{y0 + 4}" width="{scale(b.size_vs_fp32) - left:.1f}" '
            f'height="{row - 8}" fill="{colour(flows.index(b.flow))}" stroke="#222" '
            f'stroke-width="0.6"/>'
            f'<text x="{scale(b.size_vs_fp32) + 6:.1f}" y="{y0 + 15}">{escape(b.label)}</text>'
            f'</g>')
    fp32 = scale(1.0)
    return (f'<svg id="quantized" class="plot" viewBox="0 0 {left + width + 260} {h}" '
            f'role="img" aria-labelledby="quantized-title">'
            f'<title id="quantized-title">Size of each fp16 and int8 artifact as a share of its '
            f'fp32 sibling, with the task-metric change (the table below lists them)</title>'
            f'<line x1="{fp32:.1f}" x2="{fp32:.1f}" y1="{TOP - 6}" y2="{h - 24}" class="ref"/>'
            f'<text x="{fp32:.1f}" y="{h - 8}" text-anchor="middle" class="axis">fp32 = 100 %'
            f'</text>{"".join(out)}</svg>')
