"""The parts of running on Ray that need no cluster: packing folders for the object store,
what a task asks of a node, which models a folder holds, the CLI's refusals, and that a local
export never imports Ray. (The cluster itself: ``test_ray.py``.)"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import run_cli

from deploykit import _fs, cluster, formats, graph
from deploykit.errors import SourceError
from deploykit.exporting import bundle_name, models_in


def test_a_folder_survives_the_object_stores_packing(tmp_path):
    src = tmp_path / "src"
    (src / "variables").mkdir(parents=True)
    (src / "saved_model.pb").write_bytes(b"\x00\x01pb")
    (src / "variables" / "v.data").write_bytes(bytes(range(256)) * 40)
    out = cluster.unpack(cluster.pack(src), tmp_path / "out")
    got = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert got == {p.relative_to(src): p.read_bytes() for p in src.rglob("*") if p.is_file()}


def test_unpacking_refuses_members_outside_the_folder(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../escaped")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(tarfile.TarError):
        cluster.unpack(buf.getvalue(), tmp_path / "out")
    assert not (tmp_path / "escaped").exists()


def test_each_edge_asks_for_one_cpu_and_its_frameworks_memory():
    formats.load()
    asks = {e.name: cluster.resources(e.requires) for e in graph.EDGES.values()}
    assert all(a["num_cpus"] == 1 for a in asks.values())
    assert asks["saved_model_to_tflite"]["memory"] == 2 * cluster.GIB  # TensorFlow
    assert asks["torch_to_executorch"]["memory"] == int(1.5 * cluster.GIB)
    assert asks["onnx_to_onnx_web"]["memory"] == int(cluster.MEMORY_DEFAULT)
    # two TensorFlow conversions do not fit a 3 GiB node at once; two light ones do
    assert 2 * asks["saved_model_to_tfjs"]["memory"] > 3 * cluster.GIB
    assert 2 * asks["onnx_to_onnx_web"]["memory"] <= 3 * cluster.GIB


def _model_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "deploykit-model.json").write_text("{}")
    return path


def test_scratch_folders_of_processes_that_are_gone_are_removed(tmp_path, monkeypatch):
    """What a Ray worker killed with its node, or a replaced replica, left in the temporary
    folder goes when the next one on that host starts; a running process's folder stays."""
    import socket
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    host = socket.gethostname()
    left = tmp_path / f"deploykit-ray-{gone}-{host}-abc"
    alive = tmp_path / f"deploykit-ray-{os.getppid()}-{host}-def"
    other_hosts = [tmp_path / f"deploykit-ray-{gone}-elsewhere-ghi",
                   tmp_path / f"deploykit-ray-{gone}-{host}-2-jkl"]  # the host "HOST-2"
    for folder in (left, alive, *other_hosts):
        (folder / "src").mkdir(parents=True)
    with _fs.scratch("deploykit-ray") as mine:
        assert mine.is_dir() and mine.name.startswith(f"deploykit-ray-{os.getpid()}-{host}-")
        assert not left.exists() and alive.exists() and all(f.exists() for f in other_hosts)
    assert not mine.exists()


def test_a_folder_of_models_is_every_model_in_it(tmp_path):
    a = _model_folder(tmp_path / "fleet" / "digits-sklearn")
    sm = tmp_path / "fleet" / "exported"
    sm.mkdir()
    (sm / "saved_model.pb").write_bytes(b"")
    (tmp_path / "fleet" / "net.onnx").write_bytes(b"")
    (tmp_path / "fleet" / "notes.txt").write_text("not a model")
    (tmp_path / "fleet" / "empty").mkdir()
    single = _model_folder(tmp_path / "other")
    found = models_in([tmp_path / "fleet", single])
    assert found == [a, sm, tmp_path / "fleet" / "net.onnx", single]
    assert [bundle_name(m) for m in found] == ["digits-sklearn", "exported", "net", "other"]
    assert models_in([single]) == [single]


