"""``deploykit`` command line. Imports nothing heavy until a command runs.

Every :class:`~deploykit.errors.DeploykitError` is printed as ``error: ...`` and exits
with status 2; a traceback means a bug in deploykit.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from deploykit import __version__
from deploykit._fs import human_bytes
from deploykit._runlog import capture, current, new_log_path, terminal_err, terminal_out
from deploykit.errors import DeploykitError
from deploykit.flows import DEEP_FLOWS, FLOWS, TRAINABLE


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deploykit",
        description="Train along any path of the Python AI flowchart, export to every "
                    "deployment artifact, and prove each one predicts like the original.")
    p.add_argument("--version", action="version", version=f"deploykit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_train_args, _whatif_args, _export_args, _bundle_args, _serve_args,
                _package_args):
        add(sub)
    for name, what, func in (("formats", "print the conversion graph", _cmd_formats),
                             ("datasets", "list the builtin datasets", _cmd_datasets)):
        f = sub.add_parser(name, help=what)
        _verbose_arg(f)
        f.set_defaults(func=func)
    return p


def _train_args(sub) -> None:
    t = sub.add_parser("train", help="train a model along one flow and write a model folder")
    t.add_argument("--flow", "--path", dest="flow", required=True, choices=TRAINABLE,
                   help="the flowchart path to train along (--path is the old name)")
    _data_args(t)
    t.add_argument("--out", required=True, help="model folder to write")
    t.add_argument("--epochs", type=int, help="deep flows: epochs (default per flow)")
    t.add_argument("--arch", default="auto", choices=("auto", "mlp", "cnn"),
                   help="deep flows: CNN for image data by default, else MLP")
    t.add_argument("--target-score", type=float,
                   help="auto: validation score at which classical ML is enough")
    t.add_argument("--margin", type=float, default=0.01,
                   help="auto: how much a deep model must beat classical by (default 0.01)")
    t.add_argument("--deep-flow", "--deep-path", dest="deep_flow", default="keras-tensorflow",
                   choices=DEEP_FLOWS, help="auto: the deep flow to try")
    t.add_argument("--json", action="store_true", help="print the model card as JSON")
    _verbose_arg(t)
    t.set_defaults(func=_cmd_train)


def _whatif_args(sub) -> None:
    w = sub.add_parser("what-if", help="train along every flow and compare (the main job)")
    _data_args(w)
    w.add_argument("--out", default="whatif-out", help="folder for models and reports")
    w.add_argument("--epochs", type=int, help="deep flows: epochs (default per flow)")
    w.add_argument("--to", default="all", help="targets: 'all', a comma-separated list, "
                                               "or 'none' to only train")
    w.add_argument("--flows", help="comma-separated flows (default: all five)")
    _ray_arg(w)
    _verbose_arg(w)
    w.set_defaults(func=_cmd_whatif)


def _export_args(sub) -> None:
    e = sub.add_parser("export", help="export a model to deployment targets and verify each")
    e.add_argument("model", nargs="+", help="a deploykit model folder, a .keras/.skops/.pt2/"
                   ".onnx file or SavedModel folder; several of them, or a folder of them")
    e.add_argument("--to", default="all", help="'all' or a comma-separated list of targets "
                                               "(deploykit formats lists them)")
    e.add_argument("--out", required=True, help="bundle folder to write (several models: the "
                                                "folder that gets one bundle per model)")
    e.add_argument("--sample", help=".npy (or .npz with X) of example inputs: the probe set "
                                    "and, for PyTorch modules, the input shape; for a model "
                                    "with several inputs, an .npz with one array per input "
                                    "name; a .csv with a header for a scikit-learn model "
                                    "fitted on a DataFrame (columns by name, words too)")
    e.add_argument("--task", choices=("classification", "regression"),
                   help="what the model's outputs are, when it should not be inferred")
    e.add_argument("--labels", type=_labels,
                   help="a classifier's class names in class order: comma-separated, or a "
                        ".txt file of one per line (also finds its scores among several "
                        "outputs: the one as wide as the labels)")
    e.add_argument("--timeout", type=_seconds, default=600.0,
                   help="seconds per converter (default 600)")
    e.add_argument("--quiet", action="store_true", help="no progress output")
    _ray_arg(e)
    _verbose_arg(e)
    e.set_defaults(func=_cmd_export)


def _bundle_args(sub) -> None:
    v = sub.add_parser("verify", help="re-check a bundle's artifacts using only the bundle")
    v.add_argument("bundle", help="a bundle folder (deploykit export --out)")
    _verbose_arg(v)
    v.set_defaults(func=_cmd_verify)
    i = sub.add_parser("inspect", help="show a bundle's manifest: artifacts, sizes, parity")
    i.add_argument("bundle", help="a bundle folder (deploykit export --out)")
    i.add_argument("--json", action="store_true", help="print the manifest as JSON")
    _verbose_arg(i)
    i.set_defaults(func=_cmd_inspect)
    r = sub.add_parser("report", help="write report.html (one self-contained page) for a "
                                      "what-if output folder or a bundle")
    r.add_argument("folder", help="a what-if --out folder (reads its report.json) or a bundle")
    r.add_argument("--out", help="where to write the page (default: FOLDER/report.html)")
    _verbose_arg(r)
    r.set_defaults(func=_cmd_report)


def _serve_args(sub) -> None:
    s = sub.add_parser("serve", help="serve bundles over HTTP (Open Inference Protocol v2)")
    s.add_argument("bundles", nargs="+", help="bundle folders; NAME=FOLDER serves one under "
                                              "NAME (two versions of one model)")
    s.add_argument("--targets", help="comma-separated targets to serve (default: every "
                                     "passing server-side artifact)")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    s.add_argument("--workers", type=_positive, default=None,
                   help="worker processes (default: one per core; 1 = a single waitress "
                        "process, also the choice where gunicorn cannot run)")
    s.add_argument("--threads", type=_positive, default=None,
                   help="request threads per worker (default: 1 with several workers, 4 "
                        "for a single process)")
    s.add_argument("--runtime-threads", type=_positive, default=1,
                   help="math threads of each model runtime (default 1: one per worker "
                        "process is fastest when the workers fill the cores)")
    s.add_argument("--batch-window-ms", type=_window_ms, default=0.0,
                   help="dynamic batching: run concurrent requests arriving within this many "
                        "ms as one batch (default 0: off; takes request threads, so --threads "
                        "defaults to 8 with it)")
    s.add_argument("--max-batch", type=_positive, default=1024,
                   help="rows per request (default 1024)")
    s.add_argument("--max-body-mb", type=_megabytes, default=8.0,
                   help="request body limit in MB (default 8)")
    s.add_argument("--read-timeout", type=_seconds, default=20.0,
                   help="seconds a worker waits on a client that stops sending its request, "
                        "then answers 408 (default 20; with several workers)")
    s.add_argument("--dev", action="store_true", help="Flask's development server instead")
    _ray_arg(s, "serve as a Ray Serve application")
    s.add_argument("--replicas", type=_positive, default=None,
                   help="with --ray: replicas of the server, one CPU each (default 1)")
    s.add_argument("--max-replicas", type=_positive, default=None,
                   help="with --ray: scale between --replicas and this many with the load")
    _verbose_arg(s)
    s.set_defaults(func=_cmd_serve)


def _package_args(sub) -> None:
    k = sub.add_parser("package", help="a small self-verifying package for one kind of device")
    k.add_argument("bundle", help="a bundle folder (deploykit export --out)")
    k.add_argument("--for", dest="device", required=True, choices=("edge", "android", "ios", "web"),
                   help="edge: LiteRT/ONNX artifacts with a numpy runner that verifies and "
                        "serves them; android, ios: the phone artifacts with their runtime's "
                        "setup; web: the browser artifacts with a page that runs them")
    k.add_argument("--out", required=True, help="package folder (a .zip is written beside it)")
    _verbose_arg(k)
    k.set_defaults(func=_cmd_package)


def _number(kind: type, lo: float, hi: float, says: str, *, above_lo: bool = False):
    """An argparse type: a ``kind`` (int or float) from ``lo`` (or above it) to ``hi``; NaN
    never (it compares false)."""
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            v = None
        if v is None or not (lo < v if above_lo else lo <= v) or not v <= hi:
            raise argparse.ArgumentTypeError(f"expected {says}, got {text!r}")
        return v
    return parse


_positive = _number(int, 1, math.inf, "a positive whole number")
_port = _number(int, 1, 65535, "a port from 1 to 65535")
_seconds = _number(float, 0, 1e9, "seconds above 0", above_lo=True)  # at 0 every cell timed out
_megabytes = _number(float, 0, 4096, "megabytes above 0, up to 4096", above_lo=True)
_window_ms = _number(float, 0, 1000, "milliseconds from 0 to 1000")


def _loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _ray_arg(p: argparse.ArgumentParser, what: str = "run the cells as Ray tasks") -> None:
    p.add_argument("--ray", nargs="?", const=True, default=None, metavar="ADDRESS",
                   help=f"{what} on the Ray cluster at ADDRESS (HEAD:6379), else the one "
                        f"RAY_ADDRESS names, else a new one on this machine")


def _verbose_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", action="store_true",
                   help="show the frameworks' own output live (it goes to a run log otherwise)")


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="digits",
                   help="builtin dataset (digits, iris, wine, breast_cancer, diabetes) "
                        "or a .csv / .npz file (default: digits)")
    p.add_argument("--label-column", "--target", dest="label_column",
                   help="CSV: the column holding what to predict (--target is the old name)")
    p.add_argument("--task", choices=("classification", "regression"),
                   help="CSV/NPZ: the task, when it should not be inferred")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def _cmd_train(a: argparse.Namespace) -> int:
    import json

    from deploykit.training import train

    auto = {"target_score": a.target_score, "margin": a.margin, "deep_flow": a.deep_flow} \
        if a.flow == "auto" else {}
    r = train(a.flow, a.data, a.out, label_column=a.label_column, task=a.task, seed=a.seed,
              epochs=a.epochs, arch=a.arch, quiet=a.quiet, **auto)
    if a.json:
        _say(json.dumps(r.card, indent=2))
        return 0
    if r.decision:
        _say(f"auto chose {r.decision['chosen']}: {r.decision['reason']}.")
        _say(f"  rule: {r.decision['rule']}")
    test = ", ".join(f"{k} {v:.4f}" for k, v in r.metrics["test"].items())
    sel = r.card.get("selection") or {}
    cv = f" (cv {sel['metric']} {sel['cv_score']:.4f})" if "cv_score" in sel else ""
    _say(f"{r.card['flow']}: {r.card['model']['kind']}{cv}; test {test}; "
         f"trained in {r.card['train_seconds']:.1f} s -> {a.out}")
    return 0


def _cmd_whatif(a: argparse.Namespace) -> int:
    from deploykit.report.tables import matrix_rows, table_rows
    from deploykit.whatif import failure_line, what_if

    flows = FLOWS if a.flows is None else tuple(filter(None, map(str.strip, a.flows.split(","))))
    result = what_if(a.data, a.out, flows=flows, seed=a.seed, epochs=a.epochs, quiet=a.quiet,
                     label_column=a.label_column, targets="" if a.to == "none" else a.to,
                     ray=a.ray)
    _print_table(f"What-if on {a.data}: training", *table_rows(result))
    if result["targets"]:
        _print_table(f"What-if on {a.data}: every flow × every target "
                     f"(parity, size, batch-1 latency)", *matrix_rows(result))
    _say(f"report: {a.out}/report.html (open it in a browser), {a.out}/report.md, "
         f"{a.out}/report.json; bundles in {a.out}/bundles/ "
         f"({result['seconds']:.0f} s)")
    failed = failure_line(result)
    if failed:
        _say(f"{failed}. Whole reasons: {a.out}/report.md (Failures)", err=True)
    return 1 if failed else 0


def _labels(text: str) -> list[str]:
    """``--labels``: ``a,b,c``, or a ``.txt`` file of one name per line."""
    if text.endswith(".txt"):
        try:
            names = Path(text).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise argparse.ArgumentTypeError(f"cannot read {text}: {e}") from e
    else:
        names = text.split(",")
    names = [n.strip() for n in names if n.strip()]
    if len(names) < 2 or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: give two or more distinct class names")
    return names


def _shortened(names: list[str], most: int = 5) -> str:
    return ", ".join(names[:most]) + (f", … {len(names) - most} more" if len(names) > most else "")


def _clipped(text: str, most: int) -> str:
    """``text`` cut to at most ``most`` characters at a word's end, with "…" (a reason cut
    mid-word, "failed: Invali", hid its point); the whole text is in `inspect`."""
    if len(text) <= most:
        return text
    cut = text[:most - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut[most // 2:] else cut) + "…"


def _load_sample(path: str | None):
    from deploykit.sources import read_sample

    return None if path is None else read_sample(path, "--sample")


def _float32_int8(bundle: Path | None) -> list[str]:
    """An int8 artifact that is the float32 model (no mix of integer and float ops kept the
    predictions) passes its profile: said here, not only by ``inspect``."""
    import json

    manifest = bundle / "manifest.json" if bundle else None
    if manifest is None or not manifest.is_file():
        return []
    return [f"{a['target']}: {a['converter_options']['float32_ops']}"
            for a in json.loads(manifest.read_text())["artifacts"]
            if a.get("converter_options", {}).get("float32_ops", "").startswith("every op")]


def _cmd_export(a: argparse.Namespace) -> int:
    from deploykit.exporting import export, models_in

    models = models_in(a.model)
    if len(models) > 1 or models[0] != Path(a.model[0]):
        return _export_several(a, models)
    r = export(models[0], a.to, out=a.out, sample=_load_sample(a.sample), task=a.task,
               labels=a.labels, quiet=a.quiet, timeout=a.timeout, ray=a.ray)
    rows = [[c.target, c.status, " → ".join(c.route), human_bytes(c.bytes),
             _ms(c.latency_ms), _clipped(c.reason or (c.parity.worst if c.parity else ""), 90)]
            for c in r.cells]
    _print_table(f"Export {a.model[0]}", ["target", "status", "route", "size", "batch-1",
                                           "parity / reason"], rows)
    _say(f"bundle: {a.out}")
    for note in [*(r.source.get("notes") or []), *_float32_int8(r.bundle)]:
        _say(f"note: {note}")
    failed = [c for c in r.cells if c.status in ("fail", "error")]
    if failed:
        reachable = sum(c.status != "n/a" for c in r.cells)
        named = ", ".join(f"{c.target} ({(c.reason or '').split(':')[0]})" for c in failed)
        _say(f"{len(failed)} of {reachable} reachable targets failed: {named}. "
             f"Whole reasons: deploykit inspect {a.out}", err=True)
    hollow = [c for c in r.cells if c.status == "vacuous"]
    if hollow:
        _say(f"warning: {len(hollow)} target(s) not verified ({', '.join(c.target for c in hollow)}"
             f"): {hollow[0].reason}", err=True)
    return 0 if r.ok else 1


def _check_replicas(a: argparse.Namespace) -> None:
    if a.ray is None:
        raise DeploykitError("--replicas and --max-replicas serve on Ray: add --ray [ADDRESS]")
    if a.workers or a.threads or a.dev:
        raise DeploykitError("--workers, --threads and --dev shape a server on this machine; "
                             "on Ray, ask for --replicas")
    if a.max_replicas and a.max_replicas < (a.replicas or 1):
        raise DeploykitError(f"--max-replicas {a.max_replicas} is below --replicas "
                             f"{a.replicas or 1}")


def _serve_on_ray(a: argparse.Namespace, targets: list[str] | None, served: list[str]) -> int:
    from deploykit.serve import on_ray

    replicas = a.replicas or 1
    options = {"targets": targets, "max_batch": a.max_batch, "runtime_threads": a.runtime_threads,
               "max_body_bytes": int(a.max_body_mb * 1024 * 1024),
               "batch_window_ms": a.batch_window_ms}
    try:  # a signal from here on ends in on_ray.stop(): nothing is left on the cluster
        url = on_ray.deploy(a.bundles, host=a.host, port=a.port, replicas=replicas,
                            max_replicas=a.max_replicas, app_options=options,
                            address=None if a.ray is True else a.ray)
        stopping = on_ray.stop_signal()
        scale = f"{replicas} to {a.max_replicas} replicas" if a.max_replicas else \
            f"{replicas} replica{'s' if replicas > 1 else ''}"
        _say(f"serving {'; '.join(served)} on {url} (Ray Serve, {scale})")
        stopping.wait()
    finally:
        on_ray.stop()
    return 0


def _export_several(a: argparse.Namespace, models: list[Path]) -> int:
    """One bundle per model in ``--out``; a table with a row per model."""
    from deploykit.exporting import export_many

    if a.sample or a.task or a.labels:
        raise DeploykitError("--sample, --task and --labels apply to one model: export the "
                             "models that need them one at a time")
    reports = export_many(models, a.to, out=a.out, quiet=a.quiet, timeout=a.timeout, ray=a.ray)
    rows = []
    for m, r in zip(models, reports):
        bad = [c for c in r.cells if c.status in ("fail", "error", "vacuous")]
        passed = sum(c.status == "pass" for c in r.cells)
        rows.append([str(m), str(r.bundle or "(none)"), f"{passed}/{len(r.cells)}",
                     _clipped("; ".join(f"{c.target}: {_clipped(c.reason or '', 60)}"
                                        for c in bad), 120)])
    _print_table(f"Export of {len(models)} models", ["model", "bundle", "passed", "failed"],
                 rows)
    failed = sum(not r.ok for r in reports)
    if failed:
        _say(f"{failed} of {len(models)} models have failed targets. Whole reasons: deploykit "
             f"inspect BUNDLE", err=True)
    return 1 if failed else 0


def _cmd_verify(a: argparse.Namespace) -> int:
    from deploykit.exporting import verify

    r = verify(a.bundle)
    rows = [[p.target, p.profile, p.status.upper(), p.worst,
             ("; ".join(p.failures) or p.vacuous or "")[:100]] for p in r.results]
    _print_table(f"Verify {a.bundle}", ["target", "profile", "verdict", "parity", "failures"],
                 rows)
    for p in r.results:
        for f in p.failures:
            _say(f"FAIL {p.target}: {f}", err=True)
        if p.status == "vacuous":
            _say(f"VACUOUS {p.target}: {p.vacuous}", err=True)
    if not r.results:
        _say(f"error: {a.bundle} holds no artifact to verify (every target failed at export: "
             f"deploykit inspect {a.bundle} shows why)", err=True)
    return 0 if r.ok else 1


def _cmd_report(a: argparse.Namespace) -> int:
    from deploykit.report import regenerate

    _say(f"report: {_shown(regenerate(a.folder, a.out))}")
    return 0


def _cmd_inspect(a: argparse.Namespace) -> int:
    import json

    from deploykit.bundle import load_bundle
    from deploykit.signature import format_shape

    b = load_bundle(a.bundle)
    if a.json:
        _say(json.dumps(b.manifest, indent=2))
        return 0
    m = b.manifest
    tensors = {kind: ", ".join(f"{s.name} {s.dtype} {format_shape(s.shape)}" + (
        f" (columns {_shortened(list(s.columns))})" if s.columns else "") + (
        " (NaN: a missing value)" if s.missing else "") + (
        f" (ids {s.range[0]}..{s.range[1]})" if s.range else "") + (
        f" (words: {_shortened([f'{w.name} {len(w.words)}' for w in s.words])})"
        if s.words else "") + (
        f" (gaps filled: {_shortened([f'{f.name} {f.value:g}' for f in s.filled])})"
        if s.filled else "") for s in specs)
               for kind, specs in (("in", b.signature.inputs), ("out", b.signature.outputs))}
    classes = f" of {len(b.labels)} classes ({_shortened(b.labels)}; scores: " \
        f"{b.signature.scores})" if b.task == "classification" and b.signature.scores else ""
    _say(f"{b.name}: {m['source']['framework']}"
         f"{' (' + m['source']['backend'] + ')' if m['source'].get('backend') else ''}, "
         f"{b.task}{classes}; inputs {tensors['in']}; outputs {tensors['out']}")
    rows = []
    for x in b.artifacts:
        t = b.tradeoff(x)
        ratio = "" if t["size_vs_fp32"] is None else f"{t['size_vs_fp32']:.2f}x"
        change = "" if t["metric_change"] is None else f"{t['metric']} {t['metric_change']:+.4f}"
        rows.append([x.target, x.runtime, " → ".join(x.route), human_bytes(x.bytes), ratio,
                     change, x.parity.status.upper(), x.parity.worst, _ms(x.latency_ms),
                     str(x.batch or "dynamic")])
    _print_table("artifacts", ["target", "runtime", "route", "size", "vs fp32",
                               "metric Δ (held-out)", "parity", "worst", "batch-1", "batch"], rows)
    open_axes = ", ".join(f"{s.name}[{a}]" for s in b.signature.inputs for a in s.open_axes)
    for x in b.artifacts:  # what a route changed from its converters' defaults, and why
        for key, why in x.converter_options.items():
            _say(f"{x.target}: {key}: {why}")
        if x.any_length:
            _say(f"{x.target}: takes any length along {open_axes} (proved at a shorter one)")
    for f in b.failed:
        _say(f"\n{f.status.upper()} {f.target} ({' → '.join(f.route)}): {f.reason}")
        if f.log_tail:
            _say("  last lines of its output:\n    " + f.log_tail.replace("\n", "\n    "))
    return 0


def _cmd_serve(a: argparse.Namespace) -> int:
    from deploykit.serve import create_app, run
    from deploykit.serve.models import check_bundles

    targets = [t.strip() for t in a.targets.split(",")] if a.targets else None
    on_ray = a.ray is not None or a.replicas or a.max_replicas
    if on_ray:
        _check_replicas(a)
    if not _loopback(a.host):
        _say(f"warning: on {a.host} the models answer other machines, with no authentication; "
             f"put a proxy such as nginx in front (it also buffers slow clients)", err=True)
    served = check_bundles(a.bundles, targets)  # before any fork: one error, not one per worker
    run.check_port(a.host, a.port)
    master = os.getpid()

    def factory():
        try:
            return create_app(a.bundles, targets=targets, max_batch=a.max_batch,
                              max_body_bytes=int(a.max_body_mb * 1024 * 1024),
                              runtime_threads=a.runtime_threads,
                              batch_window_ms=a.batch_window_ms)
        except DeploykitError as e:  # in a worker: say it here, the master then stops
            if os.getpid() != master:
                _say(f"error: {e}", err=True)
            raise

    if on_ray:
        return _serve_on_ray(a, targets, served)
    workers = a.workers or run.cores()
    threads = a.threads or (8 if a.batch_window_ms > 0 else None)  # batching needs company
    if a.dev or workers == 1 or not run.can_fork_workers():
        app = factory()
        mode = "development server" if a.dev else "1 process"
        _say(f"serving {'; '.join(served)} on http://{run.netloc(a.host, a.port)}/ ({mode}, "
             f"{_rss_mb()} MB resident)")
        if a.dev:
            app.run(host=a.host, port=a.port, threaded=True)
        else:
            run.serve_single(app, host=a.host, port=a.port, threads=threads or 4,
                             max_body_bytes=int(a.max_body_mb * 1024 * 1024))
        return 0
    _say(f"serving {'; '.join(served)} on http://{run.netloc(a.host, a.port)}/ ({workers} worker "
         f"processes)")
    try:
        run.serve_workers(factory, host=a.host, port=a.port, workers=workers,
                          threads=threads or 1, read_timeout=a.read_timeout,
                          ready=lambda pid: _say(f"worker {pid} ready ({_rss_mb()} MB resident)"))
    except SystemExit as e:  # gunicorn's master ends with sys.exit
        if os.getpid() != master:  # a worker's exit: its code tells the master why (3: it
            raise  # could not boot, so stop rather than fork it again and again)
        if e.code not in (0, None):
            _say(f"error: the workers stopped (gunicorn exit code {e.code})", err=True)
            return 2
    return 0


def _rss_mb() -> str:
    from deploykit.serve.run import resident_mb

    mb = resident_mb()
    return "?" if mb is None else f"{mb:.0f}"


def _cmd_package(a: argparse.Namespace) -> int:
    import json

    from deploykit.package import package

    out = package(a.bundle, a.device, a.out)
    meta = json.loads((out / "package.json").read_text())
    for art in meta["artifacts"]:
        _say(f"{art['target']:12s} {human_bytes(art['bytes']):>10s}  {art['path']}")
        for rt, lacks in art.get("older_runtimes", {}).items():
            if lacks:
                _say(f"warning: {art['target']} will not run on {rt}: it needs "
                     f"{'; '.join(lacks)}. Devices with that runtime need a newer one, or "
                     f"ship a target that loads there (see the package README)", err=True)
    _say(f"package: {a.out}  zip: {a.out.rstrip('/')}.zip")
    return 0


def _cmd_formats(a: argparse.Namespace) -> int:
    from deploykit import formats
    from deploykit.graph import describe

    formats.load()
    _say(describe())
    return 0


def _ms(x) -> str:
    return "" if x is None else f"{x:.3f} ms"


def _cmd_datasets(a: argparse.Namespace) -> int:
    from deploykit.data import describe_builtins

    for name, task in describe_builtins():
        _say(f"{name:15s} {task}")
    return 0


def _print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for h in header:
        table.add_column(h)
    for r in rows:
        table.add_row(*r)
    Console(file=terminal_out(), width=max(120, 24 * len(header))).print(table)


def _say(text: str = "", err: bool = False) -> None:
    """A line for the user's terminal (never the run log)."""
    stream = terminal_err() if err else terminal_out()
    stream.write(text + "\n")
    stream.flush()


