"""``deploykit serve --ray``: the same server as Ray Serve replicas.

Each replica builds the very app ``deploykit serve`` runs (:func:`deploykit.serve.create_app`,
fast path included) and Ray Serve hands it HTTP requests through a2wsgi's WSGI bridge: one
implementation of the API, whichever way it is served. No shared file system is assumed:
the driver (this command) puts each bundle, packed, in Ray's object store, and a replica
unpacks it on its node and checks its hashes before it opens a runtime. The driver owns those
objects, so a replica that dies is restarted from them for as long as the command runs.

HTTP goes through one proxy on the head node (``proxy_location="HeadOnly"``), bound to the
given host (127.0.0.1 unless told otherwise); Ray Serve spreads the requests over the replicas
and replaces a replica that dies.
"""

from __future__ import annotations

import shutil
import signal
import threading
from pathlib import Path
from typing import Any

from deploykit.errors import ClusterError

APP_NAME = "deploykit"
REPLICA_CPUS = 1  # each replica runs its runtimes on one thread (see --runtime-threads)
# a2wsgi threads per replica: requests a replica holds at once (Ray Serve's own limit below)
BRIDGE_THREADS = 8
MAX_ONGOING = 8
_OWNED: set[str] = set()  # what deploy() started on the cluster: "serve", "app" (see stop)


def deploy(bundles: list[str], *, host: str, port: int, replicas: int,
           max_replicas: int | None, app_options: dict[str, Any], address: str | None) -> str:
    """Start the application on the cluster and return its URL (it runs until :func:`stop`).

    Raises:
        ClusterError: the cluster cannot hold the replicas, its Ray Serve already serves a
            deploykit application or listens elsewhere, or the deployment did not start.
    """
    from deploykit.cluster import connect, pack

    interrupt_on_signal()
    resources = connect(address)
    interrupt_on_signal()  # ray.init put in its own handler, which exits at once
    import ray
    from ray import serve

    need = replicas * REPLICA_CPUS
    if resources.get("CPU", 0) < need:
        raise ClusterError(f"{replicas} replicas need {need} CPUs; the Ray cluster has "
                           f"{resources.get('CPU', 0):g}: ask for fewer, or add nodes")
    running = _running_serve()
    refusal = running and shared_serve_refusal(*running, host=host, port=port)
    if refusal:
        raise ClusterError(refusal)
    shipped = [{"name": Path(b).resolve().name, "blob": [ray.put(pack(Path(b)))]}
               for b in bundles]
    scaling = {"autoscaling_config": {"min_replicas": replicas, "max_replicas": max_replicas,
                                      "target_ongoing_requests": 2}} \
        if max_replicas else {"num_replicas": replicas}
    app = _deployment().options(ray_actor_options={"num_cpus": REPLICA_CPUS},
                                max_ongoing_requests=MAX_ONGOING, **scaling) \
        .bind(shipped, app_options)
    try:
        if running is None:
            _OWNED.add("serve")
        serve.start(http_options={"host": host, "port": port}, proxy_location="HeadOnly")
        _OWNED.add("app")
        serve.run(app, name=APP_NAME, route_prefix="/")
    except KeyboardInterrupt:  # SIGINT or SIGTERM while the replicas start
        stop()
        raise
    except Exception as e:  # Ray's own errors: one line, the rest is in Ray's logs
        stop()
        raise ClusterError(f"the Ray Serve application did not start: {type(e).__name__}: "
                           f"{str(e).strip().splitlines()[0][:300]}") from None
    return f"http://{host}:{port}/"


def _running_serve() -> tuple[str, int, set[str]] | None:
    """The HTTP host and port and the application names of the Ray Serve instance already on
    the cluster, or None when there is none."""
    from ray.serve.context import _get_global_client  # the client serve.status() uses

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return None
    details = client.get_serve_details()
    http = details.get("http_options") or {}
    return http.get("host", ""), int(http.get("port", 0)), set(details.get("applications", {}))


def shared_serve_refusal(serve_host: str, serve_port: int, apps: set[str], *, host: str,
                         port: int) -> str | None:
    """Why this command cannot serve on a cluster whose Ray Serve already runs (its HTTP proxy
    on ``serve_host:serve_port``, serving ``apps``), or None when it can. Ray Serve has one
    proxy per cluster: it ignores a second host and port, and a second application of the
    same name replaces the first."""
    if APP_NAME in apps:
        return (f"this Ray cluster already serves a deploykit application, on "
                f"http://{serve_host}:{serve_port}/ (another `deploykit serve --ray`, or one "
                f"that did not stop cleanly): stop that one first")
    if (serve_host, serve_port) != (host, port):
        return (f"Ray Serve already runs on this cluster with its HTTP proxy on "
                f"{serve_host}:{serve_port}, and a cluster has one: serve there with --host "
                f"{serve_host} --port {serve_port}")
    return None


def interrupt_on_signal() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt, so that :func:`deploy` takes down what it
    started. Ray's own handler exits at once: a signal while ``serve.run`` waits for the
    replicas left the application and its proxy running on the cluster, without a driver."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def stop_signal() -> threading.Event:
    """An event set by SIGINT or SIGTERM, for the wait once :func:`deploy` has returned."""
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    return done


def stop(grace: float = 20.0) -> None:
    """Take the application down (replicas finish what they hold, for up to ``grace``
    seconds) and leave the cluster. Ray Serve itself is shut down only when :func:`deploy`
    started it: other applications on the cluster keep running. A local cluster that already
    lost its processes (Ctrl-C reaches the whole process group) is shut down without waiting
    for them. Does nothing when not connected (``serve.shutdown`` would start a cluster)."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        return
    take_down = serve.shutdown if "serve" in _OWNED else \
        (lambda: serve.delete(APP_NAME)) if "app" in _OWNED else None
    _OWNED.clear()
    if take_down is not None:
        done = threading.Thread(target=take_down, daemon=True)
        done.start()
        done.join(grace)
    ray.shutdown()


def _deployment():
    """The Ray Serve deployment class (built on first use: Ray is imported only here)."""
    from ray import serve

    @serve.deployment(name="deploykit")
    @serve.ingress()
    class Server:
        """One replica: the bundles unpacked here, and the app ``deploykit serve`` runs."""

        def __init__(self, shipped: list[dict[str, Any]], options: dict[str, Any]) -> None:
            from deploykit._fs import scratch_folder

            self.folder = scratch_folder("deploykit-replica")
            self.wsgi = _app(shipped, options, self.folder)

        def __serve_build_asgi_app__(self):
            from a2wsgi import WSGIMiddleware

            return WSGIMiddleware(self.wsgi, workers=BRIDGE_THREADS)

        def __del__(self) -> None:
            shutil.rmtree(self.folder, ignore_errors=True)

    return Server


def _app(shipped: list[dict[str, Any]], options: dict[str, Any], folder: Path):
    import ray

    from deploykit.cluster import unpack
    from deploykit.serve import create_app

    paths = [unpack(ray.get(b["blob"][0]), folder / b["name"]) for b in shipped]
    return create_app(paths, **options)
