"""Expensive things the tests share: digits models and bundles of all five flows, and
device-like virtual environments. Each is built once, by whichever test process needs it
first, behind a file lock the other xdist process waits on, and kept on disk under
``test-artifacts/cache/`` (git-ignored).

Models and bundles are keyed by the source that makes them (deploykit's package, its targets,
this file), so a change to any of it builds them anew; virtual environments are keyed by their
requirements. A clean clone (CI) builds each once per run; an edit-test loop that touches
only tests reuses them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "test-artifacts" / "cache"
FLOWS = ("sklearn", "tensorflow", "torch", "keras-tensorflow", "keras-torch")
# What a user must never see on a terminal: the patterns ../shared/tools/newcomer-check flags.
CHATTER = re.compile(r"torchao|cpuinfo|^I0000|^W\d{4} |^E\d{4} |XNNPACK delegate|oneDNN|"
                     r"Traceback \(most recent call last\)|^WARNING|^INFO", re.M)
DONE = ".done"


def source_key() -> str:
    """A digest of everything that shapes a model or bundle made by deploykit."""
    h = hashlib.sha256()
    files = [*sorted((ROOT / "src" / "deploykit").rglob("*.py")),
             *sorted((ROOT / "src" / "deploykit").rglob("*.json")),
             *sorted(p for p in (ROOT / "targets").rglob("*") if p.is_file()
                     and "node_modules" not in p.parts and p.suffix in (".py", ".mjs", ".js")),
             Path(__file__)]
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


@contextmanager
def _lock(path: Path, blocking: bool = True):
    """An exclusive lock on ``path`` (``None`` when non-blocking and held elsewhere)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield None
            return
        try:
            yield f
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def built(entries: Iterable[tuple[Path, Callable[[Path], None]]], in_place: bool = False
          ) -> None:
    """Build each ``(folder, build)`` entry unless done. ``build(tmp)`` fills a temporary
    folder that is renamed into place (or the folder itself, ``in_place``, for what must
    not move, like a virtual environment); a ``.done`` marker says it finished. Entries
    another process is building are skipped and come back later, so two processes build
    different entries at once."""
    todo = [(Path(folder), build) for folder, build in entries]
    while todo:
        waiting = []
        for folder, build in todo:
            with _lock(folder.with_name(folder.name + ".lock"), blocking=False) as held:
                if held is None:
                    waiting.append((folder, build))
                    continue
                if not (folder / DONE).exists():
                    _build(folder, build, in_place)
        if waiting:
            with _lock(waiting[0][0].with_name(waiting[0][0].name + ".lock")):
                pass  # wait for the other process, then look again
        todo = [(f, b) for f, b in waiting if not (f / DONE).exists()]


def _build(folder: Path, build: Callable[[Path], None], in_place: bool) -> None:
    tmp = folder if in_place else folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    build(tmp)
    (tmp / DONE).write_text(f"{time.perf_counter() - start:.1f} s\n")
    if not in_place:
        tmp.rename(folder)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(bundles: Path | list[Path], *args: str, wait: float = 60, host: str = "127.0.0.1"
          ) -> tuple[subprocess.Popen, str]:
    """`deploykit serve BUNDLES ARGS` on a free loopback port of ``host``, once it answers
    ready (the test fails with the server's output when it does not within ``wait``
    seconds)."""
    import pytest
    import requests

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "deploykit", "serve",
                             *map(str, bundles if isinstance(bundles, list) else [bundles]),
                             "--host", host, "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    deadline = time.time() + wait
    while time.time() < deadline and proc.poll() is None:
        try:
            if requests.get(url + "/v2/health/ready", timeout=5).ok:
                return proc, url
        except requests.RequestException:  # not listening yet, or its workers still booting
            time.sleep(0.1)
    proc.kill()
    pytest.fail(f"server did not start: {proc.communicate()}")


def digits(flows: Iterable[str] = FLOWS) -> dict[str, dict[str, Path]]:
    """``{flow: {"model": folder, "bundle": folder, "cells": {target: cell}}}`` from the
    main job itself: ``deploykit what-if --data digits`` (every flow at its default epochs,
    every target), run as ``make demo`` runs it. Its exit status, stdout and stderr are kept
    beside it (:func:`whatif_run`)."""
    out = whatif_run()["out"]
    report = json.loads((out / "report.json").read_text())
    rows = {r["flow"]: r for r in report["rows"]}
    return {f: {"model": out / "models" / f"digits-{f}", "bundle": out / "bundles" / f"digits-{f}",
                "cells": {c["target"]: c for c in rows[f]["cells"]}} for f in flows}


