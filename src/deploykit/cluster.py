"""Cells on a Ray cluster: ``export --ray`` and ``what-if --ray``.

Each edge (one conversion) and each verification is a Ray task, scheduled on whichever node
has room. Nothing assumes a shared file system: the driver packs a converter's input folder
into Ray's object store, the task unpacks it on its node, converts, and returns the output
folder packed the same way. The driver keeps every intermediate (so losing a node loses only
the tasks in flight on it) and writes the bundle exactly as a local export does.

Inside a task, the converter (or the runtime that verifies) runs in a :mod:`deploykit.worker`
process, as it does locally: its time limit counts from its start on the node (not from its
wait in Ray's queue), a crash or a hang is that one cell's typed error with the last lines it
printed, and the Ray worker keeps it warm for its next tasks. The edge's Keras backend goes to
that process's environment, not to a Ray ``runtime_env``: one per backend split Ray's workers
three ways, and each new one paid the framework imports again (Ray on one machine took 1.47x
the local what-if). A task asks for one CPU and the memory its frameworks need
(:func:`resources`), so a small node does not take two TensorFlow conversions at once.

A task whose node dies is run again once on another node; the cell records it. Ray is
imported only here, only when ``--ray`` is asked for.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import tarfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from deploykit._fs import scratch
from deploykit._interrupt import abortable
from deploykit.errors import ClusterError, MissingDependencyError, WorkerCrashed, WorkerError, WorkerTimeout

GIB = 1024 ** 3
# What one conversion asks of a node, by the heaviest framework it imports. Ray admits a task
# only where this much memory is unreserved: a 4 GB node runs one TensorFlow conversion at a
# time, not two. Measured here: a warm TensorFlow worker holds about 1.2 GB, a torch one 0.9 GB.
MEMORY = {"tensorflow": 2 * GIB, "torch": 1.5 * GIB, "keras": 1.5 * GIB}
MEMORY_DEFAULT = 0.5 * GIB
VERIFY_MEMORY = 1 * GIB
VERIFY_TIMEOUT = 600.0  # seconds a runtime may take to check one artifact
# A task waits in Ray's queue before its own time limit starts; the driver gives up on a task
# that has neither started nor finished by its limit plus this.
QUEUE_SLACK = 1800.0
CONNECT_TIMEOUT = 10.0  # seconds to reach a cluster's address before giving up
_LOST = ("NodeDiedError", "ObjectLostError", "OwnerDiedError", "ObjectFetchTimedOutError")


def _ray():
    try:
        import ray
    except ImportError as e:
        raise MissingDependencyError("ray", "ray", "for --ray") from e
    return ray


def connect(address: str | None = None) -> dict[str, Any]:
    """Join the Ray cluster at ``address`` (``HOST:6379``, ``auto``); when ``address`` is None
    and ``RAY_ADDRESS`` is unset, the one ``ray start`` began on this machine, else start one.

    Returns:
        The cluster's resources (``CPU``, ``memory``, ...).

    Raises:
        MissingDependencyError: Ray is not installed. ClusterError: the address cannot be
        reached.
    """
    ray = _ray()
    if not ray.is_initialized():
        _check_reachable(address or os.environ.get("RAY_ADDRESS"))
        _token_auth(address)
        try:
            _init(ray, address)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = address or os.environ.get("RAY_ADDRESS") or "this machine"
            raise ClusterError(f"cannot join the Ray cluster at {where}: "
                               f"{str(e).splitlines()[0]} (start it with: ray start --head; a "
                               f"cluster with token authentication needs its token in "
                               f"RAY_AUTH_TOKEN or ~/.ray/auth_token)") \
                from None
    return ray.cluster_resources()


def _init(ray, address: str | None) -> None:
    """``ray.init``: without an address (and no ``RAY_ADDRESS``), Ray joins the cluster
    ``ray start`` began on this machine if one runs, else starts one here, with every CPU and
    no dashboard; a cluster it joins refuses those options (a ValueError before connecting)."""
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR, "configure_logging": True}
    if address is not None or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, **quiet)
        return
    try:
        ray.init(include_dashboard=False, num_cpus=os.cpu_count(), **quiet)
    except ValueError as e:
        if "existing cluster" not in str(e):
            raise
        ray.init(**quiet)


def _token_auth(address: str | None) -> None:
    """Send this user's Ray token to the cluster at ``address`` when that cluster asks for
    one. ``ray start --head`` turns token authentication on once a token exists (any local
    ``ray.init``, e.g. ``--ray`` without an address, writes ``~/.ray/auth_token``), but
    ``ray.init`` with an explicit address sends it only under ``RAY_AUTH_MODE=token``: the
    join failed as "Failed to connect". The token cannot simply always go: a driver in token
    mode joins a cluster without authentication, and then its tasks' results never reach it
    (``OwnerDiedError``). So one quick call to the cluster's GCS asks. An explicit
    ``RAY_AUTH_MODE`` decides instead."""
    if address in (None, "auto") or os.environ.get("RAY_AUTH_MODE"):
        return
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token"
    if not (os.environ.get("RAY_AUTH_TOKEN") or Path(path).is_file()):
        return
    import ray
    from ray._raylet import Config, GcsClient

    try:
        GcsClient(address=address)
    except ray.exceptions.AuthenticationError:
        os.environ["RAY_AUTH_MODE"] = "token"  # for this process and the ones it starts
        Config.initialize("")  # Ray read the mode when it was imported
    except Exception:  # unreachable and the like: ray.init says it better
        pass


def _check_reachable(address: str | None) -> None:
    """Fail fast on a HOST:PORT nothing listens on (``ray.init`` would wait for minutes)."""
    if not address or "://" in address or address == "auto" or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise ClusterError(f"the Ray address {address} needs a port number: HOST:PORT "
                           f"(ray start --head --port 6379 prints it)")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT) as s:
            speaks = _speaks_http2(s)
    except (OSError, ValueError) as e:  # ValueError: a port past 65535
        raise ClusterError(f"cannot reach the Ray cluster at {address}: "
                           f"{getattr(e, 'strerror', None) or e} (start one with: ray start "
                           f"--head --port {port}; or leave out the address to start one "
                           f"here)") from None
    if not speaks:
        raise ClusterError(f"{address} answers, but not as a Ray cluster does (its GCS port, "
                           f"which ray start --head prints; 6379 by default)")


# HTTP/2's client connection preface and an empty SETTINGS frame
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _speaks_http2(s: socket.socket) -> bool:
    """Whether the server on ``s`` answers as a gRPC server (a Ray cluster's GCS) does: its
    first frame is SETTINGS (HTTP/2, type 4). Something else on the port (a web server, a
    database) made ``ray.init`` retry for minutes without a word."""
    s.sendall(H2_PREFACE)
    head = b""
    while len(head) < 9:
        chunk = s.recv(9 - len(head))
        if not chunk:
            return False
        head += chunk
    return head[3] == 4


def resources(requires: tuple[str, ...]) -> dict[str, Any]:
    """Ray resource requests of an edge that imports ``requires``."""
    memory = max([MEMORY.get(r, MEMORY_DEFAULT) for r in requires] or [MEMORY_DEFAULT])
    return {"num_cpus": 1, "memory": int(memory)}


def pack(folder: Path) -> bytes:
    """A folder as an uncompressed tar (artifacts are already compact; speed matters more)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(folder, arcname=".")
    return buf.getvalue()


def unpack(blob: bytes, folder: Path) -> Path:
    """The inverse of :func:`pack` (members that would land outside ``folder`` are refused)."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
        tar.extractall(folder, filter="data")
    return folder


def node_id() -> str:
    """The Ray node this task runs on."""
    return _ray().get_runtime_context().get_node_id()


class Cluster:
    """Runs a build's edges and verifications as Ray tasks (see the module's docstring).

    Thread-safe: a build calls it from several threads, and several builds may share it.
    """

    def __init__(self, address: str | None = None) -> None:
        self.resources = connect(address)
        self.ray = _ray()
        self._shipped: dict[Path, Any] = {}
        self._lock = threading.Lock()
        self._convert = self.ray.remote(max_retries=0)(convert_task)
        self._verify = self.ray.remote(max_retries=0)(verify_task)

    @property
    def cpus(self) -> int:
        return int(self.resources.get("CPU", 1))

    def ship(self, path: Path) -> Any:
        """A folder (packed) or a file's bytes in the object store, once per path. The driver
        owns it, so it outlives any worker node."""
        with self._lock:
            if path not in self._shipped:
                data = pack(path) if path.is_dir() else path.read_bytes()
                self._shipped[path] = self.ray.put(data)
            return self._shipped[path]

    def release(self, folder: Path) -> None:
        """Drop what was shipped from under ``folder`` (a finished build's work folder), so
        the object store holds only what running builds still need."""
        with self._lock:
            for path in [p for p in self._shipped if p.is_relative_to(folder)]:
                del self._shipped[path]

    def put(self, value: Any) -> Any:
        return self.ray.put(value)

    def convert(self, e, src: tuple[Path, dict[str, Any]], out: Path, ctx, timeout: float) -> dict[str, Any]:
        """Run edge ``e`` on some node; unpack its output into ``out``; return the converter's
        info with ``placement`` (``node``, and ``retried`` when a node was lost)."""
        options = {**resources(e.requires), "name": f"convert {e.name}"}
        limit = min(timeout, e.timeout)
        calibration = self.ship(Path(ctx.calibration)) if ctx.calibration else None
        value, placement = self._run(self._convert, options, e.name, limit + QUEUE_SLACK,
                                     e.name, self.ship(src[0]), src[1]["file"], asdict(ctx),
                                     calibration, limit)
        unpack(value.pop("blob"), out)
        return {**value["info"], "placement": placement}

    def verify(self, folder: Path, art, signature, probe_ref) -> tuple[dict[str, Any], dict]:
        """Check one artifact folder in its runtime on some node: parity, any-length, latency."""
        options = {"num_cpus": 1, "memory": VERIFY_MEMORY, "name": f"verify {art.target}"}
        return self._run(self._verify, options, f"verify {art.target}",
                         VERIFY_TIMEOUT + QUEUE_SLACK,
                         pack(folder), art, signature, probe_ref)

    def _run(self, task, options: dict[str, Any], label: str, limit: float, *args):
        """Submit, wait, and run once more on another node when the first one was lost."""
        retried = None
        for attempt in (1, 2):
            ref = task.options(**options).remote(*args)
            try:
                with abortable(lambda ref=ref: self.ray.cancel(ref, force=True)):  # Ctrl-C
                    ready, _ = self.ray.wait([ref], timeout=limit)
                    if not ready:
                        self.ray.cancel(ref, force=True)
                        raise WorkerTimeout(f"{label} did not finish on the Ray cluster "
                                            f"within {limit:g} s and was cancelled")
                    value = self.ray.get(ref)
            except self.ray.exceptions.RayError as err:
                kind = type(err).__name__
                if kind in _LOST and attempt == 1:
                    retried = f"{kind}: {first_line(err)}"
                    continue
                raise _typed(label, err, retried) from None
            placement = {"node": value.pop("node")}
            if retried:
                placement["retried"] = retried
            if not value.get("ok", True):
                raise _job_error(value["error"])
            return value, placement
        raise AssertionError("unreachable")


def first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0][:300]


def _typed(label: str, err: Exception, retried: str | None) -> Exception:
    kind = type(err).__name__
    again = f" (on its second node; the first was lost: {retried})" if retried else ""
    if kind == "WorkerCrashedError":
        return WorkerCrashed(f"{label}: the Ray worker running it died{again}")
    if kind in _LOST:
        return ClusterError(f"{label}: its node was lost twice{again}: {first_line(err)}")
    return ClusterError(f"{label} failed on the Ray cluster{again}: {kind}: {first_line(err)}")


def _job_error(e: dict[str, str]) -> WorkerError:
    cls = {"WorkerTimeout": WorkerTimeout, "WorkerCrashed": WorkerCrashed}.get(e["type"],
                                                                               WorkerError)
    return cls(e["message"], error_type=e["type"], log_tail=e.get("log_tail") or "")


# -- the task side (runs in Ray's worker processes) -----------------------------------------------
# A Ray worker stays light: the converter and the runtime run in a deploykit worker it keeps
# warm for its next tasks (TensorFlow, torch and Keras imports cost seconds each). One Ray
# worker keeps up to this many: no backend, Keras on TensorFlow, Keras on torch.
IDLE_PER_RAY_WORKER = 3


def convert_task(edge: str, blob: bytes, file: str, ctx: dict[str, Any],
                 calibration: bytes | None, timeout: float) -> dict[str, Any]:
    """Unpack the input, run the converter in a deploykit worker, pack the output."""
    from deploykit import graph, worker
    from deploykit.building import run_edge_in_worker

    worker.keep_pool(idle=IDLE_PER_RAY_WORKER)
    node = node_id()
    e = graph.EDGES.get(edge) or _load_edges(graph)[edge]
    with scratch("deploykit-ray") as tmp:
        src = unpack(blob, Path(tmp) / "src")
        if calibration is not None:
            ctx = {**ctx, "calibration": str(Path(tmp) / "calibration.npz")}
            Path(ctx["calibration"]).write_bytes(calibration)
        try:  # the edge's Keras backend goes to that worker's environment
            info = run_edge_in_worker(e, (src, {"file": file}), Path(tmp) / "out",
                                      graph.EdgeContext(**ctx), timeout)
        except WorkerError as err:
            return _failed(node, err)
        return {"ok": True, "node": node, "info": info, "blob": pack(Path(tmp) / "out")}


def _failed(node: str, err: WorkerError) -> dict[str, Any]:
    return {"ok": False, "node": node, "error": {"type": err.error_type, "message": str(err),
                                                 "log_tail": err.log_tail}}


def _load_edges(graph):
    from deploykit import formats

    formats.load()
    return graph.EDGES


def verify_task(blob: bytes, art, signature, probe) -> dict[str, Any]:
    """Check one artifact in a deploykit worker on this node (see :func:`verify_job`)."""
    from deploykit import worker
    from deploykit.bundle import write_probe

    worker.keep_pool(idle=IDLE_PER_RAY_WORKER)
    node = node_id()
    with scratch("deploykit-ray") as tmp:
        root = Path(tmp)  # laid out as a bundle: artifacts/<target>/ and probe/
        unpack(blob, root / art.folder)
        try:
            value = worker.run("deploykit.cluster:verify_job", {
                "root": str(root), "art": art.to_dict(), "signature": signature.to_dict(),
                "probe": write_probe(probe, root), "task": probe.task},
                timeout=VERIFY_TIMEOUT, label=f"verify {art.target}")
        except WorkerError as err:
            return _failed(node, err)
    return {"ok": True, "node": node, **value}


def verify_job(root: str, art: dict, signature: dict, probe: dict[str, str],
               task: str) -> dict[str, Any]:
    """Worker side: parity of one artifact in its runtime, whether it takes any length, and
    its batch-1 latency when it passed (measured here, beside whatever else the node runs)."""
    from deploykit.artifact import Artifact
    from deploykit.building import check_artifact, latency, takes_any_length
    from deploykit.bundle import read_probe
    from deploykit.signature import Signature

    a, sig = Artifact.from_dict(art), Signature.from_dict(signature)
    p = read_probe(Path(root), probe, task, sig.scores)
    start = time.perf_counter()
    result, runner = check_artifact(Path(root), sig, a, p)
    verify_s = time.perf_counter() - start
    try:
        any_length = bool(result) and takes_any_length(Path(root), sig, a, p)
        ms = latency(runner, p) if runner is not None and result.status == "pass" else None
    finally:
        if runner is not None:
            runner.close()
    return {"parity": result.to_dict(), "any_length": any_length, "latency_ms": ms,
            "verify_s": round(verify_s, 3)}
