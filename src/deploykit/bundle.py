"""The bundle: a folder of verified artifacts that carries its own evidence.

::

    BUNDLE/
      manifest.json          schema deploykit.bundle/2: source, task, signature, metrics,
                             probe, the parity profiles' rules, "artifacts" (one
                             deploykit.artifact.Artifact each: target, runtime, where it
                             runs, path, route, batch, converter and runtime versions,
                             bytes, sha256 of every file, parity) and "failed" (targets
                             that produced no artifact or failed parity, with the reason)
      probe/inputs.npz       probe inputs (held-out data or the given sample)
      probe/probe.json       the same inputs and outputs as JSON tensors (for the browser)
      probe/reference.npz    the original model's outputs on them
      probe/targets.npz      true targets, when known
      artifacts/<target>/... one folder per artifact

A bundle is built in a hidden sibling folder and renamed into place after ``manifest.json``
is written, so an interrupted export never leaves a folder that looks complete. Loading
checks the schema and the sha256 of every file and refuses anything tampered or truncated.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deploykit._fs import (
    check_replaceable,
    json_safe,
    read_schema_json,
    replace_dir,
    sha256,
    work_folder_beside,
)
from deploykit._tensors import tensor_json
from deploykit.artifact import Artifact, Failure, tradeoff
from deploykit.errors import BundleError
from deploykit.parity import Probe
from deploykit.signature import Signature

SCHEMA = "deploykit.bundle/2"
READS = ("deploykit.bundle/1", SCHEMA)  # /1 also carried each runtime as "format"
MANIFEST = "manifest.json"


def file_hashes(root: Path, rel: str) -> dict[str, str]:
    """sha256 of an artifact's file, or of every file under an artifact folder."""
    p = root / rel
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    return {str(f.relative_to(root)): sha256(f) for f in files}


def tree_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() \
        else p.stat().st_size


