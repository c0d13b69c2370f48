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

CITIES, COLORS, SIZES = ["paris", "rome", "oslo"], ["red", "blue", np.nan], ["S", "M", "L"]


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
    rows.loc[rows.index[5:10], "color"] = np.nan  # as pandas marks one (None: see below)
    rows.loc[rows.index[10:12], "city"] = np.nan
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


@pytest.fixture(scope="module")
def workers():
    with deploykit.workers():  # one converter process for the exports below
        yield


def _onnx_agrees(model, sample, rows, out, **export):
    """Export to ONNX with ``sample``; the bundle predicts on ``rows`` (a DataFrame of words)
    what ``model`` does on them with their numbers rounded to float32, as every artifact
    takes them. Returns the export report."""
    report = deploykit.export(model, "onnx", out=out, sample=sample, quiet=True, **export)
    assert report.ok, [(c.target, c.reason) for c in report.cells]
    classify = hasattr(model, "predict_proba")
    rows32 = rows.astype({c: np.float32 for c, t in rows.dtypes.items() if t == np.float64})
    want = model.predict_proba(rows32) if classify else \
        model.predict(rows32).reshape(len(rows), -1)
    with deploykit.load_bundle(out) as b:
        got = b.predict(rows).outputs["probabilities" if classify else "predictions"]
    assert np.abs(got - want).max() < 1e-4
    return report


def _boosted(encoder, df, y):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline

    columns = ColumnTransformer([("words", encoder, ["city"]), ("num", "passthrough", ["age"])])
    return make_pipeline(columns, HistGradientBoostingClassifier(max_iter=20, random_state=0)
                         ).fit(df, y)


@pytest.mark.slow
def test_missing_ages_beside_an_ordinal_city_that_refuses_unknown_words(workers, tmp_path):
    """HistGradientBoosting fills missing ages; the city's OrdinalEncoder refuses a missing
    city, so the probe's rows of missing values leave the city alone (they were NaN there,
    and the export failed before parity)."""
    from sklearn.preprocessing import OrdinalEncoder

    df = _people(300, 5)[["age", "city"]]
    df.loc[df.index[::9], "age"] = np.nan
    model = _boosted(OrdinalEncoder(), df, _target(_people(300, 5)))
    _onnx_agrees(model, df[:200], df[200:], tmp_path / "b")


@pytest.mark.slow
def test_an_ordinal_city_fitted_with_gaps_takes_them_as_its_missing_value(workers, tmp_path):
    """An OrdinalEncoder fitted on NaN among the words gives it ``encoded_missing_value``
    (NaN, or -2 here), not a code of its own: without a sample, the probe draws only real
    codes, and a missing city is what scikit-learn makes of NaN."""
    from sklearn.preprocessing import OrdinalEncoder

    df = _people(300, 6)[["age", "city"]]
    df.loc[df.index[::7], "city"] = np.nan
    y = _target(_people(300, 6)) | df.city.isna().to_numpy()
    for i, enc in enumerate([OrdinalEncoder(), OrdinalEncoder(
            encoded_missing_value=-2, handle_unknown="use_encoded_value", unknown_value=-1)]):
        model = _boosted(enc, df, y)
        _onnx_agrees(model, None, df, tmp_path / f"none{i}")
        _onnx_agrees(model, df[:200], df[200:], tmp_path / f"sample{i}")


@pytest.mark.slow
def test_none_is_a_category_where_the_imputer_fills_nan(workers, tmp_path):
    """scikit-learn's SimpleImputer fills NaN only: a None among the words (an object column,
    as pandas 2 keeps it) reaches the encoder as a category of its own, and a request's null
    is that category. With None the most frequent value, the imputer fills in None."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    df = _people(300, 7)
    for every, name in ((10, "some"), (2, "most")):
        city = np.array(df.city, dtype=object)
        city[::every] = None
        rows = pd.DataFrame({"age": df.age, "city": pd.Series(city, dtype=object)})
        encode = make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder())
        columns = ColumnTransformer([("w", encode, ["city"]), ("n", "passthrough", ["age"])])
        model = make_pipeline(columns, LogisticRegression()).fit(rows, _target(df))
        assert (model[0].named_transformers_["w"][0].statistics_[0] is None) == (name == "most")
        _onnx_agrees(model, rows[:200], rows[200:], tmp_path / name)


def test_an_imputer_adding_indicators_before_words_is_refused_by_name():
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from deploykit.sources import detect

    flagged = make_pipeline(SimpleImputer(strategy="most_frequent", add_indicator=True),
                            OneHotEncoder(handle_unknown="ignore"))
    model, df = _fitted(_columns(color=(flagged, ["color"])))
    with pytest.raises(SourceError, match=r"add_indicator=True\) before an encoder of words"):
        detect(model, sample=df)


@pytest.mark.slow
def test_words_that_are_numbers_come_from_a_csv_as_numbers(workers, tmp_path):
    """Grades "1", "2", "3" are words to the encoder; a .csv file gives them as numbers, and
    so may a request: each is the word it spells, not a code. "NA" stays a word."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from deploykit.sources import read_sample

    df = _people(300, 8)[["age"]]
    rng = np.random.default_rng(8)
    df["grade"], df["country"] = rng.choice(["1", "2", "3"], 300), rng.choice(["NA", "FR"], 300)
    y = ((df.grade == "3") ^ (df.country == "NA")).to_numpy(int)
    columns = ColumnTransformer([("w", OneHotEncoder(), ["grade", "country"]),
                                 ("n", "passthrough", ["age"])])
    model = make_pipeline(columns, LogisticRegression()).fit(df, y)
    df.to_csv(tmp_path / "rows.csv", index=False)
    sample = read_sample(tmp_path / "rows.csv")
    assert sample.country.tolist() == df.country.tolist()  # not missing values
    _onnx_agrees(model, sample[:200], df[200:], tmp_path / "b")
    with deploykit.load_bundle(tmp_path / "b") as b:
        as_read = b.predict(sample[200:]).outputs["probabilities"]  # grades as numbers
        assert np.abs(as_read - b.predict(df[200:]).outputs["probabilities"]).max() == 0
        got = b.predict([[41.0, 3, "NA"]]).outputs["probabilities"]
    want = model.predict_proba(df[:1].assign(age=41.0, grade="3", country="NA"))
    assert np.abs(got - want).max() < 1e-4


