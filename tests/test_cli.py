from __future__ import annotations

import html
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import shared
from conftest import TESTS, run_cli


@pytest.mark.slow
def test_train_auto_on_iris_explains_its_choice(tmp_path):
    r = run_cli("train", "--flow", "auto", "--data", "iris", "--out", str(tmp_path / "m"),
                "--quiet")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("auto chose sklearn: the classical baseline")
    assert lines[1].strip().startswith("rule: classical if its validation accuracy >=")
    assert (tmp_path / "m" / "deploykit-model.json").is_file()


def test_train_json_output(tmp_path):
    r = run_cli("train", "--flow", "sklearn", "--data", "wine", "--out", str(tmp_path / "m"),
                "--quiet", "--json")
    assert r.returncode == 0, r.stderr
    card = json.loads(r.stdout)
    assert card["dataset"]["name"] == "wine" and card["metrics"]["test"]["accuracy"] > 0.9


@pytest.mark.parametrize("args, words", [
    (["--data", "nope.csv", "--label-column", "y"], "data file not found: nope.csv"),
    (["--data", "mnist"], "unknown dataset 'mnist'"),
    (["--data", "{csv}", "--label-column", "price"], "no column 'price'"),
    (["--data", "{csv}", "--target", "y", "--arch", "cnn"], "is not image data"),
])
def test_bad_input_is_an_error_line_not_a_traceback(tmp_path, args, words):
    csv = tmp_path / "d.csv"
    csv.write_text("a,y\n" + "\n".join(f"{i},{i % 2}" for i in range(30)))
    args = [a.replace("{csv}", str(csv)) for a in args]
    r = run_cli("train", "--flow", "torch", "--out", str(tmp_path / "m"), "--quiet", *args)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and words in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "m").exists()


LONG = "L" * 300  # past a file name's 255 bytes
WRONG_OUTPUT_OR_OPTION = [  # (command, its one-line error): each was a traceback or a crash
    ("train --flow sklearn --data iris --out afile/model", "afile is a file, where a folder"),
    ("what-if --data iris --flows sklearn --to none --out afile", "is not a what-if output"),
    (f"inspect b/{LONG}", "File name too long"),
    (f"verify b/{LONG}", "File name too long"),
    (f"train --flow sklearn --data iris --out m/{LONG}", "File name too long"),
    ("train --flow torch --data iris --epochs 0 --out m", "epochs must be a whole number of 1"),
    ("train --flow tensorflow --data iris --epochs -1 --out m", "epochs must be a whole number"),
    ("train --flow sklearn --data iris --seed -1 --out m", "seed must be a whole number from 0"),
    ("what-if --data iris --flows= --out w", "unknown flow(s) (none given)"),
    ("what-if --data iris --flows sklearn --to none --out mine", "is not a what-if output"),
]


@pytest.mark.parametrize("command, says", WRONG_OUTPUT_OR_OPTION)
def test_a_wrong_output_path_or_option_is_one_line(tmp_path, monkeypatch, command, says):
    """``--out`` under a file made its ``logs/`` folder fail outside the error handling (a
    traceback); a name too long was an internal error; ``--epochs 0`` trained the default,
    a negative one crashed; ``--flows ""`` trained all five; a what-if replaced the
    report.md of a folder that was not its own."""
    from zoo_check import in_process

    monkeypatch.chdir(tmp_path)
    Path("afile").write_text("mine")
    Path("mine").mkdir()
    Path("b").mkdir()  # a long name in a folder that exists: os.stat raised
    Path("mine/report.md").write_text("mine")
    code, text = in_process()(*command.split())
    assert code == 2 and text.startswith("error: ") and says in text, text
    assert "Traceback" not in text and len(text.strip().splitlines()) == 2, text
    assert Path("afile").read_text() == "mine" and Path("mine/report.md").read_text() == "mine"
    assert not list(tmp_path.rglob("deploykit-model.json")) and not Path("w/models").exists()


