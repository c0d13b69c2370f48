"""The conversion graph: formats are nodes, converters are registered edges.

A converter registers itself with :func:`edge`; :func:`plan` finds the cheapest route from a
source node to a target node; ``deploykit formats`` prints the graph. Adding a format is
adding a module under :mod:`deploykit.formats` — nothing here changes.

An edge function has the signature ``fn(src: Path, out: Path, ctx: EdgeContext) -> dict``:
it reads the artifact at ``src``, writes its own artifact under the empty folder ``out``,
and returns facts for the manifest (``file``: the artifact's path relative to ``out``,
optionally ``batch`` when the artifact has a fixed batch size, ``outputs``: the artifact's
output names in signature order, ``versions``: converter versions). Edges always run in a
worker process (:mod:`deploykit.worker`), with ``KERAS_BACKEND`` set when the edge asks.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploykit.errors import NoRouteError


@dataclass(frozen=True)
class Node:
    """A format in the graph. ``runtime`` names the runner format; ``profile`` the parity rule."""

    name: str
    runtime: str
    profile: str = "fp32"
    is_target: bool = True
    description: str = ""


@dataclass(frozen=True)
class EdgeContext:
    """What a converter may need besides its input artifact (JSON-serialisable)."""

    signature: dict[str, Any]
    calibration: str | None = None  # .npy of float32 inputs for int8 calibration
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    fn: Callable[[Path, Path, EdgeContext], dict[str, Any]]
    requires: tuple[str, ...]
    keras_backend: str | None = None
    cost: float = 1.0
    timeout: float = 600.0

    @property
    def name(self) -> str:
        return f"{self.src}_to_{self.dst}".replace("-", "_")

    @property
    def target(self) -> str:
        """``module:function`` for the worker."""
        return f"{self.fn.__module__}:{self.fn.__name__}"


NODES: dict[str, Node] = {}
EDGES: dict[str, Edge] = {}

# The matrix's columns, in order.
TARGETS = ("saved_model", "tflite", "tflite-fp16", "tflite-int8", "onnx", "torchscript", "ptl",
           "executorch", "tfjs", "tfjs-fp16", "onnx-web")


def node(name: str, runtime: str, *, profile: str = "fp32", is_target: bool = True,
         description: str = "") -> Node:
    NODES[name] = Node(name, runtime, profile, is_target, description)
    return NODES[name]


def edge(src: str, dst: str, *, requires: tuple[str, ...] = (), keras_backend: str | None = None,
         cost: float = 1.0, timeout: float = 600.0):
    """Register a converter from node ``src`` to node ``dst`` (a decorator)."""

    def register(fn):
        e = Edge(src, dst, fn, tuple(requires), keras_backend, cost, timeout)
        if e.name in EDGES:
            raise ValueError(f"edge {e.name} registered twice")
        EDGES[e.name] = e
        return fn

    return register


def load_registry() -> None:
    """Import every format module so its nodes and edges are registered."""
    import deploykit.formats  # noqa: F401  (registration happens on import)


def plan(src: str, dst: str) -> list[Edge]:
    """The cheapest route from ``src`` to ``dst`` (Dijkstra on edge costs).

    Raises:
        NoRouteError: naming the targets that *are* reachable from ``src``.
    """
    load_registry()
    if src == dst:
        return []
    best: dict[str, float] = {src: 0.0}
    queue: list[tuple[float, int, str, list[Edge]]] = [(0.0, 0, src, [])]
    tie = 0
    while queue:
        cost, _, at, route = heapq.heappop(queue)
        if at == dst:
            return route
        for e in (e for e in EDGES.values() if e.src == at):
            c = cost + e.cost
            if c < best.get(e.dst, float("inf")):
                best[e.dst] = c
                tie += 1
                heapq.heappush(queue, (c, tie, e.dst, [*route, e]))
    reach = reachable(src)
    raise NoRouteError(f"no route from '{src}' to '{dst}'; reachable from '{src}': "
                       f"{', '.join(reach) or 'nothing'}")


def reachable(src: str) -> list[str]:
    """Target nodes reachable from ``src``, in matrix order."""
    load_registry()
    seen, todo = {src}, [src]
    while todo:
        at = todo.pop()
        for e in EDGES.values():
            if e.src == at and e.dst not in seen:
                seen.add(e.dst)
                todo.append(e.dst)
    return [t for t in TARGETS if t in seen] + sorted(
        n for n in seen if n not in TARGETS and n != src and NODES.get(n, Node(n, n)).is_target)


def describe() -> str:
    """The graph as text, for ``deploykit formats``."""
    load_registry()
    lines = ["nodes:"]
    for n in NODES.values():
        kind = f"target, {n.profile}" if n.is_target else "source/intermediate"
        lines.append(f"  {n.name:13s} runtime {n.runtime:12s} ({kind}) {n.description}")
    lines.append("edges:")
    for e in EDGES.values():
        env = f"  [worker: KERAS_BACKEND={e.keras_backend}]" if e.keras_backend else ""
        lines.append(f"  {e.src:13s} -> {e.dst:13s} {e.name}  needs {', '.join(e.requires)}{env}")
    return "\n".join(lines)
