"""Served models: a loaded bundle, its runners (one lock each: not every runtime is
thread-safe), and live re-validation that first re-hashes the artifact files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deploykit import formats, graph
from deploykit.artifact import Artifact
from deploykit.bundle import Bundle, load_bundle, sha256
from deploykit.errors import BundleError, DeploykitError, InputError
from deploykit.parity import SAMPLE_HINT, check
from deploykit.serve.batching import Batcher


def served_by_default(art: Artifact) -> bool:
    """A passing artifact whose runtime runs on the server (browser ones are the page's)."""
    return art.passed and art.runs == graph.SERVER


def served_targets(bundle: Bundle, path: str | Path, targets: list[str] | None) -> list[str]:
    """The artifacts of ``bundle`` to serve: ``targets``, or every passing server-side one.

    Raises:
        BundleError: a named target has no passing artifact, or nothing is left to serve.
    """
    available = [a.target for a in bundle.artifacts if a.passed]
    wanted = targets or [a.target for a in bundle.artifacts if served_by_default(a)]
    unknown = [t for t in wanted if t not in available]
    if unknown:
        raise BundleError(f"{path}: no passing artifact for {unknown} (has {available})")
    if not wanted:
        raise BundleError(f"{path}: nothing to serve (artifacts: {available})")
    return wanted


SERVED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def bundle_arg(arg: str | Path) -> tuple[str | None, Path]:
    """A bundle to serve: its folder (served under its manifest's name), or ``NAME=FOLDER``
    to serve it under NAME, as two versions of one model must be.

    Raises:
        DeploykitError: NAME has characters a URL path would need escaped.
    """
    text = str(arg)
    name, sep, folder = text.partition("=")
    if not sep or Path(text).exists():
        return None, Path(text)
    if not SERVED_NAME.fullmatch(name):
        raise DeploykitError(f"'{name}' cannot name a served model (letters, digits, '.', "
                             f"'_' and '-'): {text}")
    return name, Path(folder)


def add_unique(seen: dict[str, Any], name: str, value: Any, arg: str | Path) -> None:
    """``seen[name] = value``, refusing a second bundle of one name.

    Raises:
        DeploykitError: ``name`` is served already.
    """
    if name in seen:
        raise DeploykitError(f"two bundles are both named '{name}': serve one under another "
                             f"name, as {name}-2={bundle_arg(arg)[1]}")
    seen[name] = value


def check_bundles(paths: list[str | Path], targets: list[str] | None = None) -> list[str]:
    """What a server of ``paths`` (see :func:`bundle_arg`) would serve, checked without
    opening a runtime (a process that forks workers checks first, so a damaged bundle is one
    error, not N).

    Returns:
        One "name (target, ...)" per bundle.

    Raises:
        BundleError: a bundle is damaged or has nothing to serve.
        DeploykitError: two bundles have the same name.
    """
    seen: dict[str, str] = {}
    for p in paths:
        name, folder = bundle_arg(p)
        b = load_bundle(folder)
        name = name or b.name
        add_unique(seen, name, f"{name} ({', '.join(served_targets(b, folder, targets))})", p)
    return list(seen.values())


@dataclass
class Served:
    """One artifact ready to answer (its runner runs the calls a runtime cannot take at
    once one at a time)."""

    target: str
    runner: Any
    artifact: Artifact
    batcher: Batcher | None = None  # set when dynamic batching is on

    def predict(self, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.batcher is not None:  # each request checked alone, then run with others
            return self.batcher(self.runner.signature.validate(x))
        return self.predict_now(x)

    def predict_now(self, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.runner.predict(x)


class ServedModel:
    """A bundle loaded for serving; ``targets`` picks which artifacts (default: all that
    run server-side; browser artifacts are for the page); ``threads`` is each runtime's
    math threads (see :class:`deploykit.formats.base.Runner`)."""

    def __init__(self, path: str | Path, targets: list[str] | None = None, *,
                 threads: int | None = 1, batch_window_ms: float = 0.0,
                 max_batch: int = 1024) -> None:
        name, folder = bundle_arg(path)
        self.bundle: Bundle = load_bundle(folder)  # refuses tampered bundles at start
        self.name = name or self.bundle.name
        self.served = {t: Served(t, formats.open_artifact(self.bundle, t, threads=threads),
                                 self.bundle.artifact(t))
                       for t in served_targets(self.bundle, path, targets)}
        for s in self.served.values():  # a fixed-batch artifact runs in chunks anyway
            if batch_window_ms > 0 and not s.artifact.batch:
                s.batcher = Batcher(s.predict_now, batch_window_ms / 1000, max_batch)
        self.default = next(t for t in (*formats.preference(), *self.served)
                            if t in self.served)
        self.signature = self.bundle.signature
        self.labels = self.bundle.labels
        self.task = self.bundle.task

    def get(self, target: str | None) -> Served:
        t = self.default if target is None else target  # "" (?target=) is no target
        if t not in self.served:
            raise LookupError(f"model '{self.name}' has no served target '{t}' "
                              f"(serving: {', '.join(self.served)})")
        return self.served[t]

    def validate(self, inputs: dict[str, np.ndarray] | np.ndarray | None = None
                 ) -> list[dict[str, Any]]:
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
            r = check(t, s.artifact.profile, s.runner.predict, probe)
            worst = r.max_abs
            rows.append({"target": t, "passed": bool(r), "status": r.status,
                         "profile": r.profile, "label_agreement": r.label_agreement,
                         "batches": r.batches,
                         "max_abs": worst if worst is None or np.isfinite(worst) else None,
                         "failures": r.failures, "vacuous": _posted(r.vacuous, inputs)})
        return rows


def _posted(vacuous: str | None, inputs: Any) -> str | None:
    """Why agreement proved nothing, in the server's words for posted inputs."""
    if vacuous is None or inputs is None:
        return vacuous
    return vacuous.replace(SAMPLE_HINT, "(post more rows to /validate)")


def _changed_files(bundle: Bundle, art: Artifact) -> list[str]:
    out = []
    for rel, digest in art.files.items():
        p = bundle.root / rel
        if not p.is_file() or sha256(p) != digest:
            out.append(rel)
    return out


def _probe_from_default(model: ServedModel, x: dict[str, np.ndarray] | np.ndarray):
    """Posted inputs: the default artifact's answers are the reference for the others."""
    from deploykit.parity import Probe

    default = model.get(None)  # its own shapes: a length it takes may be new to the others
    arrays = default.artifact.signature(model.signature, with_batch=False).validate(x)
    try:
        ref = default.predict(arrays)
    except DeploykitError as e:
        raise InputError(str(e)) from e
    return Probe(arrays, ref, None, model.task, scores=model.signature.scores)