def whatif_run() -> dict:
    """The cached ``what-if --data digits`` run: ``out`` folder, ``returncode``, ``stdout``,
    ``stderr``, ``seconds``."""
    root = CACHE / f"digits-{source_key()}"
    for old in CACHE.glob("digits-*"):  # made by an older source: never read again
        if old.is_dir() and not old.name.startswith(root.name):
            shutil.rmtree(old, ignore_errors=True)
    built([(root, _whatif)])
    return {"out": root / "whatif-out", "returncode": int((root / "returncode").read_text()),
            "stdout": (root / "stdout").read_text(), "stderr": (root / "stderr").read_text(),
            "seconds": float((root / DONE).read_text().split()[0])}


def _whatif(tmp: Path) -> None:
    tmp.mkdir()
    cli = Path(sys.executable).with_name("deploykit")
    r = subprocess.run([str(cli), "what-if", "--data", "digits", "--out", "whatif-out"],
                       cwd=tmp, capture_output=True, text=True, timeout=1800)
    for name, text in (("returncode", str(r.returncode)), ("stdout", r.stdout),
                       ("stderr", r.stderr)):
        (tmp / name).write_text(text)


def prebuild() -> subprocess.Popen:
    """Start building the what-if run, then the model zoo, in the background (the test
    controller does this at the start of a full run, so no test waits for all of either: the
    zoo's build is one process, and a zoo file waiting for it left a core idle). The build
    runs in a session of its own, so killing its group stops its children too."""
    CACHE.mkdir(parents=True, exist_ok=True)
    log = (CACHE / "prebuild.log").open("w")
    return subprocess.Popen([sys.executable, __file__], stdout=log, stderr=subprocess.STDOUT,
                            cwd=ROOT, start_new_session=True)


def zoo() -> dict[str, dict[str, str]]:
    """The model zoo (:mod:`zoo`): ``{name: {"group", "model", "sample"}}``, built once per
    version of ``tests/zoo.py`` (the models do not depend on deploykit)."""
    here = Path(__file__).with_name("zoo.py")
    root = CACHE / f"zoo-{hashlib.sha256(here.read_bytes()).hexdigest()[:12]}"

    def build(tmp: Path) -> None:
        r = subprocess.run([sys.executable, str(here), str(tmp)], capture_output=True, text=True,
                           timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]

    built([(root, build)])
    made = json.loads((root / "zoo.json").read_text())
    return {name: {k: v.replace(str(root.with_name(root.name + ".partial")), str(root))
                   for k, v in files.items()} for name, files in made.items()}


def venv(*packages: str) -> Path:
    """The python of a virtual environment holding only ``packages`` (and pip)."""
    key = hashlib.sha256(json.dumps([sys.version, *packages]).encode()).hexdigest()[:12]
    folder = CACHE / "venvs" / f"{'-'.join(p.split('=')[0].split('<')[0] for p in packages)}-{key}"

    def build(tmp: Path) -> None:
        subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, timeout=300)
        r = subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "--quiet",
                            *packages], capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-2000:]

    built([(folder, build)], in_place=True)
    return folder / "bin" / "python"


def edge_run(python: Path, pkg: Path) -> Callable[[object], tuple[int, dict]]:
    """The package's ``run.py --serve`` on a free loopback port, as a ``post(body) -> (status,
    json)`` function; stop it with ``post.stop()``."""
    import socket

    import requests

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(python), str(pkg / "run.py"), str(pkg), "--serve", "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # printed once it listens
    assert f"on http://127.0.0.1:{port}/predict" in line, line + proc.stderr.read()

    def post(body) -> tuple[int, dict]:
        try:
            r = requests.post(f"http://127.0.0.1:{port}/predict", json=body, timeout=60)
        except requests.ConnectionError as e:
            died = proc.poll() is not None
            raise AssertionError(f"run.py --serve {'exited' if died else 'is not answering'}: "
                                 f"{e}\n{proc.stderr.read() if died else ''}") from e
        return r.status_code, r.json()

    def stop() -> None:
        proc.terminate()
        proc.wait(timeout=10)
    post.stop = stop
    return post


if __name__ == "__main__":
    whatif_run()
    zoo()
