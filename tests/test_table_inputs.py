"""One table row, three readers: the Python side (``Bundle.predict`` and the server, through
``TensorSpec.validate``), the edge package's ``run.py`` and the server page's JavaScript each
turn a row of words, gaps and numbers into what an artifact takes, and must agree: the same
numbers for the same row, a refusal for the same bad cell."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from deploykit.errors import InputError
from deploykit.serve.page import render
from deploykit.signature import TensorSpec
from deploykit.words import GAP_MARKERS, FilledColumn, WordColumn

ROOT = Path(__file__).resolve().parents[1]
SPEC = TensorSpec("x", "float32", (None, 4), columns=("city", "grade", "size", "n"),
                  words=(WordColumn(0, "city", ("", "lima", "oslo"), missing=0.0),
                         WordColumn(1, "grade", ("1", "2.5", "x"))),
                  filled=(FilledColumn(2, "size", 7.5),))
ROWS = [{"city": " oslo", " grade": 2.5, "size": "?", "n": "12"},  # a .csv's spaces, text
        {"city": None, "grade": "1.0", "size": None, "n": 3},  # missing; a word by value
        ["lima", 1, "", 4.5],  # a number in a column of number-words is the word it spells
        ["", "x", 2, 0]]
# Numbers an artifact takes for ROWS, worked out by hand from SPEC.
WANT = [[2, 1, 7.5, 12], [0, 0, 7.5, 3], [1, 0, 7.5, 4.5], [0, 2, 2, 0]]
BAD = [[{"city": "rome", "grade": "x", "size": 1, "n": 1}], [["oslo", "3", 1, 1]],
       [["oslo", "x", "big", 1]], [{"city": "oslo", "grade": "x", "size": 1}],  # no n
       [["oslo", "x", 1, None]], [[7, "x", 1, 1]], [["oslo", "x", 1, "Infinity"]]]


def _run_py():
    spec = importlib.util.spec_from_file_location("edge_run", ROOT / "targets/edge/run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _python(rows):
    return SPEC.validate(rows).tolist()


def _edge(rows):
    run = _run_py()
    return run.model_input(run.request_rows(rows, SPEC.to_dict()),
                           {"signature": {"inputs": [SPEC.to_dict()]}}).tolist()


def _page(rows):
    """The page's ``coded`` (its script, as the server renders it) run by Node on ``rows``."""
    page = render({})
    script = page[page.index("const NUMBER"):page.index("for (const sec of")]
    code = (f"{script}\ntry {{ console.log(JSON.stringify(coded({json.dumps(rows)}, "
            f"{json.dumps(SPEC.to_dict())}))); }} catch (e) {{ console.log(JSON.stringify("
            f"{{error: e.message}})); }}")
    out = subprocess.run([shutil.which("node"), "--input-type=module", "-e", code],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return json.loads(out)


@pytest.mark.parametrize("at", [slice(0, 2), slice(2, 4)], ids=["objects", "lists"])
def test_the_three_readers_take_a_table_row_alike(at):
    for read in (_python, _edge, _page):
        np.testing.assert_allclose(read(ROWS[at]), WANT[at], err_msg=read.__name__)


@pytest.mark.parametrize("rows", BAD)
def test_the_three_readers_refuse_the_same_bad_cell(rows):
    with pytest.raises(InputError):
        _python(rows)
    with pytest.raises(ValueError):
        _edge(rows)
    assert "error" in _page(rows)


def test_a_column_of_true_and_false_words_takes_booleans_as_pandas_reads_them():
    """pandas reads a .csv column of true/false with a gap as booleans and NaN: "takes
    words, got False"."""
    spec = TensorSpec("x", "float32", (None, 1), columns=("flag",),
                      words=(WordColumn(0, "flag", ("", "false", "true"), missing=0.0),))
    rows = [[True], [False], [None]]
    assert spec.validate(rows).tolist() == [[2], [1], [0]]
    run = _run_py()
    assert run.model_input(run.request_rows(rows, spec.to_dict()),
                           {"signature": {"inputs": [spec.to_dict()]}}).tolist() == [[2], [1], [0]]


def test_the_edge_runner_knows_the_gap_markers_deploykit_does():
    assert _run_py().GAPS == set(GAP_MARKERS)
