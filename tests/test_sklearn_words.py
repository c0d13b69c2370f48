"""A scikit-learn model fitted on a DataFrame with columns of words (a city, a colour, a size),
as tabular users fit them: every artifact takes each word's code, and ``Bundle.predict`` and
the server take the words (the zoo's ``sklearn-words-forest`` goes through the CLI, with a
.csv sample, to every target). Every expected value is the user's own model, fed the
words, computed here."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pytest

import deploykit
from deploykit.errors import InputError, SourceError

CITIES, COLORS, SIZES = ["paris", "rome", "oslo"], ["red", "blue", None], ["S", "M", "L"]


def _people(n: int, seed: int):
    import pandas as pd

    rng = np.random.default_rng(seed)
    return pd.DataFrame({"age": rng.normal(40, 10, n), "city": rng.choice(CITIES, n),
                         "color": rng.choice(np.array(COLORS, dtype=object), n),
                         "size": rng.choice(SIZES, n), "income": rng.normal(50, 5, n)})


def _target(df) -> np.ndarray:
    return (((df.city == "rome") ^ (df.age > 40)) | (df["size"] == "L")).to_numpy(int)


def _columns(**encoders):
    """Numbers scaled, the city one-hot (unknown cities ignored), the colour imputed and
    one-hot, the size ordinal; ``encoders`` replaces a branch."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    branches = {"num": (StandardScaler(), ["age", "income"]),
                "city": (OneHotEncoder(handle_unknown="ignore"), ["city"]),
                "color": (make_pipeline(SimpleImputer(strategy="most_frequent"),
                                        OneHotEncoder()), ["color"]),
                "size": (OrdinalEncoder(categories=[SIZES]), ["size"]), **encoders}
    return ColumnTransformer([(k, t, c) for k, (t, c) in branches.items()])


@pytest.fixture(scope="module")
def people():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    df = _people(400, 0)
    return make_pipeline(_columns(), LogisticRegression()).fit(df[:300], _target(df[:300])), df


@pytest.fixture(scope="module")
def bundle(people, tmp_path_factory):
    model, df = people
    out = tmp_path_factory.mktemp("words") / "people"
    report = deploykit.export(model, "onnx", out=out, sample=df[:200], quiet=True)
    assert report.ok, [(c.target, c.reason) for c in report.cells]
    return out


def _unusual(df):
    """Rows with a city the model never saw, a missing colour and a missing city."""
    rows = df.copy()
    rows.loc[rows.index[:5], "city"] = "lima"
    rows.loc[rows.index[5:10], "color"] = None
    rows.loc[rows.index[10:12], "city"] = None
    return rows


@pytest.mark.slow
def test_every_artifact_takes_words_and_predicts_what_the_model_does(people, bundle):
    model, df = people
    rows = _unusual(df[300:])
    want = model.predict_proba(rows)
    with deploykit.load_bundle(bundle) as b:
        assert b.targets == ["onnx"]  # the zoo's words forest reaches all 11 (zoo_check.WORDS)
        for target in b.targets:
            got = b.predict(rows, target=target)
            assert np.abs(got.outputs["probabilities"] - want).max() < 1e-4, target
            assert got.labels == [str(c) for c in model.predict(rows)], target
        codes = b.signature.inputs[0].coded(rows)  # the same rows as numbers
        assert np.allclose(b.predict(codes).outputs["probabilities"], want, atol=1e-4)
        assert b.verify().ok


@pytest.mark.slow
def test_a_word_or_a_number_the_model_does_not_take_is_named(people, bundle):
    _, df = people
    with deploykit.load_bundle(bundle) as b:
        rows = df[300:303].copy()
        rows["size"] = "XL"  # its encoder refuses unknown sizes, as scikit-learn does
        with pytest.raises(InputError, match=r"column 'size': unknown word 'XL'.*S, M, L"):
            b.predict(rows)
        rows = df[300:303].copy()
        rows["age"] = "old"
        with pytest.raises(InputError, match=r"column 'age' takes numbers, got 'old'"):
            b.predict(rows)
        codes = b.signature.inputs[0].coded(df[300:303])
        codes[0, 3] = 7  # size has codes 0..2
        with pytest.raises(InputError, match=r"column 'size' takes words .* codes 0 to 2"):
            b.predict(codes)


