"""Run the app: N worker processes under gunicorn (Linux and macOS), or one waitress process.

Each gunicorn worker builds its own app after the fork (``preload_app`` is off): it loads and
hash-checks the bundles once and opens its runtimes in its own process, so no runtime thread
pool or file handle crosses a fork. The master checks the bundles first, so a damaged bundle
is one error line at start instead of workers failing to boot. SIGTERM stops the workers
gracefully: the port closes at once (new connections are refused, so a load balancer moves
on), and requests in flight finish, for up to ``GRACE`` seconds (:func:`_arbiter`). The
single waitress process (:func:`serve_single`) stops the same way.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploykit.errors import DeploykitError

GRACE = 30  # seconds a stopping worker has to finish its requests in flight
KEEPALIVE = 5  # seconds an idle keep-alive connection stays open
# waitress (--workers 1): open connections it takes, and seconds one may sit idle; its own
# 100 and 120 s let 100 idle sockets (one browser holds 6) lock everyone else out for minutes
CONNECTIONS = 1000
IDLE_TIMEOUT = 30
READ_TIMEOUT = 20.0  # seconds a gunicorn worker waits on a client's next bytes (its own: 30)


def cores() -> int:
    """CPUs this process may run on (the default number of workers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def can_fork_workers() -> bool:
    """gunicorn runs where fork does (not on Windows)."""
    if sys.platform == "win32":
        return False
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        return False
    return True


def netloc(host: str, port: int) -> str:
    """``host:port`` as a URL and gunicorn's bind write it: an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_port(host: str, port: int) -> None:
    """Raise a one-line error now if ``host:port`` cannot be bound (in use, or not an
    address of this machine), rather than a server library's retries and traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise DeploykitError(f"cannot listen on {netloc(host, port)}: {e.strerror or e} (pick "
                                 f"another with --port or --host)") from None


def resident_mb(pid: int | str = "self") -> float | None:
    """A process's resident memory in MB (Linux's /proc; None elsewhere)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def serve_workers(factory: Callable[[], Any], *, host: str, port: int, workers: int,
                  threads: int, ready: Callable[[int], None] | None = None,
                  read_timeout: float = READ_TIMEOUT) -> None:
    """Serve ``factory()``'s app from ``workers`` gunicorn processes (returns on shutdown).

    Args:
        factory: builds the app; called once in every worker, after the fork.
        host: bind address. port: bind port.
        workers: worker processes. threads: request threads per worker (1: sync workers).
        ready: called in each worker with its pid once its app is built.
        read_timeout: seconds a worker (or request thread) waits on a client that stops
            sending its request (then a 408); below gunicorn's worker timeout, which kills the worker.
    """
    from gunicorn.app.base import BaseApplication

    options = {"bind": netloc(host, port), "workers": workers, "threads": threads,
               "worker_class": _worker_class(threads, read_timeout), "preload_app": False,
               "graceful_timeout": GRACE, "keepalive": KEEPALIVE, "loglevel": "warning",
               "accesslog": None, "errorlog": "-", "proc_name": "deploykit-serve",
               "worker_tmp_dir": _tmp_dir()}
    if ready is not None:
        options["post_worker_init"] = lambda worker: ready(worker.pid)

    class _App(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            return factory()

        def run(self) -> None:
            _arbiter()(self).run()

    from gunicorn.errors import HaltServer

    try:
        _App().run()
    except HaltServer as e:  # raised again while halting: two workers failed to boot
        sys.exit(e.exit_status)


def _arbiter():
    """gunicorn's master, shutting the listening socket down as it stops.

    gunicorn's master closes its own copy of the socket, but every worker holds another until
    it exits: while one finished a request (up to :data:`GRACE` seconds) the port stayed
    open, and a new connection waited in the backlog, unanswered, instead of being refused.
    ``shutdown`` acts on the socket all of them share (Linux; elsewhere it fails and nothing
    changes). Not while a re-executed master (``USR2``) takes the socket over.
    """
    from gunicorn.arbiter import Arbiter

    class _Arbiter(Arbiter):
        def stop(self, graceful: bool = True) -> None:
            if self.reexec_pid == self.master_pid == 0:
                for listener in self.LISTENERS:
                    try:
                        listener.sock.shutdown(socket.SHUT_RD)
                    except OSError:  # not Linux, or not listening any more
                        continue
            super().stop(graceful)
    return _Arbiter


def _worker_class(threads: int, read_timeout: float = READ_TIMEOUT) -> type:
    """gunicorn's sync worker (``threads`` 1) or threaded worker, answering the faults gunicorn
    answers itself in JSON (:func:`_error_json`), and taking a listening socket the master
    shut down (``accept`` fails with ``EINVAL``) as the stop it is: gunicorn's own would die
    on it with a traceback if that came before its SIGTERM. A sync worker's connection reads
    time out after ``read_timeout``: a client that stopped sending held the worker until
    gunicorn's timeout killed it (a 500, and a worker loading its models again); a threaded
    worker's too (:func:`_reads_time_out`), where it held a request thread for good."""
    import errno

    if threads > 1:
        from gunicorn.workers.gthread import ThreadWorker as Base
    else:
        from gunicorn.workers.sync import SyncWorker as Base

    class Worker(Base):
        def init_process(self) -> None:
            from gunicorn import util

            util.write_error = _gunicorn_json_error  # its HTML pages, in this worker process
            logging.getLogger("gunicorn.error").addFilter(_stalled_client_in_one_line)
            super().init_process()

        if threads == 1:
            def handle(self, listener, client, addr) -> None:
                client.settimeout(read_timeout)
                super().handle(listener, client, addr)
        else:
            def enqueue_req(self, conn) -> None:
                _reads_time_out(conn, read_timeout)
                super().enqueue_req(conn)

        def accept(self, listener) -> None:
            try:
                super().accept(listener)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                self.alive = False
    return Worker