# command -> the folder whose logs/ subfolder gets the run log (from the parsed arguments)
TEMP_LOGS = Path(tempfile.gettempdir()) / "deploykit"
LOG_FOLDERS = {
    "train": lambda a: Path(a.out).resolve().parent,
    "what-if": lambda a: Path(a.out),
    "export": lambda a: Path(a.out).resolve().parent,
    "verify": lambda a: _beside(a.bundle),
    "serve": lambda a: _beside(_served_folder(a.bundles[0])),
    "package": lambda a: Path(a.out).resolve().parent,
    "inspect": lambda a: _beside(a.bundle),
}


def _served_folder(arg: str) -> str:
    """A ``serve`` argument's folder (it may be ``NAME=FOLDER``)."""
    from deploykit.serve.models import bundle_arg

    try:
        return str(bundle_arg(arg)[1])
    except DeploykitError:  # a bad name: said once the command runs
        return arg


def _beside(bundle: str) -> Path:
    """The folder holding ``bundle`` when it is a folder, else the temporary folder's: a
    mistyped path made a ``logs/`` folder at ``/``, or inside a bundle for its manifest."""
    p = Path(bundle).resolve()
    try:
        return p.parent if p.is_dir() and p.parent != p else TEMP_LOGS
    except OSError:  # a name too long for the file system
        return TEMP_LOGS