class BundleWriter:
    """Builds a bundle in a hidden work folder; :meth:`commit` moves it into place."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out).resolve()
        check_replaceable(self.out, MANIFEST, "a deploykit bundle", BundleError)
        self.root = work_folder_beside(self.out)

    def add_probe(self, probe: Probe) -> dict[str, str]:
        paths = write_probe(probe, self.root)
        # the same, as JSON tensors, for runtimes without numpy (the browser page)
        web = {"inputs": {k: tensor_json(v) for k, v in probe.inputs.items()},
               "reference": {k: tensor_json(v) for k, v in probe.reference.items()}}
        (self.root / "probe" / "probe.json").write_text(json.dumps(web))
        return {**paths, "json": "probe/probe.json"}

    def add_artifact(self, target: str, produced: Path, file: str) -> str:
        """Move a converter's output folder in as ``artifacts/<target>``; return the path."""
        dest = self.root / "artifacts" / target
        dest.parent.mkdir(exist_ok=True)
        shutil.copytree(produced, dest)
        return f"artifacts/{target}/{file}"

    def commit(self, manifest: dict[str, Any], artifacts: list[Artifact],
               failed: list[Failure]) -> Path:
        """Hash everything, write the manifest last, fsync, and rename into place."""
        hashed = []
        for art in artifacts:  # the whole folder: shards, variables, ...
            files = file_hashes(self.root, art.folder)
            hashed.append(art.replace(files=files, sha256=_combined(files),
                                      bytes=tree_size(self.root / art.folder)))
        manifest = {**manifest, "artifacts": [a.to_dict() for a in hashed],
                    "failed": [f.to_dict() for f in failed]}
        manifest["probe"]["sha256"] = {p: sha256(self.root / p)
                                       for k, p in manifest["probe"].items() if k != "sha256"}
        manifest = json.loads(json.dumps(json_safe(manifest), allow_nan=False))  # as read back
        manifest[SELF_DIGEST] = manifest_digest(manifest)
        _write_json_durably(self.root / MANIFEST, manifest)
        replace_dir(self.root, self.out)
        return self.out

    def abort(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


SELF_DIGEST = "manifest_sha256"


def manifest_digest(manifest: dict[str, Any], key: str = SELF_DIGEST) -> str:
    """The sha256 of a manifest's content without its own digest ``key`` (keys sorted,
    compact): an edited manifest, labels or parity included, no longer matches. It guards
    against edits and corruption, not against someone who recomputes it. A package's
    package.json carries one too (``package_sha256``, checked by the edge run.py)."""
    content = {k: v for k, v in manifest.items() if k != key}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _combined(files: dict[str, str]) -> str:
    if len(files) == 1:
        return next(iter(files.values()))
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def _write_json_durably(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        json.dump(json_safe(data), f, indent=2, allow_nan=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


@dataclass
class Bundle:
    """A loaded, hash-checked bundle. Opening its artifacts' runtimes is
    :func:`deploykit.formats.open_artifact`'s job: a bundle is data."""

    root: Path
    manifest: dict[str, Any]
    artifacts: list[Artifact] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def signature(self) -> Signature:
        return Signature.from_dict(self.manifest["signature"])

    @property
    def task(self) -> str:
        return self.manifest["task"]["kind"]

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["task"]["labels"])

    def artifact(self, target: str) -> Artifact:
        """The artifact made for ``target``.

        Raises:
            BundleError: the bundle has none (the message lists what it has).
        """
        for a in self.artifacts:
            if a.target == target:
                return a
        raise BundleError(f"bundle has no '{target}' artifact (has "
                          f"{', '.join(a.target for a in self.artifacts) or 'none'})")

    def tradeoff(self, art: Artifact) -> dict[str, Any]:
        """Size against the fp32 artifact of the same runtime, and the task-metric change
        (see :func:`deploykit.artifact.tradeoff`)."""
        fp32 = next((a.bytes for a in self.artifacts
                     if a.runtime == art.runtime and a.profile == "fp32"), None)
        return tradeoff(art.bytes, fp32, art.parity.metric)

    def probe(self) -> Probe:
        return read_probe(self.root, self.manifest["probe"], self.task, self.signature.scores)


def write_probe(probe: Probe, root: Path) -> dict[str, str]:
    """The probe set as .npz files in ``root/probe``; their paths relative to ``root`` (the
    manifest's ``probe`` record, read back by :func:`read_probe`)."""
    (root / "probe").mkdir()
    arrays = {"inputs": probe.inputs, "reference": probe.reference}
    if probe.y is not None:
        arrays["targets"] = {"y": probe.y}
    if probe.shorter is not None:  # for the artifacts that take any length
        arrays |= {"shorter_inputs": probe.shorter.inputs,
                   "shorter_reference": probe.shorter.reference}
    for name, values in arrays.items():
        np.savez(root / "probe" / f"{name}.npz", **values)
    return {name: f"probe/{name}.npz" for name in arrays}


def read_probe(root: Path, paths: dict[str, str], task: str, scores: str | None = None
               ) -> Probe:
    """The probe set :func:`write_probe` wrote under ``root`` (``scores``: the signature's)."""
    def arrays(rel: str) -> dict[str, np.ndarray]:
        with np.load(root / rel, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    y = arrays(paths["targets"])["y"] if "targets" in paths else None
    shorter = Probe(arrays(paths["shorter_inputs"]), arrays(paths["shorter_reference"]), None,
                    task, scores=scores) if "shorter_inputs" in paths else None
    return Probe(arrays(paths["inputs"]), arrays(paths["reference"]), y, task, shorter, scores)


def load_bundle(path: str | Path, *, check_hashes: bool = True) -> Bundle:
    """Open a bundle, refusing one that is incomplete, tampered with or truncated.

    Args:
        path: the bundle folder.
        check_hashes: re-hash every file against the manifest (the default).

    Returns:
        The :class:`Bundle`, its artifacts typed (:class:`~deploykit.artifact.Artifact`).

    Raises:
        BundleError: no manifest, an unknown schema, or a file missing, unlisted or changed.
    """
    root = Path(path).resolve()  # its files are handed to runtimes with other working dirs
    mf = root / MANIFEST
    if not mf.is_file():
        if (root / "deploykit-model.json").is_file():  # the step before a bundle
            raise BundleError(f"{root} is a model folder (deploykit train), not a bundle: "
                              f"export it first (deploykit export {path} --to ...)")
        if root.is_file() or not root.exists():
            what = "is a file, not a bundle" if root.exists() else "not found"
            raise BundleError(f"{root} {what}: a bundle is the folder deploykit export writes "
                              f"(deploykit export MODEL --to ... --out FOLDER); an "
                              f"interrupted export leaves none, so re-run the export")
        raise BundleError(f"{root} is not a deploykit bundle (no {MANIFEST}); an interrupted "
                          f"export leaves none, so re-run the export")
    manifest = read_schema_json(mf, READS, BundleError)
    try:
        artifacts = [Artifact.from_dict(a) for a in manifest["artifacts"]]
        failed = [Failure.from_dict(f) for f in manifest.get("failed", [])]
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"{mf}: malformed artifact record ({type(e).__name__}: {e}); "
                          f"re-export the bundle") from None
    if check_hashes and SELF_DIGEST in manifest and \
            manifest[SELF_DIGEST] != manifest_digest(manifest):  # bundles before it have none
        raise BundleError(f"{mf} was changed after export (it no longer matches its own "
                          f"{SELF_DIGEST}); re-export the bundle rather than edit it")
    if check_hashes:
        expected = _listed_files(root, manifest["probe"], artifacts)
        for rel, digest in expected.items():
            check_file(root, rel, digest)
    return Bundle(root, manifest, artifacts, failed)


def _listed_files(root: Path, probe: dict[str, Any], artifacts: list[Artifact]
                  ) -> dict[str, str]:
    """Every file the manifest vouches for; refuses a manifest that leaves files out."""
    expected = dict(probe.get("sha256", {}))
    unhashed = [p for k, p in probe.items() if k != "sha256" and p not in expected]
    if unhashed:
        raise BundleError(f"{root}: probe files {unhashed} have no sha256 in the manifest")
    for art in artifacts:
        folder = root / art.folder
        present = {str(f.relative_to(root)) for f in folder.rglob("*") if f.is_file()} \
            if folder.is_dir() else set()
        listed = set(art.files)
        if present != listed or art.path not in listed and not any(
                f.startswith(art.path + "/") for f in listed):
            extra, missing = sorted(present - listed), sorted(listed - present)
            raise BundleError(f"{root}: artifact '{art.target}' files do not match the "
                              f"manifest (unlisted: {extra or 'none'}, missing: "
                              f"{missing or 'none'}); re-export the bundle")
        if art.sha256 != _combined(art.files):
            raise BundleError(f"{root}: artifact '{art.target}' sha256 does not match its "
                              f"file hashes; re-export the bundle")
        expected.update(art.files)
    return expected


def check_file(root: Path, rel: str, digest: str) -> None:
    """Refuse a file of the bundle that is missing, outside it, or not its recorded sha256."""
    p = (root / rel).resolve()
    if root.resolve() not in p.parents:
        raise BundleError(f"manifest path {rel!r} points outside the bundle")
    if not p.is_file():
        raise BundleError(f"{root}: file {rel} listed in the manifest is missing")
    if sha256(p) != digest:
        raise BundleError(f"{root}: {rel} does not match its sha256 in the manifest "
                          f"(tampered with or truncated); re-export the bundle")
