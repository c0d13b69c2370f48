"""report.html: the what-if matrix (or one bundle) as one self-contained page.

The fast tests render reports made here, with a cell of every verdict; the slow ones open
the main job's own page in headless Chromium, offline, and regenerate it with
``deploykit report``.
"""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import shared
from conftest import run_cli

import deploykit
from deploykit.parity import OutputStats, ParityResult
from deploykit.report import render

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
REASON = "InputError: input 'x': expected shape <1, 4>, got [2, 4] & more"


class Marks(HTMLParser):
    """The page's cells (flow, target) → status, and its plots' marks."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str], str] = {}
        self.points: list[tuple[str, str]] = []
        self.bars: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        key = (a.get("data-flow"), a.get("data-target"))
        if "cell" in classes:
            self.cells[key] = a["data-status"]
        elif "point" in classes:
            self.points.append(key)
        elif "bar" in classes:
            self.bars.append(key)


def marks(page: str) -> Marks:
    m = Marks()
    m.feed(page)
    return m


def parity(target: str, profile: str, passed: bool, err: float, metric: float | None = None,
           **kw) -> dict:
    m = {"name": "accuracy", "artifact": metric, "original": 0.98,
         "drop": round(0.98 - metric, 6)} if metric is not None else None
    return ParityResult(target, profile, passed, [OutputStats("probabilities", err, err, err, 1.0)],
                        metric=m, batches={"1": "ok"}, **kw).to_dict()


def cell(target: str, status: str, **kw) -> dict:
    return {"target": target, "status": status, "route": ["sklearn", "onnx", target],
            "reason": None, "parity": None, "bytes": None, "latency_ms": None,
            "log_tail": None, "seconds": {}, "placement": None, "runtime": None,
            "converter_versions": {}, "verified_with": {}} | kw


def synthetic() -> dict:
    """A what-if report with every verdict, a failed flow and an int8 / fp16 pair."""
    cells = [
        cell("tflite", "pass", parity=parity("tflite", "fp32", True, 1e-6, 0.98), bytes=1000,
             latency_ms=0.5, runtime="tflite", converter_versions={"skl2onnx": "1.19.1"},
             verified_with={"ai-edge-litert": "2.3.0"}),
        cell("tflite-int8", "pass", parity=parity("tflite-int8", "int8", True, 0.1, 0.97),
             bytes=300, latency_ms=0.2, runtime="tflite"),
        cell("tfjs", "fail", parity=parity("tfjs", "fp32", False, 0.5, 0.5), bytes=2000,
             reason=REASON, runtime="tfjs"),
        cell("onnx", "error", reason=REASON, log_tail="converter said <oops>", runtime="onnx"),
        cell("ptl", "vacuous", parity=ParityResult("ptl", "fp32", False,
                                                   vacuous="constant outputs").to_dict(),
             reason="constant outputs", bytes=10),
        cell("executorch", "n/a", route=[], reason="no route from sklearn to executorch"),
    ]
    row = {"flow": "sklearn", "ok": True, "model": "sklearn svm", "metrics": {"accuracy": 0.98},
           "validation": {"accuracy": 0.97}, "train_seconds": 1.5, "bytes": 4096,
           "cells": cells}
    broken = {"flow": "torch", "ok": False, "error": "TrainingError: <nan> loss",
              "log_tail": "epoch 1 nan", "metrics": None, "cells": None}
    return {"schema": "deploykit.whatif/2", "data": "iris", "seed": 0,
            "targets": [c["target"] for c in cells], "rows": [row, broken], "seconds": 3.0,
            "auto": {"chosen": "sklearn", "reason": "good enough", "rule": "a rule"}}


def test_every_cell_appears_with_its_verdict_and_its_evidence():
    result = synthetic()
    page = render(result)
    m = marks(page)
    assert m.cells == {("sklearn", c["target"]): c["status"]
                       for c in result["rows"][0]["cells"]}
    import html
    assert html.escape(REASON) in page and REASON not in page  # whole, and escaped
    assert "converter said &lt;oops&gt;" in page and "skl2onnx 1.19.1" in page
    assert "ai-edge-litert 2.3.0" in page and "sklearn → onnx → tflite" in page
    assert "training failed: TrainingError: &lt;nan&gt; loss" in page and "epoch 1 nan" in page
    assert "Auto path: sklearn" in page and "good enough" in page
    for word in ("PASS", "FAIL", "ERROR", "VACUOUS", "N/A"):  # said in words, not colour only
        assert f"{word}</b>" in page
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")


def test_the_plots_mark_each_measured_artifact_and_each_reduced_one():
    result = synthetic()
    m = marks(render(result))
    measured = [("sklearn", c["target"]) for c in result["rows"][0]["cells"]
                if c["latency_ms"] is not None]
    assert m.points == measured
    assert m.bars == [("sklearn", "tflite-int8")]  # the only reduced artifact with fp32 beside
    page = render(result)
    int8, fp32 = result["rows"][0]["cells"][1], result["rows"][0]["cells"][0]
    share = f"{int8['bytes'] / fp32['bytes']:.0%} of tflite"
    change = int8["parity"]["metric"]["artifact"] - int8["parity"]["metric"]["original"]
    assert f"{share}, accuracy {change:+.4f}" in page


def test_report_cli_rewrites_the_page_from_report_json_alone(tmp_path):
    result = synthetic()
    (tmp_path / "report.json").write_text(json.dumps(result))
    r = run_cli("report", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("report.html") and not r.stderr
    assert (tmp_path / "report.html").read_text() == render(result)
    r = run_cli("report", str(tmp_path), "--out", str(tmp_path / "elsewhere.html"))
    assert r.returncode == 0 and (tmp_path / "elsewhere.html").read_text() == render(result)


def test_report_cli_writes_where_it_is_told(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps(synthetic()))
    r = run_cli("report", str(tmp_path), "--out", str(tmp_path / "new" / "folder" / "r.html"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "new" / "folder" / "r.html").read_text() == render(synthetic())


@pytest.mark.parametrize("name, content, says", [
    (None, None, "holds neither a what-if report.json nor a bundle manifest.json"),
    ("report.json", '{"schema": "other/1"}', "unsupported schema 'other/1'"),
    ("report.json", "{not json", "is not valid JSON"),
    ("report.json", '{"schema": "deploykit.whatif/2", "rows": [{"flow": 1}]}',
     "malformed report data (KeyError"),
    ("manifest.json", '{"schema": "deploykit.bundle/2", "name": "b"}',
     "malformed report data (KeyError: 'artifacts')"),
])
def test_report_cli_refuses_what_it_cannot_read_in_one_line(tmp_path, name, content, says):
    if content is not None:
        (tmp_path / name).write_text(content)
    r = run_cli("report", str(tmp_path))
    assert r.returncode == 2 and says in r.stderr, r.stderr
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    assert not (tmp_path / "report.html").exists()


@pytest.mark.slow
def test_the_main_jobs_report_opens_offline_in_chromium_with_every_cell():
    """`make demo`'s whatif-out/report.html: no console error, no request beyond the file,
    every cell of report.json with its verdict, both plots; screenshots kept."""
    from playwright.sync_api import sync_playwright

    from deploykit.browser import CHROMIUM, CHROMIUM_ARGS

    out = shared.whatif_run()["out"]
    report = json.loads((out / "report.json").read_text())
    want = {(r["flow"], c["target"]): c["status"] for r in report["rows"] for c in r["cells"]}
    url = (out / "report.html").as_uri()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            problems, requests = [], []
            page.on("console", lambda msg: problems.append(msg.text)
                    if msg.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("request", lambda req: requests.append(req.url))
            page.goto(url)
            page.wait_for_load_state("load")
            seen = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll(
                '#matrix .cell')].map(c => [c.dataset.flow + ' ' + c.dataset.target,
                c.dataset.status + ' ' + c.querySelector('summary b').innerText]))""")
            plots = page.evaluate("""() => ({
                points: document.querySelectorAll('#scatter .point').length,
                bars: document.querySelectorAll('#quantized .bar').length,
                shown: [...document.querySelectorAll('svg.plot')].map(
                    s => s.getBoundingClientRect().width > 300)})""")
            first = page.locator("#matrix .cell details").first
            first.locator("summary").click()
            opened = first.inner_text()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
            page.set_viewport_size({"width": 390, "height": 844})  # a phone
            overflow = page.evaluate("document.documentElement.scrollWidth")
            page.screenshot(path=str(ARTIFACTS / "report-phone.png"), full_page=True)
        finally:
            browser.close()
    assert not problems, problems
    assert requests == [url], requests  # self-contained: nothing fetched
    assert len(want) == 55 and seen == {f"{f} {t}": f"{s} {_symbol(s)}" for (f, t), s in
                                        want.items()}
    assert plots["points"] == sum(1 for r in report["rows"] for c in r["cells"]
                                  if c["latency_ms"] is not None)
    unchecked = [f"{r['flow']} {c['target']}: {c['status']}" for r in report["rows"]
                 for c in r["cells"] if c["parity"] is None]
    assert not unchecked, f"main-job cells without a parity result: {unchecked}"
    assert plots["bars"] == sum(1 for r in report["rows"] for c in r["cells"]
                                if c["parity"]["profile"] in ("fp16", "int8"))
    assert plots["shown"] == [True, True]
    first_cell = report["rows"][0]["cells"][0]
    assert " → ".join(first_cell["route"]) in opened
    assert all(v in opened for v in first_cell["converter_versions"].values())
    assert overflow <= 390, overflow  # wide tables scroll inside the page, the page does not
    assert (ARTIFACTS / "report.png").stat().st_size > 50_000


