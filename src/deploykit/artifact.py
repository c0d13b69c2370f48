"""The manifest's records, typed: one verified artifact, and one target that failed.

A bundle's ``manifest.json`` is the interface between export, verify, serve, package and the
device runners; these frozen types are how Python code reads and writes it (the JSON keys
are the field names). :meth:`Artifact.from_dict` also reads bundles of schema
``deploykit.bundle/1``, which carried the runtime twice (``format`` and ``runtime``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from deploykit.parity import ParityResult
from deploykit.signature import Signature, TensorSpec

# Bundles of schema /1 did not record where an artifact runs; their browser runtimes were these.
_BUNDLE_1_BROWSER = {"tfjs": "browser", "onnx-web": "browser"}


@dataclass(frozen=True)
class Artifact:
    """One artifact of a bundle: where it is, how it was made, and how it verified.

    Attributes:
        target: the graph node it was made for (``tflite-int8``), also its folder name.
        runtime: the runner that loads it (``tflite``).
        path: the file (or folder) the runtime loads, relative to the bundle.
        route: the nodes from the source to ``target``.
        profile: the parity profile it was held to.
        parity: the parity result on the probe set.
        runs: ``"server"`` or ``"browser"`` (where its runtime runs; see the graph's nodes).
        batch: the fixed batch size it accepts, or ``None`` for any batch.
        any_length: it takes its inputs' ``open_axes`` at any size, not only the signature's
            (proved on the probe set cut to a shorter length, with the original's outputs).
        outputs: the runtime's output names in signature order, when they differ.
        converter_versions: the converters that wrote it, along its whole route.
        converter_options: options its route needed beyond the converters' defaults (e.g.
            ``unroll_recurrent``), each with why.
        verified_with: the runtime version that checked its parity.
        latency_ms: median batch-1 latency when it passed.
        files: sha256 of every file under its folder (paths relative to the bundle).
        sha256: one digest over ``files``.
        bytes: the size of its folder.
        placement: made on a Ray cluster: the node that ran its last conversion
            (``converted_on``), each edge's node (``edges``), the node that verified it
            (``verified_on``), and ``retried`` when a node was lost and a task ran again.
    """

    target: str
    runtime: str
    path: str
    route: tuple[str, ...]
    profile: str
    parity: ParityResult
    runs: str = "server"
    batch: int | None = None
    any_length: bool = False
    outputs: tuple[str, ...] | None = None
    converter_versions: dict[str, str] = field(default_factory=dict)
    converter_options: dict[str, str] = field(default_factory=dict)
    verified_with: dict[str, str] = field(default_factory=dict)
    latency_ms: float | None = None
    files: dict[str, str] = field(default_factory=dict)
    sha256: str = ""
    bytes: int = 0
    placement: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return self.parity.passed

    @property
    def folder(self) -> str:
        """Its folder, relative to the bundle."""
        return f"artifacts/{self.target}"

    def signature(self, bundle: Signature, with_batch: bool = True) -> Signature:
        """The bundle's signature with this artifact's fixed batch size, if it has one (and
        ``with_batch``: a server runs other batches in chunks of it), and the inputs' open
        axes dynamic when it takes any length."""
        inputs = tuple(s.opened() for s in bundle.inputs) if self.any_length else bundle.inputs
        if not self.batch or not with_batch:
            return dataclasses.replace(bundle, inputs=inputs)

        def batched(spec: TensorSpec) -> TensorSpec:
            return dataclasses.replace(spec, shape=(self.batch, *spec.shape[1:]))
        return dataclasses.replace(bundle, inputs=tuple(map(batched, inputs)),
                                   outputs=tuple(map(batched, bundle.outputs)))

    def replace(self, **changes: Any) -> Artifact:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["route"], d["parity"] = list(self.route), self.parity.to_dict()
        d["outputs"] = list(self.outputs) if self.outputs is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Artifact:
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw.setdefault("runtime", d.get("format", ""))
        kw.setdefault("runs", _BUNDLE_1_BROWSER.get(kw["runtime"], "server"))
        kw["route"] = tuple(d.get("route") or ())
        kw["outputs"] = tuple(d["outputs"]) if d.get("outputs") else None
        kw["parity"] = ParityResult.from_dict(d["parity"])
        return cls(**kw)


@dataclass(frozen=True)
class Failure:
    """A target that produced no passing artifact: the whole reason, and its converter's
    last lines when a converter failed."""

    target: str
    status: str  # "error" (conversion), "fail" (parity) or "vacuous" (nothing proven)
    route: tuple[str, ...]
    reason: str
    log_tail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "route": list(self.route)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Failure:
        return cls(d["target"], d["status"], tuple(d.get("route") or ()), d.get("reason") or "",
                   d.get("log_tail"))


def tradeoff(size: int, fp32_size: int | None, metric: dict[str, Any] | None) -> dict[str, Any]:
    """A reduced-precision artifact against its fp32 sibling: its size as a share of the
    sibling's, and the task-metric change on the probe set (artifact minus original; None
    when the truth is unknown)."""
    return {"bytes": size,
            "size_vs_fp32": round(size / fp32_size, 3) if fp32_size else None,
            "metric": metric.get("name") if metric else None,
            "metric_change": round(-metric["drop"], 4) + 0.0 if metric else None}
