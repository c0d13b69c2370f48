"""Small file-system helpers shared by model folders and bundles."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def sha256(path: Path) -> str:
    """A file's sha256, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_replaceable(out: Path, marker: str, what: str, error: type[Exception]) -> None:
    """Refuse ``out`` unless it is missing, empty, or one of ours (it holds ``marker``):
    :func:`replace_dir` would remove whatever else is there."""
    if out.exists() and not (out / marker).is_file() and (not out.is_dir() or any(out.iterdir())):
        raise error(f"{out} exists and is not {what}; choose another --out or remove it")


def replace_dir(workdir: Path, out: Path) -> None:
    """Move a finished work folder to ``out``, replacing an older one there.

    The old folder is renamed aside first, so ``out`` is never half old, half new.
    """
    if out.exists():
        old = out.with_name(f".{out.name}.old-{time.time_ns()}")
        out.rename(old)
        workdir.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        workdir.rename(out)


def read_schema_json(path: Path, schema: str | tuple[str, ...], error: type[Exception]
                     ) -> dict[str, Any]:
    """Read a JSON file that must carry ``"schema": schema`` (one of them, given several);
    raise ``error`` otherwise."""
    schemas = (schema,) if isinstance(schema, str) else schema
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise error(f"{path} is not valid JSON ({e})") from None
    except UnicodeDecodeError:  # bytes that are no text at all: damaged, or another file
        raise error(f"{path} is not valid JSON (not UTF-8 text)") from None
    if not isinstance(data, dict) or data.get("schema") not in schemas:
        found = data.get("schema") if isinstance(data, dict) else None
        raise error(f"{path}: unsupported schema {found!r} (this deploykit reads "
                    f"{', '.join(schemas)})")
    return data


def fixed_zip_entry(name: str, compress_type: int) -> zipfile.ZipInfo:
    """A zip entry with a fixed date and mode, so the same files give the same zip bytes."""
    info = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    info.compress_type = compress_type
    return info


def human_bytes(n: int | None) -> str:
    """``1.5 MB``-style sizes, the one format every table and report uses."""
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def json_safe(x: Any) -> Any:
    """JSON has no NaN or Infinity (JavaScript's JSON.parse refuses them): they become null."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a sibling temporary file, so a reader (or a crash)
    never sees it half-written."""
    tmp = path.with_name(f".{path.name}.{time.time_ns()}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def scratch_folder(prefix: str, where: Path | None = None) -> Path:
    """A new folder ``PREFIX-PID-HOST-XXXXXXXX`` in ``where`` (the temporary folder's by
    default), made after removing the folders of ``prefix`` there that processes on this host
    no longer running left behind: a Ray worker killed with its node, or a replica Ray Serve
    replaced, cannot remove its own."""
    host = socket.gethostname()
    where = Path(tempfile.gettempdir()) if where is None else where
    theirs = re.compile(rf"{re.escape(prefix)}-(\d+)-{re.escape(host)}-[^-]+")  # mkdtemp: no "-"
    for old in where.glob(f"{glob.escape(prefix)}-*"):
        found = theirs.fullmatch(old.name)
        if found and not _running(int(found[1])):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-{os.getpid()}-{host}-", dir=where))


def work_folder_beside(out: Path) -> Path:
    """A hidden folder beside ``out`` to build it in (same file system: the final rename is
    atomic); what a killed build left there (a lost Ray head ends the driver at once) goes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    work = scratch_folder(f".{out.name}.partial", out.parent)
    work.chmod(0o755)  # mkdtemp makes it private; the finished folder is an ordinary one
    return work


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """:func:`scratch_folder`, removed when the block ends."""
    folder = scratch_folder(prefix)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
