"""Training on a user's table whose columns hold words (a CSV's text columns, with gaps): a
classical and a deep flow train on each word's code, their bundles pass parity, and each
bundle takes rows of words as its trained model takes the codes the test works out itself."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

import deploykit
from deploykit.errors import InputError
from deploykit.training import load_model

pytestmark = pytest.mark.slow  # trains two flows and exports each to two targets

CITIES = ("rome", "oslo", "lima", "")  # "": an empty cell
KINDS = ("flat", "house")


def _rows() -> list[dict]:
    """A table where the label depends on a city, a kind and a number."""
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(240):
        city, kind = CITIES[rng.integers(4)], KINDS[rng.integers(2)]
        size = round(float(rng.uniform(20, 200)), 3)  # no two rows alike
        score = (city == "rome") - (city == "lima") + (kind == "house") + (size - 110) / 60
        age = "" if rng.random() < 0.2 else str(int(rng.integers(1, 90)))  # with gaps
        rows.append({"city": city, "size": size, "kind": kind, "age": age,
                     "y": "high" if score + rng.normal(0, 0.3) > 0 else "low"})
    return rows


# The median of the table's ages, which fills its gaps.
AGE = float(np.median([int(r["age"]) for r in _rows() if r["age"]]))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from deploykit.whatif import what_if

    folder = tmp_path_factory.mktemp("table")
    (folder / "homes.csv").write_text("city,size,kind,age,y\n" + "\n".join(
        f"{r['city']},{r['size']},{r['kind']},{r['age']},{r['y']}" for r in _rows()) + "\n")
    report = what_if(str(folder / "homes.csv"), folder / "run", flows="sklearn,torch",
                     targets=["onnx", "tflite"], label_column="y", quiet=True)
    return folder / "run", report


def _codes(rows: list[dict]) -> np.ndarray:
    """The rows as the models take them: a word's position among its column's sorted words,
    a missing age the median of the others."""
    cities, kinds = sorted(CITIES), sorted(KINDS)
    return np.array([[cities.index(r["city"] or ""), r["size"], kinds.index(r["kind"]),
                      AGE if r["age"] is None else r["age"]] for r in rows], dtype=np.float32)


def test_each_flow_and_target_passes_on_a_table_of_words(run):
    out, report = run
    cells = [(row["flow"], c["target"], c["status"], c["reason"])
             for row in report["rows"] for c in row["cells"]]
    assert len(cells) == 4 and all(s == "pass" for _, _, s, _ in cells), cells
    card = json.loads((out / "models" / "homes-sklearn" / "deploykit-model.json").read_text())
    spec = card["signature"]["inputs"][0]
    assert spec["columns"] == ["city", "size", "kind", "age"]
    assert {w["name"]: w["words"] for w in spec["words"]} == {"city": sorted(CITIES),
                                                             "kind": sorted(KINDS)}
    assert spec["filled"] == [{"column": 3, "name": "age", "value": AGE}]
    shown = run_cli("inspect", str(out / "bundles" / "homes-torch"))
    assert shown.returncode == 0, shown.stderr
    assert f"(gaps filled: age {AGE:g})" in shown.stdout.splitlines()[0], shown.stdout


def test_the_classical_flow_one_hot_encodes_each_word(run):
    out, _ = run
    from deploykit.training import sklearn_path

    pipeline = sklearn_path.load(out / "models" / "homes-sklearn")
    codes = _codes([{"city": c, "size": 50.0, "kind": k, "age": 9} for c in CITIES
                    for k in KINDS])
    encoded = pipeline[0].transform(codes)
    assert encoded.shape == (8, len(CITIES) + len(KINDS) + 2)  # a column per word, size, age
    assert np.isin(encoded[:, :6], (0.0, 1.0)).all() and (encoded[:, :6].sum(1) == 2).all()


@pytest.mark.parametrize("flow", ["sklearn", "torch"])
def test_a_bundle_takes_rows_of_words_as_its_model_takes_codes(run, flow):
    out, _ = run
    rows = [{"city": "oslo", "size": 80.0, "kind": "flat", "age": 30},
            {"city": None, "size": 150.5, "kind": "house", "age": None},  # missing: the
            {"city": "", "size": 35.0, "kind": "house", "age": 71},  # empty cell's word
            {"city": "rome", "size": 199.0, "kind": "flat", "age": None}]  # and the median
    want = load_model(out / "models" / f"homes-{flow}").predict(_codes(rows))["probabilities"]
    from deploykit.training import predict_in_worker

    in_worker = predict_in_worker(out / "models" / f"homes-{flow}", rows)  # it took numbers
    np.testing.assert_allclose(in_worker["probabilities"], want, atol=1e-6)
    bundle = deploykit.load_bundle(out / "bundles" / f"homes-{flow}")
    for target in ("onnx", "tflite"):
        got = bundle.predict(rows, target=target).outputs["probabilities"]
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=target)
    import pandas as pd

    one = bundle.predict(pd.Series(rows[1])).outputs["probabilities"]  # df.iloc[i]: one row
    np.testing.assert_allclose(one, want[1:2], atol=1e-5)
    with pytest.raises(InputError, match="column 'city': unknown word 'paris'"):
        bundle.predict([{**rows[0], "city": "paris"}])
    with pytest.raises(InputError, match=r"contains NaN or Inf \(column 'size', row 1\)"):
        bundle.predict([rows[0], {**rows[0], "size": None}])
    spaced = pd.DataFrame([{" " + k: f" {v}" if isinstance(v, str) else v  # "city, size"
                            for k, v in r.items()} for r in rows[:1]])
    got = bundle.predict(spaced).outputs["probabilities"]
    np.testing.assert_allclose(got, want[:1], atol=1e-5)  # a .csv's spaces after commas


def test_int8_calibrates_on_the_tables_training_rows_unless_the_table_changed(run, tmp_path):
    """A CSV's model folder was calibrated on its probe (test) rows: the CSV could not be read
    again without its label column, which the card now keeps."""
    import shutil

    from deploykit.sources import detect

    out, _ = run
    folder = out / "models" / "homes-sklearn"
    card = json.loads((folder / "deploykit-model.json").read_text())
    source = detect(folder)
    probe = source.probe_inputs["x"]
    assert len(source.calibration) == card["split"]["n_train"] != len(probe)
    assert not {r.tobytes() for r in source.calibration} & {r.tobytes() for r in probe[:48]}
    table = out.parent / "homes.csv"
    saved = tmp_path / "homes.csv"
    shutil.copy(table, saved)
    try:  # a new word in the table: its codes no longer mean what the model learnt
        table.write_text(table.read_text().replace("\nlima,", "\nquito,", 1))
        assert np.array_equal(detect(folder).calibration, probe)
    finally:
        shutil.copy(saved, table)


def test_an_edge_package_serves_the_tables_rows_as_its_bundle_does(run, tmp_path):
    """``run.py --serve`` on the device fills a gap and codes the words as the bundle does."""
    import shared

    from deploykit.package import package

    out, _ = run
    bundle = deploykit.load_bundle(out / "bundles" / "homes-sklearn")
    rows = [{"city": "lima", "size": 120.0, "kind": "house", "age": None},
            {"city": None, "size": 60.5, "kind": "flat", "age": 44}]
    want = bundle.predict(rows, target="onnx").outputs["probabilities"]
    post = shared.edge_run(shared.venv("numpy", "onnxruntime"),
                           package(out / "bundles" / "homes-sklearn", "edge", tmp_path / "pkg"))
    try:
        status, body = post({"instances": rows})
    finally:
        post.stop()
    assert status == 200, body
    np.testing.assert_allclose(body["predictions"], want, atol=1e-5)
    assert f"`age` (column 3): {AGE:g}" in (tmp_path / "pkg" / "README.md").read_text()
