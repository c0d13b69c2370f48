"""A bundle from Python: ``deploykit.load_bundle(path).predict(x)``.

:class:`Bundle` is the bundle's data (:class:`deploykit.bundle.Bundle`: manifest, typed
artifacts, probe set) with its runtimes on top. It opens an artifact's runner on first use
and keeps it until :meth:`Bundle.close` (or the end of a ``with`` block). Any batch size
runs on every artifact: a runner runs an artifact of a fixed batch in chunks of it.

::

    with deploykit.load_bundle("bundles/digits-torch") as b:
        p = b.predict(X[:5])              # the best passing artifact for this machine
        p.labels, p.outputs["probabilities"]  # a classifier's scores: b.signature.scores
        b.predict(X[:5], target="tflite")
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deploykit import bundle as _bundle
from deploykit.errors import BundleError, MissingDependencyError
from deploykit.parity import predicted_labels, scores_key

if TYPE_CHECKING:
    from deploykit.exporting import VerifyReport
    from deploykit.formats.base import Runner


@dataclass(frozen=True)
class Prediction:
    """What :meth:`Bundle.predict` returns.

    Attributes:
        target: the artifact that answered.
        outputs: every output by its signature name, one row per input row.
        labels: for a classifier, each row's label name (from the bundle's task).
    """

    target: str
    outputs: dict[str, np.ndarray]
    labels: list[str] | None = None


@dataclass
class Bundle(_bundle.Bundle):
    """A loaded, hash-checked bundle that predicts (see the module's docstring)."""

    _runners: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    _default: str | None = field(default=None, repr=False, compare=False)
    _opening: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def targets(self) -> list[str]:
        """The targets of its passing artifacts, in the order a default is picked."""
        from deploykit.formats import preference

        passing = [a.target for a in self.artifacts if a.passed]
        ranked = [t for t in preference() if t in passing]
        return ranked + [t for t in passing if t not in ranked]

    def predict(self, inputs: Mapping[str, Any] | Any, target: str | None = None
                ) -> Prediction:
        """Run ``inputs`` through one artifact, at any batch size.

        Args:
            inputs: a dict of arrays by input name, or a bare array for a model of one input.
            target: the artifact to use (default: the first passing one, in the server's order
                of preference, whose runtime is installed here).

        Returns:
            The :class:`Prediction`: outputs by name and, for a classifier, labels.

        Raises:
            InputError: ``inputs`` do not fit the signature (named).
            BundleError: ``target`` has no passing artifact, or no runtime here runs any.
            RunnerError: the runtime failed on these inputs.
        """
        t, runner = self._runner(target)
        out = runner.predict(inputs)
        labels = labels_of(out, self.labels, self.signature.scores) \
            if self.task == "classification" else None
        return Prediction(t, out, labels)

    def verify(self) -> VerifyReport:
        """Re-check every artifact's hashes and parity from the bundle alone.

        Returns:
            :class:`deploykit.exporting.VerifyReport` (``ok``, one parity result per target).

        Raises:
            BundleError: a file was changed since export (refused, as by :func:`load_bundle`).
        """
        from deploykit.exporting import verify

        return verify(self.root)

    def close(self) -> None:
        """Release every runtime this bundle opened."""
        while self._runners:
            self._runners.popitem()[1].close()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _runner(self, target: str | None) -> tuple[str, Runner]:
        target = target or self._default  # chosen once (below), not again on every call
        if target in self._runners:  # the hot path: checked when it was opened
            return target, self._runners[target]
        if target is not None:
            if target not in self.targets:
                raise BundleError(f"{self.name} has no passing '{target}' artifact (passing: "
                                  f"{', '.join(self.targets) or 'none'}){self._why_not()}")
            return target, self._open(target)
        missing = []
        for t in self.targets:
            if self.artifact(t).runs != "server":
                continue  # the browser's artifacts are the page's
            try:
                runner = self._open(t)
                self._default = t
                return t, runner
            except MissingDependencyError as e:
                missing.append(f"{t} ({e})")
        raise BundleError(f"{self.name}: no passing artifact this machine can run"
                          + (f"; missing runtimes: {'; '.join(missing)}" if missing else "")
                          + self._why_not())

    def _why_not(self) -> str:
        """What the artifacts that did not pass are, and the first one's reason: a bundle of
        vacuous artifacts (too few sample rows) read as one of missing runtimes."""
        others = [a for a in self.artifacts if not a.passed]
        if not others:
            return ""
        a = others[0]
        why = a.parity.vacuous or "; ".join(a.parity.failures)[:300]
        return (f"; {', '.join(f'{o.target} {o.parity.status}' for o in others)} "
                f"({a.target}: {why})")

    def _open(self, target: str) -> Runner:
        with self._opening:  # threads sharing the bundle open each runtime once
            if target not in self._runners:
                from deploykit import formats

                # checked again as it is opened: a runtime opens on first use, and a file
                # changed after load_bundle ran unchecked
                for rel, digest in self.artifact(target).files.items():
                    _bundle.check_file(self.root, rel, digest)
                self._runners[target] = formats.open_artifact(self, target)
            return self._runners[target]


def load_bundle(path: str | Path, *, check_hashes: bool = True) -> Bundle:
    """Open a bundle to predict from, refusing one that is incomplete or tampered with.

    Args:
        path: the bundle folder.
        check_hashes: re-hash every file against the manifest (the default).

    Returns:
        The :class:`Bundle` (use it in a ``with`` block, or call ``close()``).

    Raises:
        BundleError: no manifest, an unknown schema, or a file missing, unlisted or changed.
    """
    b = _bundle.load_bundle(path, check_hashes=check_hashes)
    return Bundle(b.root, b.manifest, b.artifacts, b.failed)


def labels_of(outputs: Mapping[str, np.ndarray], names: list[str], scores: str | None = None
              ) -> list[str]:
    """A classifier's label per row: its ``label`` output, else the most probable class of
    its ``scores`` output (the signature's; else ``probabilities`` or its first output; one
    sigmoid column: the second class where it reaches 0.5), named by the task's labels (the
    index itself past their end)."""
    idx = predicted_labels(outputs, scores_key(outputs, scores) or next(iter(outputs)))
    return [names[i] if 0 <= i < len(names) else str(i) for i in idx.tolist()]
