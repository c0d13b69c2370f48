"""The conversion graph: formats are nodes, converters are registered edges.

A format module (see :mod:`deploykit.formats`) declares its node with :func:`node`, the
facts every consumer needs included: its column in the what-if matrix, where it runs, which
device packages take it, the Python distribution that runs it, its parity profile. Converters
register with :func:`edge`. Everything else derives its lists from here (``--to all``, the
server's defaults, the package step, the report columns), so adding a format is adding a
module. This module holds the registry only; :func:`deploykit.formats.load` fills it.

An edge function has the signature ``fn(src: Path, out: Path, ctx: EdgeContext) -> dict``:
it reads the artifact at ``src``, writes its own artifact under the empty folder ``out``,
and returns facts for the manifest (``file``: the artifact's path relative to ``out``,
optionally ``batch`` when the artifact has a fixed batch size, ``outputs``: the artifact's
output names in signature order, ``versions``: converter versions, ``options``: options
beyond the converter's defaults the model needed, name -> why). Edges always run in a
worker process (:mod:`deploykit.worker`), with ``KERAS_BACKEND`` set when the edge asks.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploykit.errors import NoRouteError

SERVER, BROWSER = "server", "browser"  # where a node's runtime runs when served


@dataclass(frozen=True)
class Node:
    """A format in the graph, and what the rest of deploykit needs to know about it.

    Attributes:
        name: the node's name (a target name when ``column`` is set).
        runtime: the name its runner is registered under (several nodes may share one).
        profile: the parity profile its artifacts are held to (``fp32``, ``fp16``, ``int8``).
        column: its position among the matrix's columns; ``None`` for sources and
            intermediates, which are not targets.
        runs: ``"server"`` (the server may load it) or ``"browser"`` (the page runs it).
        serve_rank: the server's preference for it as a model's default artifact (lower
            first); ``None``: never the default.
        devices: the device packages (``deploykit package --for``) that take it.
        distributions: the Python distributions that run it, first installed one wins
            (recorded as the verifying runtime's version).
        extra: the deploykit extra that installs its runtime.
        description: one line for ``deploykit formats``.
    """

    name: str
    runtime: str
    profile: str = "fp32"
    column: int | None = None
    runs: str = SERVER
    serve_rank: int | None = None
    devices: tuple[str, ...] = ()
    distributions: tuple[str, ...] = ()
    extra: str = ""
    description: str = ""

    @property
    def is_target(self) -> bool:
        return self.column is not None


@dataclass(frozen=True)
class EdgeContext:
    """What a converter may need besides its input artifact (JSON-serialisable)."""

    signature: dict[str, Any]
    calibration: str | None = None  # .npz of inputs by name for int8 calibration
    options: dict[str, Any] = field(default_factory=dict)

    def in_output_order(self, keys: list[str]) -> list[str]:
        """A converter's output ``keys`` in the signature's order when they are the
        signature's own names (a TensorFlow signature lists them sorted), else as given."""
        names = [s["name"] for s in self.signature["outputs"]]
        return names if sorted(keys) == sorted(names) else list(keys)


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


NODES: dict[str, Node] = {}
EDGES: dict[str, Edge] = {}


def node(name: str, runtime: str, **facts: Any) -> Node:
    """Register (or re-register, on a module reload) a format.

    Args:
        name: the node's name.
        runtime: the name its Runner is registered under (``register_runner``).
        **facts: the other :class:`Node` fields (``column`` makes it a target).

    Returns:
        The :class:`Node`.
    """
    NODES[name] = Node(name, runtime, **facts)
    return NODES[name]


def edge(src: str, dst: str, *, requires: tuple[str, ...] = (), keras_backend: str | None = None,
         cost: float = 1.0, timeout: float = 600.0):
    """Register a converter from node ``src`` to node ``dst`` (a decorator).

    Args:
        src, dst: node names.
        requires: import names it needs (shown by ``deploykit formats``).
        keras_backend: the Keras backend its worker must run (``tensorflow`` or ``torch``).
        cost: its weight when :func:`plan` picks the cheapest route.
        timeout: the most seconds it may take.

    Raises:
        ValueError: another converter between the same nodes is registered already.
    """

    def register(fn):
        e = Edge(src, dst, fn, tuple(requires), keras_backend, cost, timeout)
        if e.name in EDGES and EDGES[e.name].fn.__qualname__ != fn.__qualname__:
            raise ValueError(f"edge {e.name} registered twice")
        EDGES[e.name] = e
        return fn

    return register


def targets() -> list[str]:
    """Every target node, in the matrix's column order."""
    return [n.name for n in sorted((n for n in NODES.values() if n.is_target),
                                   key=lambda n: (n.column, n.name))]


def plan(src: str, dst: str) -> list[Edge]:
    """The cheapest route from ``src`` to ``dst`` (Dijkstra on edge costs).

    Args:
        src, dst: node names.

    Returns:
        The edges in order (empty when ``src`` is ``dst``).

    Raises:
        NoRouteError: naming the targets that *are* reachable from ``src``.
    """
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
    """Target nodes reachable from ``src``, in column order."""
    seen, todo = {src}, [src]
    while todo:
        at = todo.pop()
        for e in EDGES.values():
            if e.src == at and e.dst not in seen:
                seen.add(e.dst)
                todo.append(e.dst)
    return [t for t in targets() if t in seen]


def describe() -> str:
    """The graph as text, for ``deploykit formats``."""
    lines = ["nodes:"]
    for n in sorted(NODES.values(), key=lambda n: (n.column is None, n.column or 0, n.name)):
        if n.is_target:
            where = n.runs + (f", packages {'/'.join(n.devices)}" if n.devices else "")
            kind = f"target, {n.profile}, {where}"
        else:
            kind = "source/intermediate"
        lines.append(f"  {n.name:13s} runtime {n.runtime:13s} ({kind}) {n.description}")
    lines.append("edges:")
    for e in EDGES.values():
        env = f"  [worker: KERAS_BACKEND={e.keras_backend}]" if e.keras_backend else ""
        lines.append(f"  {e.src:13s} -> {e.dst:13s} {e.name}  needs {', '.join(e.requires)}{env}")
    return "\n".join(lines)