def test_what_if_takes_its_flows_as_a_comma_separated_string_too(tmp_path):
    """As ``targets`` does; the string was split into letters (unknown flow(s) ['s', ...])."""
    from deploykit.errors import TrainingError
    from deploykit.whatif import what_if

    with pytest.raises(TrainingError, match=r"unknown flow\(s\) \['jax'\]"):
        what_if("iris", tmp_path / "w", flows="sklearn, jax")


def test_a_file_named_logs_beside_the_output_sends_the_log_elsewhere(tmp_path, monkeypatch):
    from zoo_check import in_process

    monkeypatch.chdir(tmp_path)
    Path("logs").write_text("mine")
    code, text = in_process()("train", "--flow", "sklearn", "--data", "iris", "--out", "m")
    assert code == 0 and (tmp_path / "m" / "deploykit-model.json").is_file(), text
    assert Path("logs").read_text() == "mine"


def test_a_sample_for_a_model_folder_is_refused_not_dropped(tmp_path, monkeypatch):
    """A model folder brings its own probe set: ``--sample`` of another shape was ignored
    without a word and the export passed on the folder's rows."""
    import numpy as np
    from zoo_check import in_process

    monkeypatch.chdir(tmp_path)
    run = in_process()
    assert run("train", "--flow", "sklearn", "--data", "iris", "--out", "m")[0] == 0
    np.save("x.npy", np.zeros((5, 7), np.float32))
    code, text = run("export", "m", "--to", "onnx", "--sample", "x.npy", "--out", "b")
    assert code == 2 and "m is a model folder: its probe set" in text, text
    assert not Path("b").exists()
    code, text = run("inspect", "m")  # said "an interrupted export leaves none"
    assert code == 2 and "is a model folder (deploykit train), not a bundle: export it" in text
    for path, words in (("x.npy", "x.npy is a file, not a bundle"), ("nowhere", "not found")):
        code, text = run("inspect", path)  # said the same of a model file, or a typo
        assert code == 2 and words + ": a bundle is the folder deploykit export writes" in text


def test_a_bug_in_deploykit_is_one_line_and_its_traceback_goes_to_the_log(tmp_path,
                                                                          monkeypatch):
    from zoo_check import in_process

    from deploykit import cli

    def bug(args):
        raise ZeroDivisionError("planted bug")
    monkeypatch.setattr(cli, "_cmd_inspect", bug)
    (tmp_path / "bundle").mkdir()  # the log goes beside a folder (for a typo: the temp folder)
    code, text = in_process()("inspect", str(tmp_path / "bundle"))
    lines = text.strip().splitlines()
    assert code == 3 and len(lines) == 2, text
    assert lines[0] == ("error: internal error in deploykit (ZeroDivisionError: planted bug); "
                        "please report it with the log")
    log = Path(lines[1].removeprefix("details: "))
    assert log.parent == tmp_path / "logs" and "Traceback" in log.read_text(), lines[1]
    assert 'raise ZeroDivisionError("planted bug")' in log.read_text()


def test_unknown_path_is_rejected_by_the_parser(tmp_path):
    r = run_cli("train", "--flow", "jax", "--out", str(tmp_path / "m"))
    assert r.returncode == 2 and "invalid choice: 'jax'" in r.stderr


def test_every_command_and_option_says_what_it_is_for():
    """`deploykit COMMAND --help` explains every argument (a bare `bundle` told a user nothing),
    and `package --for` offers exactly the device kinds the package step knows."""
    import argparse

    from deploykit.cli import _parser
    from deploykit.package.device import RUNNERS

    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    helped = {c.dest for c in commands._choices_actions if c.help}
    assert helped == set(commands.choices), set(commands.choices) - helped
    for name, sub in commands.choices.items():
        bare = [a.option_strings or a.dest for a in sub._actions
                if not isinstance(a, argparse._HelpAction) and not a.help]
        assert not bare, (name, bare)
    device = next(a for a in commands.choices["package"]._actions if a.dest == "device")
    assert set(device.choices) == set(RUNNERS)
    quiet = [n for n, sub in commands.choices.items()  # the README promises it for every one
             if not any("--verbose" in a.option_strings for a in sub._actions)]
    assert not quiet, quiet