def _symbol(status: str) -> str:
    return {"pass": "✓ PASS", "fail": "✗ FAIL", "error": "⚠ ERROR", "vacuous": "∅ VACUOUS",
            "n/a": "– N/A"}[status]


@pytest.mark.slow
def test_report_cli_gives_the_main_jobs_page_back_from_report_json(tmp_path):
    out = shared.whatif_run()["out"]
    shutil.copy(out / "report.json", tmp_path / "report.json")
    r = run_cli("report", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "report.html").read_text() == (out / "report.html").read_text()


@pytest.mark.slow
def test_the_main_job_says_what_auto_would_choose():
    report = json.loads((shared.whatif_run()["out"] / "report.json").read_text())
    scores = {r["flow"]: r["validation"]["accuracy"] for r in report["rows"]}
    auto = report["auto"]
    # the rule (training.auto): classical when its validation accuracy reaches 0.95, which
    # the SVM does on digits
    assert scores["sklearn"] >= 0.95 and auto["chosen"] == "sklearn"
    assert auto["validation_scores"]["sklearn"] == scores["sklearn"]
    assert f"{scores['sklearn']:.3f}" in auto["reason"]


@pytest.mark.slow
def test_report_cli_on_a_bundle_shows_each_artifact(tmp_path):
    bundle = shared.digits(["torch"])["torch"]["bundle"]
    r = run_cli("report", str(bundle), "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "report.html").read_text()
    b = deploykit.load_bundle(bundle)
    assert marks(page).cells == {("torch", a.target): a.parity.status for a in b.artifacts}
    assert f"deploykit bundle {b.name}" in page
    assert not (bundle / "report.html").exists()  # the bundle itself is left as it was