def _reads_time_out(conn, seconds: float) -> None:
    """Have a threaded worker's connection time its reads out after ``seconds``. gthread sets
    the socket blocking (no timeout) each time a thread takes the connection, then calls
    ``conn.init()``: the timeout is set after that call. Without it a client that stopped
    in the middle of its head or body held a request thread for good (and a worker's stop
    for its whole graceful timeout)."""
    if "init" in vars(conn):  # a kept-alive connection, taken again
        return
    init = conn.init

    def init_then_time_out() -> None:
        init()
        conn.sock.settimeout(seconds)
    conn.init = init_then_time_out


def _stalled_client_in_one_line(record: logging.LogRecord) -> bool:
    """gunicorn logs a read that timed out (a client that stopped sending its head) with a
    traceback: one line says it."""
    if record.exc_info and isinstance(record.exc_info[1], TimeoutError):
        record.msg, record.args, record.exc_info = (
            "a client stopped sending its request; its connection was closed", (), None)
    return True


def _error_json(reason: str, detail: str) -> bytes:
    """A fault the HTTP server answers itself, before the app sees a request (a malformed
    request line or header, headers too large), as the app answers its errors: a JSON
    ``{"error": "..."}`` naming it, not the server library's HTML or text page."""
    return json.dumps({"error": f"{reason}: {detail}" if detail else reason}).encode()


def _gunicorn_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """``gunicorn.util.write_error``, in JSON (see :func:`_error_json`)."""
    from gunicorn import util

    body = _error_json(reason, mesg)
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


def _waitress_json_errors(server) -> None:
    """Have ``server`` (and each server of a several-socket one) answer its HTTP-level
    faults in JSON (see :func:`_error_json`)."""
    from waitress.channel import HTTPChannel
    from waitress.server import BaseWSGIServer
    from waitress.task import ErrorTask

    class JsonError(ErrorTask):
        def execute(self) -> None:
            e = self.request.error
            body = _error_json(e.reason, e.body)
            self.status = f"{e.code} {e.reason}"
            self.response_headers.append(("Content-Type", "application/json"))
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class Channel(HTTPChannel):
        error_task_class = JsonError

    for listener in list(_sockets(server).values()):
        if isinstance(listener, BaseWSGIServer):
            listener.channel_class = Channel


def _tmp_dir() -> str:
    """gunicorn's heartbeat files: /dev/shm when there is one (a disk write per beat
    otherwise), else the system's temporary folder."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else tempfile.gettempdir()


def serve_single(app: Any, *, host: str, port: int, threads: int,
                 max_body_bytes: int | None = None) -> None:
    """Serve ``app`` from this process with waitress (every platform), until SIGTERM or
    SIGINT.

    waitress buffers a request's body before the app sees it (to a temporary file past
    512 KB), so ``max_body_bytes`` is its limit too: a larger body is refused as it arrives
    (413), not after waitress held all of it (its own limit is 1 GB).

    SIGTERM stops it as it stops gunicorn's workers: the port closes at once, requests in
    flight (being received, computed or sent) finish, for up to :data:`GRACE` seconds, and
    idle keep-alive connections close. waitress itself has no such stop: the default SIGTERM
    ended the process with requests half-answered (a container's ``docker stop`` or a
    rollout does exactly that). SIGINT (Ctrl-C) stops at once, as waitress does.
    """
    from waitress.server import create_server

    limit = {} if max_body_bytes is None else {"max_request_body_size": max_body_bytes}
    server = create_server(app, host=host, port=port, threads=threads, ident="deploykit",
                           connection_limit=CONNECTIONS, channel_timeout=IDLE_TIMEOUT, **limit)
    _waitress_json_errors(server)
    stop = threading.Event()
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set()) if main else None
    try:
        while not stop.is_set():
            _turn(server, timeout=0.5)
        _drain(server, time.monotonic() + GRACE)
    except KeyboardInterrupt:  # Ctrl-C: stop now and return, as waitress.serve does
        return
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        server.task_dispatcher.shutdown(timeout=5)


def _sockets(server: Any) -> dict:
    """waitress's socket map: its listening sockets, connections and wake-up pipe."""
    return server.map if hasattr(server, "map") else server._map


def _turn(server: Any, timeout: float) -> None:
    """One turn of waitress's event loop: reads, writes and accepts what is ready."""
    from waitress import wasyncore

    wasyncore.loop(timeout=timeout, map=_sockets(server), count=1,
                   use_poll=server.adj.asyncore_use_poll)


def _drain(server: Any, deadline: float) -> None:
    """Close the listening sockets, then run the loop until no connection has a request
    being received, computed or sent, or until ``deadline``."""
    from waitress import wasyncore
    from waitress.channel import HTTPChannel
    from waitress.server import BaseWSGIServer

    sockets = _sockets(server)
    for listener in [d for d in list(sockets.values()) if isinstance(d, BaseWSGIServer)]:
        wasyncore.dispatcher.close(listener)  # not its close(): that closes the wake-up pipe too
    while time.monotonic() < deadline:
        busy = False
        for channel in [d for d in list(sockets.values()) if isinstance(d, HTTPChannel)]:
            if channel.requests or channel.request is not None or channel.total_outbufs_len:
                busy = True
            else:
                channel.will_close = True  # an idle keep-alive connection: closed on its turn
        _turn(server, timeout=0.05)
        if not busy:
            return
