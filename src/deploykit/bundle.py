"""The bundle: a folder of verified artifacts that carries its own evidence.

::

    BUNDLE/
      manifest.json          schema deploykit.bundle/1: source, task, signature, metrics,
                             probe, and per artifact: target, format, path, route, batch,
                             converter versions, bytes, sha256 of every file, parity
      probe/inputs.npz       probe inputs (held-out data or the given sample)
      probe/reference.npz    the original model's outputs on them
      probe/targets.npz      true targets, when known
      artifacts/<target>/... one folder per artifact

A bundle is built in a hidden sibling folder and renamed into place after ``manifest.json``
is written, so an interrupted export never leaves a folder that looks complete. Loading
checks the schema and the sha256 of every file and refuses anything tampered or truncated.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deploykit._fs import read_schema_json, replace_dir
from deploykit.errors import BundleError
from deploykit.parity import Probe
from deploykit.signature import Signature

SCHEMA = "deploykit.bundle/1"
MANIFEST = "manifest.json"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
        if self.out.exists() and not (self.out / MANIFEST).is_file() and (
                not self.out.is_dir() or any(self.out.iterdir())):
            raise BundleError(f"{self.out} exists and is not a deploykit bundle; "
                              f"choose another --out or remove it")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-", dir=self.out.parent))
        self.root.chmod(0o755)

    def add_probe(self, probe: Probe) -> dict[str, str]:
        (self.root / "probe").mkdir()
        np.savez(self.root / "probe" / "inputs.npz", **probe.inputs)
        np.savez(self.root / "probe" / "reference.npz", **probe.reference)
        # the same, as JSON tensors, for runtimes without numpy (the browser page)
        web = {"inputs": {k: tensor_json(v) for k, v in probe.inputs.items()},
               "reference": {k: tensor_json(v) for k, v in probe.reference.items()}}
        (self.root / "probe" / "probe.json").write_text(json.dumps(web))
        paths = {"inputs": "probe/inputs.npz", "reference": "probe/reference.npz",
                 "json": "probe/probe.json"}
        if probe.y is not None:
            np.savez(self.root / "probe" / "targets.npz", y=probe.y)
            paths["targets"] = "probe/targets.npz"
        return paths

    def add_artifact(self, target: str, produced: Path, file: str) -> str:
        """Move a converter's output folder in as ``artifacts/<target>``; return the path."""
        dest = self.root / "artifacts" / target
        dest.parent.mkdir(exist_ok=True)
        shutil.copytree(produced, dest)
        return f"artifacts/{target}/{file}"

    def commit(self, manifest: dict[str, Any]) -> Path:
        """Hash everything, write the manifest last, fsync, and rename into place."""
        for art in manifest["artifacts"]:
            folder = f"artifacts/{art['target']}"  # the whole folder: shards, variables, ...
            art["files"] = file_hashes(self.root, folder)
            art["sha256"] = _combined(art["files"])
            art["bytes"] = tree_size(self.root / folder)
        manifest["probe"]["sha256"] = {p: sha256(self.root / p)
                                       for k, p in manifest["probe"].items() if k != "sha256"}
        _write_json_durably(self.root / MANIFEST, manifest)
        replace_dir(self.root, self.out)
        return self.out

    def abort(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def tensor_json(a: np.ndarray) -> dict[str, Any]:
    """``{"shape", "dtype", "data": base64 little-endian}``: how tensors cross into JS."""
    a = np.asarray(a)
    dtype = {"f": "float32", "i": "int64" if a.dtype.itemsize == 8 else "int32",
             "u": "int32", "b": "bool"}[a.dtype.kind]
    le = {"float32": "<f4", "int64": "<i8", "int32": "<i4", "bool": "u1"}[dtype]
    data = np.ascontiguousarray(a, dtype=le).tobytes()
    return {"shape": list(a.shape), "dtype": dtype, "data": base64.b64encode(data).decode()}


def tensor_from_json(t: dict[str, Any]) -> np.ndarray:
    le = {"float32": "<f4", "int32": "<i4", "int64": "<i8", "bool": "u1"}[t["dtype"]]
    return np.frombuffer(base64.b64decode(t["data"]), dtype=le).reshape(t["shape"]).copy()


def _combined(files: dict[str, str]) -> str:
    if len(files) == 1:
        return next(iter(files.values()))
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def _write_json_durably(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


@dataclass
class Bundle:
    """A loaded, hash-checked bundle."""

    root: Path
    manifest: dict[str, Any]

    @property
    def signature(self) -> Signature:
        return Signature.from_dict(self.manifest["signature"])

    @property
    def task(self) -> str:
        return self.manifest["task"]["kind"]

    @property
    def artifacts(self) -> list[dict[str, Any]]:
        return self.manifest["artifacts"]

    def artifact(self, target: str) -> dict[str, Any]:
        for a in self.artifacts:
            if a["target"] == target:
                return a
        raise BundleError(f"bundle has no '{target}' artifact (has "
                          f"{', '.join(a['target'] for a in self.artifacts) or 'none'})")

    def tradeoff(self, art: dict[str, Any]) -> dict[str, Any]:
        """Size against the fp32 artifact of the same format, and the task-metric change on
        the held-out probe set (artifact minus original; None when the truth is unknown)."""
        fp32 = next((a["bytes"] for a in self.artifacts
                     if a["format"] == art["format"] and a["profile"] == "fp32"), None)
        metric = art["parity"].get("metric") or {}
        return {"bytes": art["bytes"],
                "size_vs_fp32": round(art["bytes"] / fp32, 3) if fp32 else None,
                "metric": metric.get("name"),
                "metric_change": round(-metric["drop"], 4) + 0.0 if metric else None}

    def artifact_signature(self, art: dict[str, Any]) -> Signature:
        """The bundle signature with the artifact's fixed batch size, if it has one."""
        sig = self.signature.to_dict()
        if art.get("batch"):
            for spec in sig["inputs"] + sig["outputs"]:
                spec["shape"][0] = art["batch"]
        return Signature.from_dict(sig)

    def runner(self, target: str):
        from deploykit.formats.base import open_runner

        art = self.artifact(target)
        return open_runner(art["runtime"], self.root / art["path"], self.artifact_signature(art),
                           art.get("outputs"))

    def probe(self) -> Probe:
        p = self.manifest["probe"]
        with np.load(self.root / p["inputs"], allow_pickle=False) as z:
            inputs = {k: z[k] for k in z.files}
        with np.load(self.root / p["reference"], allow_pickle=False) as z:
            reference = {k: z[k] for k in z.files}
        y = None
        if "targets" in p:
            with np.load(self.root / p["targets"], allow_pickle=False) as z:
                y = z["y"]
        return Probe(inputs, reference, y, self.task)


def load_bundle(path: str | Path, *, check_hashes: bool = True) -> Bundle:
    """Open a bundle, refusing one that is incomplete, tampered with or truncated."""
    root = Path(path).resolve()  # its files are handed to runtimes with other working dirs
    mf = root / MANIFEST
    if not mf.is_file():
        raise BundleError(f"{root} is not a deploykit bundle (no {MANIFEST}); an interrupted "
                          f"export leaves none, so re-run the export")
    manifest = read_schema_json(mf, SCHEMA, BundleError)
    if check_hashes:
        expected = _listed_files(root, manifest)
        for rel, digest in expected.items():
            _check_file(root, rel, digest)
    return Bundle(root, manifest)


def _listed_files(root: Path, manifest: dict[str, Any]) -> dict[str, str]:
    """Every file the manifest vouches for; refuses a manifest that leaves files out."""
    probe = manifest["probe"]
    expected = dict(probe.get("sha256", {}))
    unhashed = [p for k, p in probe.items() if k != "sha256" and p not in expected]
    if unhashed:
        raise BundleError(f"{root}: probe files {unhashed} have no sha256 in the manifest")
    for art in manifest["artifacts"]:
        folder = root / "artifacts" / art["target"]
        present = {str(f.relative_to(root)) for f in folder.rglob("*") if f.is_file()} \
            if folder.is_dir() else set()
        listed = set(art.get("files", {}))
        if present != listed or art["path"] not in listed and not any(
                f.startswith(art["path"] + "/") for f in listed):
            extra, missing = sorted(present - listed), sorted(listed - present)
            raise BundleError(f"{root}: artifact '{art['target']}' files do not match the "
                              f"manifest (unlisted: {extra or 'none'}, missing: "
                              f"{missing or 'none'}); re-export the bundle")
        if art.get("sha256") != _combined(art["files"]):
            raise BundleError(f"{root}: artifact '{art['target']}' sha256 does not match its "
                              f"file hashes; re-export the bundle")
        expected.update(art["files"])
    return expected


def _check_file(root: Path, rel: str, digest: str) -> None:
    p = (root / rel).resolve()
    if root.resolve() not in p.parents:
        raise BundleError(f"manifest path {rel!r} points outside the bundle")
    if not p.is_file():
        raise BundleError(f"{root}: file {rel} listed in the manifest is missing")
    if sha256(p) != digest:
        raise BundleError(f"{root}: {rel} does not match its sha256 in the manifest "
                          f"(tampered with or truncated); re-export the bundle")