@pytest.mark.parametrize("option, value, says", [
    ("--port", "70000", "expected a port from 1 to 65535"),  # was an internal error
    ("--port", "-1", "expected a port from 1 to 65535"),
    ("--max-body-mb", "nan", "expected megabytes above 0"),  # was an internal error
    ("--max-body-mb", "-1", "expected megabytes above 0"),  # every request got a 413
    ("--max-batch", "0", "expected a positive whole number"),  # every request got a 413
])
def test_serve_refuses_option_values_it_cannot_serve_with(tmp_path, option, value, says):
    r = run_cli("serve", str(tmp_path), option, value)
    assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_export_takes_each_target_once_and_a_time_limit_above_zero(tmp_path):
    from deploykit.exporting import resolve_targets

    assert resolve_targets("onnx,tflite,onnx") == ["onnx", "tflite"]  # was two onnx rows
    r = run_cli("export", str(tmp_path), "--out", str(tmp_path / "b"), "--timeout", "0")
    assert r.returncode == 2 and "expected seconds above 0" in r.stderr, r.stderr  # all timed out


def test_a_mistyped_bundle_leaves_no_logs_folder_beside_it_and_off_loopback_is_warned(tmp_path):
    """The run log goes beside a bundle folder; for a path that is no folder (a typo, a
    bundle's manifest.json) it went beside that path: /logs for /nonexistent."""
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    for path in (tmp_path / "missing" / "b", bundle / "manifest.json"):
        r = run_cli("serve", str(path), "--host", "0.0.0.0", "--port", "18999")
        assert r.returncode == 2 and "error:" in r.stderr, r.stderr
        assert "warning: on 0.0.0.0 the models answer other machines" in r.stderr, r.stderr
        log = Path(r.stderr.split("details: ")[1].strip())
        assert log.is_file() and tmp_path not in log.parents, log
    assert not (tmp_path / "missing").exists() and not (bundle / "logs").exists()


@pytest.mark.slow  # exports a small model (a few seconds)
def test_output_into_a_pipe_that_closed_is_not_a_traceback(tmp_path):
    """`deploykit inspect B | head -1`: the reader leaves early; rich's table and the run
    log's terminal stream raised BrokenPipeError through every frame to the user."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    import deploykit

    x = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    assert deploykit.export(model, ["onnx"], out=tmp_path / "b", sample=x, quiet=True).ok
    head = run_cli("inspect", str(tmp_path / "b")).stdout.splitlines()[0]  # every tensor
    assert head.endswith("classification of 2 classes (0, 1; scores: probabilities); inputs x "
                         "float32 [batch, 4]; outputs label int64 [batch], probabilities "
                         "float32 [batch, 2]"), head
    for args in (["formats"], ["inspect", str(tmp_path / "b")]):
        p = subprocess.Popen([sys.executable, "-m", "deploykit", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        p.stdout.close()  # before it writes a line: every write meets a closed pipe
        err = p.stderr.read()
        p.wait(timeout=60)
        assert p.returncode in (1, 141) and err == "", (args, p.returncode, err)


def test_datasets_lists_builtins():
    r = run_cli("datasets")
    assert r.returncode == 0
    assert "digits" in r.stdout and "diabetes        regression" in r.stdout


@pytest.mark.slow
def test_the_main_job_passes_every_cell_quietly():
    """`deploykit what-if --data digits`, as `make demo` runs it (the run the other test
    files share): every flow trains, all 55 cells pass (the TF ↔ PyTorch ones through the
    ONNX → Keras bridge), exit 0, no chatter."""
    run = shared.whatif_run()
    assert run["returncode"] == 0, run["stderr"][-3000:]
    report = json.loads((run["out"] / "report.json").read_text())
    flows = [row["flow"] for row in report["rows"]]
    assert flows == ["sklearn", "tensorflow", "torch", "keras-tensorflow", "keras-torch"]
    assert all(row["ok"] and row["metrics"]["accuracy"] > 0.95 for row in report["rows"])
    assert report["targets"] == graph_targets()
    cells = {(row["flow"], c["target"]): c for row in report["rows"] for c in row["cells"]}
    failed = {k: c["reason"] for k, c in cells.items() if c["status"] != "pass"}
    assert not failed and len(cells) == 5 * len(report["targets"]), failed  # 55 of 55
    for (flow, target), across in {("tensorflow", "executorch"): "torch",  # the ONNX bridge
                                   ("torch", "tfjs"): "saved_model"}.items():
        route = cells[(flow, target)]["route"]
        assert route[route.index("onnx") + 1:][:2] == ["keras", across], route
    assert "| keras-torch | PASS" in (run["out"] / "report.md").read_text()
    assert "every flow × every target" in run["stdout"] and "keras-torch" in run["stdout"]
    noisy = shared.CHATTER.findall(run["stdout"] + run["stderr"])
    assert not noisy, noisy[:5]
    for f in flows:
        assert (run["out"] / "bundles" / f"digits-{f}" / "manifest.json").is_file()


def graph_targets() -> list[str]:
    from deploykit import formats, graph

    formats.load()
    return graph.targets()


CRASH_ONNX = """
import sys
import deploykit.building as ex
from deploykit import worker
real = ex.run_edge_in_worker
def crash(e, src, out, ctx, timeout):  # the ONNX converter segfaults in its worker
    if e.dst == "onnx":
        out.mkdir(parents=True)
        return worker.run("_worker_targets:segfault", timeout=60, label=e.name)
    return real(e, src, out, ctx, timeout)