@pytest.mark.parametrize("case", ["missing", "no models", "same name"])
def test_models_that_cannot_be_exported_together_are_refused(tmp_path, case):
    if case == "missing":
        paths, words = [tmp_path / "nowhere"], "model not found"
    elif case == "no models":
        (tmp_path / "junk").mkdir()
        (tmp_path / "junk" / "a.txt").write_text("x")
        paths, words = [tmp_path / "junk"], "neither a model nor a folder of models"
    else:
        (tmp_path / "a").mkdir()
        (tmp_path / "a" / "m.onnx").write_bytes(b"")
        _model_folder(tmp_path / "b" / "m")
        paths, words = [tmp_path / "a" / "m.onnx", tmp_path / "b" / "m"], "bundle 'm'"
    with pytest.raises(SourceError, match=words):
        models_in(paths)


@pytest.mark.parametrize("args, words", [
    (["--replicas", "2"], "add --ray"),
    (["--ray", "--replicas", "3", "--max-replicas", "2"], "below --replicas 3"),
    (["--ray", "--workers", "2"], "on Ray, ask for --replicas"),
])
def test_serve_refuses_replicas_it_cannot_honour(tmp_path, args, words):
    """Before it reads a bundle (there is none here)."""
    r = run_cli("serve", str(tmp_path / "no-bundle"), *args)
    assert r.returncode == 2 and words in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("apps, port, words", [
    ({"deploykit"}, 8000, "already serves a deploykit application, on http://127.0.0.1:8000/"),
    ({"other"}, 9000, "serve there with --host 127.0.0.1 --port 8000"),
    ({"deploykit", "other"}, 9000, "already serves a deploykit application"),
])
def test_serve_refuses_a_cluster_whose_ray_serve_it_would_take_over(apps, port, words):
    """Ray Serve on the cluster proxies 127.0.0.1:8000: it would ignore another port, and a
    second application named deploykit replaces the first."""
    from deploykit.serve.on_ray import shared_serve_refusal

    assert words in shared_serve_refusal("127.0.0.1", 8000, apps, host="127.0.0.1", port=port)


def test_serve_joins_a_ray_serve_on_its_port_that_serves_other_applications():
    from deploykit.serve.on_ray import shared_serve_refusal

    assert shared_serve_refusal("127.0.0.1", 8000, {"other"}, host="127.0.0.1",
                                port=8000) is None


@pytest.mark.parametrize("address, says", [
    ("127.0.0.1:1", "cannot reach the Ray cluster at 127.0.0.1:1"),
    ("127.0.0.1:notaport", "needs a port number"),  # was an internal error (AttributeError)
    ("127.0.0.1:99999", "cannot reach the Ray cluster at 127.0.0.1:99999")])
def test_an_unreachable_cluster_is_one_line_at_once(tmp_path, address, says):
    """Said before the model loads (the file here is no model at all)."""
    (tmp_path / "m.skops").write_bytes(b"")
    r = run_cli("export", str(tmp_path / "m.skops"), "--to", "onnx", "--out",
                str(tmp_path / "b"), "--ray", address, timeout=60)
    assert r.returncode == 2, r.stderr
    assert says in r.stderr and len(r.stderr.strip().splitlines()) == 2, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "b").exists()


def test_an_address_of_something_else_is_refused_at_once(tmp_path):
    """A web server on the port: ray.init retried for minutes, printing nothing."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"127.0.0.1:{server.server_address[1]}"
        (tmp_path / "m.skops").write_bytes(b"")
        r = run_cli("export", str(tmp_path / "m.skops"), "--to", "onnx", "--out",
                    str(tmp_path / "b"), "--ray", address, timeout=120)
    finally:
        server.shutdown()
    assert r.returncode == 2 and f"{address} answers, but not as a Ray cluster" in r.stderr, \
        r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "b").exists()


def test_without_ray_the_export_path_never_imports_it():
    """Every module importing without Ray is test_imports'; here, the calls a local export
    and what-if make to choose where cells run."""
    code = """
import sys
from deploykit import exporting, whatif
assert exporting._cluster(None) is None and exporting._cluster(False) is None
with exporting._local_workers(None):
    pass
assert whatif._cluster(None) is None and exporting._lanes(None) >= 1
assert "ray" not in sys.modules, sorted(m for m in sys.modules if m.startswith("ray"))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