def _log_path(args: argparse.Namespace) -> Path:
    """The run log: beside the command's output, else (that folder cannot hold one: ``--out``
    under a file, a file named ``logs`` there) in the temporary folder's, so the command
    still says what is wrong in one line."""
    try:
        return new_log_path(LOG_FOLDERS.get(args.command, lambda a: TEMP_LOGS)(args),
                            args.command)
    except OSError:
        return new_log_path(TEMP_LOGS, args.command)


PIPE_CLOSED = 141  # a shell's status for a command whose output pipe closed (128 + SIGPIPE)


def main(argv: Sequence[str] | None = None) -> int:
    from deploykit._lazy import skip_unused_imports

    args = _parser().parse_args(argv)
    skip_unused_imports()
    log = _log_path(args)
    with capture(log, verbose=getattr(args, "verbose", False)):
        code = _run(args, log)
        if code not in (0, 130, PIPE_CLOSED) and not getattr(args, "verbose", False):
            _say(f"details: {_shown(log)}", err=True)
        return code


def _run(args: argparse.Namespace, log: Path) -> int:
    """Run a command; errors become one line (the traceback goes to the run log)."""
    from deploykit._interrupt import abort_on_ctrl_c

    try:
        with abort_on_ctrl_c():  # the jobs in flight stop at once (workers, Ray tasks)
            return args.func(args)
    except BrokenPipeError:  # the reader of a pipe left (`deploykit inspect B | head`)
        return PIPE_CLOSED
    except DeploykitError as e:
        _say(f"error: {e}", err=True)
        return 2
    except KeyboardInterrupt:
        _say("interrupted", err=True)
        return 130
    except OSError as e:  # the file system said no: a name too long, no space, a file in the way
        import traceback

        current().write(traceback.format_exc())
        _say(f"error: {_os_error(e)}", err=True)
        return 2
    except Exception as e:  # a bug in deploykit: one line here, the traceback in the log
        import traceback

        current().write(traceback.format_exc())
        _say(f"error: internal error in deploykit ({type(e).__name__}: {e}); please report "
             f"it with the log", err=True)
        return 3


def _os_error(e: OSError) -> str:
    """An error of the file system in one line, naming the path it refused."""
    if isinstance(e, (FileExistsError, NotADirectoryError)) and e.filename and \
            Path(e.filename).is_file():
        return f"{_shown(Path(e.filename))} is a file, where a folder is needed"
    return f"{e.strerror or e}" + (f" ({_shown(Path(e.filename))})" if e.filename else "")


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
