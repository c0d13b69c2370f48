"""Served models: a loaded bundle, its runners (one lock each: not every runtime is
thread-safe), and live re-validation that first re-hashes the artifact files."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deploykit.bundle import Bundle, load_bundle, sha256
from deploykit.errors import BundleError, DeploykitError, InputError
from deploykit.parity import check

# Preferred default artifact for requests that do not name one: light runtimes first.
PREFERENCE = ("onnx", "tflite", "torchscript", "executorch", "ptl", "tflite-fp16", "tflite-int8",
              "saved_model", "onnx-web", "tfjs", "tfjs-fp16")
SERVER_SIDE = {"saved_model", "tflite", "onnx", "torchscript", "ptl", "executorch"}


@dataclass
class Served:
    """One artifact ready to answer, with its own lock."""

    target: str
    runner: Any
    artifact: dict[str, Any]
    lock: threading.Lock = field(default_factory=threading.Lock)

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if self.runner.thread_safe:
            return self.runner.predict(x)
        with self.lock:
            return self.runner.predict(x)


class ServedModel:
    """A bundle loaded for serving; ``targets`` picks which artifacts (default: all that
    run server-side; browser artifacts are for the page)."""

    def __init__(self, path: str | Path, targets: list[str] | None = None) -> None:
        self.bundle: Bundle = load_bundle(path)  # refuses tampered bundles at start
        self.name = self.bundle.manifest["name"]
        available = [a["target"] for a in self.bundle.artifacts if a["parity"]["passed"]]
        wanted = targets or [t for t in available if
                             self.bundle.artifact(t)["runtime"] in SERVER_SIDE]
        unknown = [t for t in wanted if t not in available]
        if unknown:
            raise BundleError(f"{path}: no passing artifact for {unknown} (has {available})")
        self.served = {t: Served(t, self.bundle.runner(t), self.bundle.artifact(t))
                       for t in wanted}
        if not self.served:
            raise BundleError(f"{path}: nothing to serve (artifacts: {available})")
        self.default = next(t for t in (*PREFERENCE, *self.served) if t in self.served)
        self.signature = self.bundle.signature
        self.labels = self.bundle.manifest["task"]["labels"]
        self.task = self.bundle.task

    def get(self, target: str | None) -> Served:
        t = target or self.default
        if t not in self.served:
            raise LookupError(f"model '{self.name}' has no served target '{t}' "
                              f"(serving: {', '.join(self.served)})")
        return self.served[t]

    def validate(self, inputs: np.ndarray | None = None) -> list[dict[str, Any]]:
        """Re-hash every served artifact, then run the probe set (or ``inputs``) through it."""
        probe = self.bundle.probe()
        if inputs is not None:
            probe = _probe_from_default(self, inputs)
        rows = []
        for t, s in self.served.items():
            changed = _changed_files(self.bundle, s.artifact)
            if changed:
                rows.append({"target": t, "passed": False,
                             "failures": [f"artifact file changed since start: {changed}"]})
                continue
            with s.lock:
                r = check(t, s.artifact["profile"], s.runner.predict, probe,
                          s.artifact.get("batch"))
            worst = max((o.max_abs for o in r.outputs), default=None)
            rows.append({"target": t, "passed": bool(r), "profile": r.profile,
                         "label_agreement": r.label_agreement, "batches": r.batches,
                         "max_abs": worst if worst is None or np.isfinite(worst) else None,
                         "failures": r.failures})
        return rows


def _changed_files(bundle: Bundle, art: dict[str, Any]) -> list[str]:
    out = []
    for rel, digest in art["files"].items():
        p = bundle.root / rel
        if not p.is_file() or sha256(p) != digest:
            out.append(rel)
    return out


def _probe_from_default(model: ServedModel, x: np.ndarray):
    """Posted inputs: the default artifact's answers are the reference for the others."""
    from deploykit.parity import Probe, run_batched

    arrays = model.signature.validate(x)
    default = model.get(None)
    probe = Probe(arrays, {}, None, model.task)
    try:
        ref = run_batched(default.predict, probe, default.artifact.get("batch") or len(x))
    except DeploykitError as e:
        raise InputError(str(e)) from e
    return Probe(arrays, ref, None, model.task)