@pytest.mark.slow
def test_the_server_takes_rows_of_words_and_documents_them(people, bundle):
    from deploykit.serve import create_app

    model, df = people
    rows = _unusual(df[300:320])
    app = create_app([bundle])
    client = app.test_client()
    objects = [{k: (None if isinstance(v, float) and np.isnan(v) else v)
                for k, v in r.items()} for r in rows.to_dict("records")]
    r = client.post("/predict", json={"instances": objects})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["labels"] == [str(c) for c in model.predict(rows)]
    bad = [dict(objects[0], size="XL")]
    r = client.post("/predict", json={"instances": bad})
    assert r.status_code == 400 and "unknown word 'XL'" in r.get_json()["error"]
    doc = client.get("/openapi.json").get_json()
    row = doc["components"]["schemas"]["Instances.people"]["properties"]["instances"]["anyOf"][0]
    size = row["items"]["prefixItems"][3]["anyOf"]
    assert {"type": "string", "enum": SIZES} in size  # no other word is taken
    assert {"type": "string"} in row["items"]["prefixItems"][1]["anyOf"]  # any city
    page = client.get("/").get_data(as_text=True)  # its example request shows the words
    example = json.loads(html.unescape(re.search(r"<textarea[^>]*>(.*?)</textarea>", page,
                                                 re.S).group(1)))
    assert example["instances"][0]["city"] in CITIES
    assert client.post("/predict", json=example).status_code == 200


@pytest.mark.slow
def test_ordinal_words_with_missing_values_reach_a_boosted_model(tmp_path):
    """An OrdinalEncoder fitted on words with None among them gives missing values NaN, which
    HistGradientBoosting routes down learned branches: the artifact takes None as NaN."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OrdinalEncoder

    df = _people(400, 1)
    y = ((df.color == "red") | df.color.isna() & (df.age > 45)).to_numpy(int)
    enc = ColumnTransformer([("words", OrdinalEncoder(handle_unknown="use_encoded_value",
                                                      unknown_value=-1), ["city", "color"]),
                             ("num", "passthrough", ["age"])])
    model = make_pipeline(enc, HistGradientBoostingClassifier(max_iter=30, random_state=0))
    model.fit(df[["age", "city", "color"]][:300], y[:300])
    rows = _unusual(df[["age", "city", "color"]])
    report = deploykit.export(model, "onnx", out=tmp_path / "b", sample=rows[:200], quiet=True)
    assert report.ok, [(c.target, c.reason) for c in report.cells]
    with deploykit.load_bundle(tmp_path / "b") as b:
        got = b.predict(rows[200:]).outputs["probabilities"]
    assert np.abs(got - model.predict_proba(rows[200:])).max() < 1e-4


def _fitted(columns):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    df = _people(120, 2)
    return make_pipeline(columns, LogisticRegression()).fit(df, _target(df)), df


def test_words_deploykit_cannot_turn_into_codes_are_refused_by_name():
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

    from deploykit.sources import detect

    model, df = _fitted(_columns(city=(OneHotEncoder(min_frequency=5), ["city"])))
    with pytest.raises(SourceError, match="min_frequency or max_categories"):
        detect(model, sample=df)
    late = make_pipeline(SimpleImputer(strategy="constant", fill_value="none"),
                         FunctionTransformer(), OneHotEncoder())
    model, df = _fitted(_columns(color=(late, ["color"])))
    with pytest.raises(SourceError, match="comes after FunctionTransformer"):
        detect(model, sample=df)
    numbers = _people(120, 3)
    numbers["city"] = numbers.city.map({c: i for i, c in enumerate(CITIES)})
    model, _ = _fitted(_columns(city=(OneHotEncoder(), ["city"])).set_params(
        color="drop", size="drop"))
    model.fit(numbers, _target(_people(120, 3)))
    with pytest.raises(SourceError, match="column 'city' of the sample holds text"):
        detect(model, sample=_people(40, 4))


def test_check_rows_keep_a_column_of_words_whole():
    """The int8 and fp16 edges check blends of two rows: a word's code is never blended."""
    from deploykit.formats.tflite import check_rows

    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(size=50), rng.integers(0, 3, 50)]).astype(np.float32)
    out = check_rows({"x": x}, n=20, words={"x": [1]})["x"]
    assert set(np.unique(out[:, 1])) <= {0.0, 1.0, 2.0}
    assert not np.isin(out[20:, 0], x[:, 0]).all()  # the numbers are blended
