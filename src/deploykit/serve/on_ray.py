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
import time
from pathlib import Path
from typing import Any, NamedTuple

from deploykit.errors import ClusterError
from deploykit.serve.run import netloc

APP_NAME = "deploykit"
REPLICA_CPUS = 1  # each replica runs its runtimes on one thread (see --runtime-threads)
# a2wsgi threads per replica: requests a replica holds at once (Ray Serve's own limit below)
BRIDGE_THREADS = 8
MAX_ONGOING = 8
# how long deploy() waits for a Ray Serve that is shutting down (a server just stopped) to end
SHUTDOWN_WAIT = 60.0
_OWNED: set[str] = set()  # what deploy() started on the cluster: "serve", "app" (see stop)


def deploy(bundles: list[str], *, host: str, port: int, replicas: int,
           max_replicas: int | None, app_options: dict[str, Any], address: str | None) -> str:
    """Start the application on the cluster and return its URL (it runs until :func:`stop`).

    Raises:
        ClusterError: the cluster cannot hold the replicas, its Ray Serve already serves a
            deploykit application or listens elsewhere, or the deployment did not start.
    """
    from deploykit.cluster import connect

    interrupt_on_signal()
    resources = connect(address)
    interrupt_on_signal()  # ray.init put in its own handler, which exits at once
    import ray
    from ray import serve

    need = replicas * REPLICA_CPUS
    if resources.get("CPU", 0) < need:
        raise ClusterError(f"{replicas} replicas need {need} CPUs; the Ray cluster has "
                           f"{resources.get('CPU', 0):g}: ask for fewer, or add nodes")
    running = _settled_serve(SHUTDOWN_WAIT)
    refusal = running and shared_serve_refusal(running.host, running.port, set(running.apps),
                                               host=host, port=port)
    if refusal:
        raise ClusterError(refusal)
    shipped = [_shipped(i, b, ray.put) for i, b in enumerate(bundles)]
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
    return f"http://{netloc(host, port)}/"


class _Serve(NamedTuple):
    """The Ray Serve instance on the cluster, as :func:`deploy` finds it."""
    host: str  # of its HTTP proxy
    port: int
    apps: dict[str, str]  # application name: status
    shutting_down: bool


def _settled_serve(wait: float) -> _Serve | None:
    """:func:`_running_serve`, once a Ray Serve that is shutting down, or deleting a deploykit
    application, has finished (for up to ``wait`` seconds): a server stopped a moment ago must
    neither refuse the next one nor hand it a controller about to die.

    Raises:
        ClusterError: it has not finished within ``wait`` seconds.
    """
    from deploykit._progress import Reporter

    deadline, said = time.monotonic() + wait, False
    while True:
        running = _running_serve()
        if running is None or not (running.shutting_down or "DELETING" in running.apps.values()):
            return running
        if time.monotonic() > deadline:
            raise ClusterError(f"Ray Serve on this cluster is still shutting down after "
                               f"{wait:g} s: try again once it has ended (ray status)")
        if not said:
            Reporter().info("waiting for the Ray Serve that is shutting down on this cluster")
            said = True
        time.sleep(0.5)


def _running_serve() -> _Serve | None:
    """The Ray Serve instance on the cluster, or None when there is none."""
    import ray
    from ray.serve import context  # the client serve.status() uses

    context._disconnect()  # a cached client may hold a controller that has ended since
    try:
        client = context._get_global_client(raise_if_no_controller_running=False)
        if client is None:
            return None
        details = client.get_serve_details()
    except ray.exceptions.RayActorError:  # it ended while asked: Serve was shutting down
        return _Serve("", 0, {}, shutting_down=True)
    http = details.get("http_options") or {}
    apps = {name: a.get("status", "") for name, a in details.get("applications", {}).items()}
    return _Serve(http.get("host", ""), int(http.get("port", 0)), apps,
                  _shutting_down(details.get("controller_info") or {}))


def _shutting_down(controller: dict[str, Any]) -> bool:
    """Whether the Serve ``controller`` (its ``controller_info``) has begun to shut down.
    Its applications and HTTP proxy look the same as a running Serve's for the last part of
    that; what tells is the flag it keeps in Ray's internal key-value store (namespace
    ``serve``) from ``serve.shutdown()`` until it ends, keyed by the namespace of the job that
    started it (the last 8 hex digits of its actor id): a flag left by a controller that died
    shutting down does not count for the next."""
    import ray
    from ray.experimental.internal_kv import _internal_kv_get

    job = controller.get("actor_id", "")[-8:]
    jobs = ray._private.worker.global_worker.gcs_client.get_all_job_info()
    namespace = next((i.config.ray_namespace for j, i in jobs.items() if j.hex() == job), "")
    key = f"ray-serve-{namespace}-serve-shutdown-in-progress"
    return bool(namespace) and _internal_kv_get(key, namespace=b"serve") is not None


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


# the signals that end a serve --ray; SIGHUP (its terminal or SSH session closed) killed the
# driver and left the application serving on the cluster, with nothing left to stop it
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def interrupt_on_signal() -> None:
    """The :data:`STOP_SIGNALS` raise KeyboardInterrupt, so that :func:`deploy` takes down
    what it started. Ray's own handler exits at once: a signal while ``serve.run`` waits for
    the replicas left the application and its proxy running on the cluster, without a
    driver."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _interrupt)


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def stop_signal() -> threading.Event:
    """An event set by a :data:`STOP_SIGNALS`, for the wait once :func:`deploy` has
    returned."""
    done = threading.Event()
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda *_: done.set())
    return done


SERVE_SHUTDOWN_WAIT = 30.0  # Ray 2.60's ServeControllerClient.shutdown(timeout_s=30.0)


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
        _delete_app if "app" in _OWNED else None
    _OWNED.clear()
    if take_down is not None:
        done = threading.Thread(target=take_down, daemon=True)
        done.start()
        # serve.shutdown() gives its controller SERVE_SHUTDOWN_WAIT seconds before it gives up;
        # ray.shutdown() while that thread is still inside Ray made the core worker end the
        # process (status 1, nothing printed): wait it out
        done.join(grace if take_down is _delete_app else max(grace, SERVE_SHUTDOWN_WAIT + 5))
    ray.shutdown()


def _delete_app() -> None:
    """Delete our application from a Ray Serve we share, unless that Serve is shutting down:
    it takes the application with it, and ``serve.delete`` on it waits for ever."""
    from ray import serve

    shared = _running_serve()
    if shared is not None and not shared.shutting_down:
        serve.delete(APP_NAME)


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

    paths = [unpack(ray.get(b["blob"][0]), folder / b["folder"]) for b in shipped]
    return create_app([f"{b['as']}={p}" if b["as"] else p
                       for b, p in zip(shipped, paths, strict=True)], **options)


def _shipped(i: int, arg: str, put) -> dict[str, Any]:
    """A bundle argument (:func:`deploykit.serve.models.bundle_arg`) as a replica gets it:
    packed, with the folder to unpack it into (numbered: two bundles may share a folder
    name) and the name to serve it under."""
    from deploykit.cluster import pack
    from deploykit.serve.models import bundle_arg

    name, folder = bundle_arg(arg)
    return {"folder": f"{i}-{folder.resolve().name}", "as": name, "blob": [put(pack(folder))]}