ex.run_edge_in_worker = crash
from deploykit.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_whatif_with_failed_cells_exits_1_and_keeps_whole_reasons(tmp_path):
    out = tmp_path / "w"
    r = subprocess.run([sys.executable, "-c", CRASH_ONNX, "what-if", "--data", "iris",
                        "--flows", "sklearn", "--to", "onnx,onnx-web", "--out", str(out)],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(TESTS)})
    assert r.returncode == 1, r.stderr
    assert ("2 of 2 reachable cells failed: sklearn → onnx (WorkerCrashed), sklearn → onnx-web "
            "(WorkerCrashed)") in r.stderr
    assert "about to crash" not in r.stdout + r.stderr  # the converter's output: in the log
    details = [ln for ln in r.stderr.splitlines() if ln.startswith("details: ")]
    log = Path(details[0].removeprefix("details: "))
    assert "[sklearn_to_onnx] about to crash" in log.read_text()
    report = json.loads((out / "report.json").read_text())
    cells = {c["target"]: c for c in report["rows"][0]["cells"]}
    assert cells["onnx"]["reason"].startswith("WorkerCrashed: sklearn_to_onnx was killed by "
                                              "SIGSEGV")
    assert "about to crash" in cells["onnx"]["log_tail"]
    md = (out / "report.md").read_text()
    assert "### sklearn → onnx-web" in md and cells["onnx"]["reason"] in md
    assert "about to crash" in md
    page = (out / "report.html").read_text()  # the same cells and whole reasons, as a page
    for target in ("onnx", "onnx-web"):
        assert f'data-target="{target}" data-status="error"' in page
    assert html.escape(cells["onnx"]["reason"]) in page
    manifest = json.loads((out / "bundles" / "iris-sklearn" / "manifest.json").read_text())
    assert {f["target"] for f in manifest["failed"]} == {"onnx", "onnx-web"}


def test_a_long_reason_in_a_table_is_cut_at_a_word_with_an_ellipsis():
    """Reasons were cut at a fixed width, mid-word ("failed: Invali"), hiding their point."""
    from deploykit.cli import _clipped

    reason = "batch size 1: RunnerError: onnx: running model.onnx failed: InvalidArgument: rank"
    cut = _clipped(reason, 70)
    assert len(cut) <= 70 and cut.endswith("…") and reason.startswith(cut[:-1])
    assert reason[len(cut) - 1] == " ", cut  # the cut falls between words
    assert _clipped("short reason", 70) == "short reason"