@pytest.mark.slow
def test_a_column_of_text_the_model_drops_takes_anything(workers, tmp_path):
    """A passenger's name beside the columns a ColumnTransformer reads: the model drops it,
    so the bundle takes any value there (it was refused as text in a column of numbers)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    df = _people(300, 9)
    df["name"] = [f"passenger {i}" for i in range(300)]
    model = make_pipeline(_columns(), LogisticRegression()).fit(df, _target(df))
    _onnx_agrees(model, df[:200], df[200:], tmp_path / "b")
    with deploykit.load_bundle(tmp_path / "b") as b:
        spec = b.signature.inputs[0]
        assert [w.name for w in spec.words if not w.words] == ["name"]


@pytest.mark.slow
def test_float64_ages_beside_words_get_the_float32_note(workers, tmp_path):
    """The note on rounding a float64 sample to float32 (which every artifact takes) was
    left out when the model had words."""
    from sklearn.preprocessing import OrdinalEncoder

    df = _people(300, 10)[["age", "city"]]
    df["age"] = np.round(df.age, 3) + 1e-9  # thresholds between float32 neighbours
    model = _boosted(OrdinalEncoder(), df, (df.age.to_numpy() * 1000 % 2 > 1).astype(int))
    report = deploykit.export(model, "onnx", out=tmp_path / "b", sample=df, quiet=True)
    notes = report.source["notes"]
    assert any("rounded to float32" in n for n in notes), notes


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:For backward compatibility, 'str' dtypes")  # pandas 3
def test_the_column_idioms_tabular_users_write(workers, tmp_path):
    """make_column_selector for the text columns, an imputer's constant word over several of
    them, handle_unknown="infrequent_if_exist", a nested ColumnTransformer naming its
    columns, a boolean mask and a column of booleans: each exported through skl2onnx
    (which refused a word as fill_value, a mask, and that handle_unknown), and the user's
    .skops file with the selector in it loads (skops called ``object`` untrusted). An
    imputer marking missing words with pd.NA, which skops writes and cannot read back,
    stays out of deploykit's copy."""
    import pandas as pd
    import skops.io as sio
    from sklearn.base import clone
    from sklearn.compose import ColumnTransformer, make_column_selector
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from deploykit.training.sklearn_path import load_estimator

    df = _people(300, 11)
    df["size"] = df["size"].astype("string")  # pandas' nullable text: missing is pd.NA
    df["member"] = np.random.default_rng(11).random(300) > 0.5
    words = make_pipeline(SimpleImputer(strategy="constant", fill_value="missing"),
                          OneHotEncoder(handle_unknown="infrequent_if_exist"))
    size = make_pipeline(SimpleImputer(missing_values=pd.NA, strategy="most_frequent"),
                         OneHotEncoder())
    nested = ColumnTransformer([("age", StandardScaler(), ["age"])])
    columns = ColumnTransformer([("words", words, make_column_selector(dtype_include=object)),
                                 ("size", size, ["size"]),
                                 ("nested", nested, ["age", "income"]),
                                 ("flag", "passthrough", (df.columns == "member").tolist())])
    model = make_pipeline(columns, LogisticRegression()).fit(df, _target(df) ^ df.member)
    assert model[0].transformers_[0][2] == ["city", "color"]  # size is pandas' "string"
    _onnx_agrees(model, df[:200], _unusual(df[200:]), tmp_path / "b")
    plain = clone(model).set_params(columntransformer__size="drop")  # skops cannot read pd.NA
    sio.dump(plain.fit(df, _target(df) ^ df.member), tmp_path / "m.skops")
    assert type(load_estimator(tmp_path / "m.skops")).__name__ == "Pipeline"
    rows = df[200:203]
    with deploykit.load_bundle(tmp_path / "b") as b:
        whole = b.predict(rows).outputs["probabilities"]
        records = rows.to_dict("records")  # the server's {feature: value} rows, in Python
        assert np.array_equal(b.predict(records).outputs["probabilities"], whole)
        assert np.array_equal(b.predict(records[0]).outputs["probabilities"], whole[:1])
