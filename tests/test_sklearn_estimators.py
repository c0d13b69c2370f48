"""The scikit-learn estimators users reach for first, each exported to ONNX and held to the
fp32 profile against scikit-learn's own predictions (computed here, not by deploykit)."""

from __future__ import annotations

import numpy as np
import pytest

import deploykit
from deploykit import formats

pytestmark = pytest.mark.slow  # 18 exports (about a minute)


def _classifiers():
    from sklearn.compose import ColumnTransformer
    from sklearn.decomposition import PCA
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from sklearn.svm import SVC

    onehot = ColumnTransformer([("codes", OneHotEncoder(handle_unknown="ignore"), [0, 1]),
                                ("rest", StandardScaler(), list(range(2, 10)))])
    return {
        "random-forest": RandomForestClassifier(40, max_depth=8, random_state=0),
        "extra-trees": ExtraTreesClassifier(40, max_depth=8, random_state=0),
        "gradient-boosting": GradientBoostingClassifier(n_estimators=40, random_state=0),
        "hist-gradient-boosting": HistGradientBoostingClassifier(max_iter=40, random_state=0),
        "logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        "svc": make_pipeline(StandardScaler(), SVC(probability=True, random_state=0)),
        "knn": make_pipeline(StandardScaler(), KNeighborsClassifier(7)),
        "mlp": make_pipeline(StandardScaler(), MLPClassifier((16,), max_iter=1500,
                                                            random_state=0)),
        "naive-bayes": GaussianNB(),
        "scaler-pca-logistic": make_pipeline(StandardScaler(), PCA(6),
                                             LogisticRegression(max_iter=1000)),
        "onehot-columns-forest": make_pipeline(onehot, RandomForestClassifier(30, random_state=0)),
    }


def _regressors():
    from sklearn.ensemble import (
        GradientBoostingRegressor,
        HistGradientBoostingRegressor,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LinearRegression, Ridge
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    return {
        "linear": LinearRegression(),
        "ridge": make_pipeline(StandardScaler(), Ridge()),
        "random-forest-reg": RandomForestRegressor(40, max_depth=8, random_state=0),
        "gradient-boosting-reg": GradientBoostingRegressor(n_estimators=40, random_state=0),
        "hist-gradient-boosting-reg": HistGradientBoostingRegressor(max_iter=40, random_state=0),
        "svr": make_pipeline(StandardScaler(), SVR(C=50)),
        "knn-reg": make_pipeline(StandardScaler(), KNeighborsRegressor(7)),
    }


def _data(regression: bool):
    from sklearn.datasets import load_breast_cancer, load_diabetes

    X, y = (load_diabetes if regression else load_breast_cancer)(return_X_y=True)
    X = X[:, :10].astype(np.float32)
    if not regression:  # two integer-coded columns for the one-hot encoder
        X[:, :2] = np.floor(X[:, :2] / X[:, :2].max(axis=0) * 4)
    return X, y


@pytest.fixture(scope="module")
def workers():
    with deploykit.workers():  # one converter process for every export in this file
        yield


CASES = [(n, False) for n in sorted(_classifiers())] + [(n, True) for n in sorted(_regressors())]


def test_categorical_hist_boosting_is_refused_by_name(tmp_path):
    """skl2onnx converts it into a model that predicts otherwise (half the probabilities off
    on these rows); the error was skops' "types deploykit does not trust: functools.partial"
    or, past that, a parity failure that did not say why."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from deploykit.errors import SourceError

    X, y = _data(regression=False)
    hgb = HistGradientBoostingClassifier(max_iter=10, categorical_features=[0, 1])
    scaled = ColumnTransformer([("codes", "passthrough", [0, 1]),
                                ("rest", StandardScaler(), list(range(2, 10)))])
    for model in (hgb, make_pipeline(scaled, hgb)):
        with pytest.raises(SourceError, match="HistGradientBoostingClassifier with "
                                              "categorical_features is not supported yet"):
            deploykit.export(model.fit(X, y), ["onnx"], out=tmp_path / "b", quiet=True)
    assert not (tmp_path / "b").exists()


def test_hist_boosting_fitted_on_float64_agrees_in_onnxruntime(workers, tmp_path):
    """HistGradientBoosting compares float64 thresholds, which skl2onnx rounded to the nearest
    float32: rows equal to a threshold rounded up went the other way in onnxruntime (2 % of
    the probabilities off by up to 0.7 on a model fitted on float64 ages). Three classes: a
    tree per class and iteration, as skl2onnx numbers them."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(1)
    X = np.column_stack([rng.normal(40, 10, 600), rng.normal(50, 5, 600)])  # float64
    y = (X[:, 0] > 45).astype(int) + (X[:, 1] > 52)
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X[:400], y[:400])
    rows = X.astype(np.float32)  # every artifact takes float32; scikit-learn upcasts them
    r = deploykit.export(model, ["onnx"], out=tmp_path / "b", sample=rows[:400], quiet=True)
    assert r.ok, r.cells[0].reason
    with deploykit.load_bundle(tmp_path / "b") as b:
        got = b.predict(rows[400:]).outputs["probabilities"]
    assert np.abs(got - model.predict_proba(rows[400:])).max() < 1e-4


@pytest.mark.parametrize("name, regression", CASES, ids=[n for n, _ in CASES])
def test_estimator_to_onnx_matches_scikit_learn(name, regression, workers, tmp_path):
    X, y = _data(regression)
    model = (_regressors() if regression else _classifiers())[name].fit(X, y)
    r = deploykit.export(model, ["onnx"], out=tmp_path / "b", sample=X[:200], quiet=True)
    assert r.ok, r.cells[0].reason
    got = formats.open_artifact(deploykit.load_bundle(tmp_path / "b"), "onnx").predict(X[200:400])
    if regression:
        np.testing.assert_allclose(got["predictions"].reshape(-1), model.predict(X[200:400]),
                                   atol=1e-3, rtol=1e-4)
    else:
        np.testing.assert_array_equal(got["label"], model.predict(X[200:400]))
        np.testing.assert_allclose(got["probabilities"], model.predict_proba(X[200:400]),
                                   atol=1e-5, rtol=1e-4)


def _named_classes(kind: str, classifier=None):
    """A classifier (logistic regression unless given) fitted on class values other than
    0..n-1, and its data."""
    from sklearn.datasets import load_breast_cancer, load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "words":  # two classes: one logit in skl2onnx and in the compiler
        X, y = load_breast_cancer(return_X_y=True)
        y = np.array(["malignant", "benign"])[y]
    else:
        X, y = load_iris(return_X_y=True)
        y = np.array([3, 7, 11])[y]
    model = make_pipeline(StandardScaler(), classifier or LogisticRegression(max_iter=2000))
    return model.fit(X, y), X.astype(np.float32)


@pytest.mark.parametrize("kind", ["words", "numbers"])
def test_a_classifier_of_named_classes_predicts_its_class_names(kind, workers, tmp_path):
    """Fitted on words or on numbers other than 0..n-1 (most users' labels), a classifier
    was refused ("classes must be 0..n-1"). Every artifact's label is now a position in
    ``classes_`` and the manifest's labels are the class values."""
    model, X = _named_classes(kind)
    r = deploykit.export(model, ["onnx", "tflite"], out=tmp_path / "b", sample=X[::2], quiet=True)
    assert r.ok, [c.reason for c in r.cells]
    with deploykit.load_bundle(tmp_path / "b") as bundle:
        assert bundle.labels == [str(c) for c in model.classes_]
        for target in ("onnx", "tflite"):
            got = bundle.predict(X[1::2], target=target)
            assert got.labels == [str(c) for c in model.predict(X[1::2])], target
            np.testing.assert_allclose(got.outputs["probabilities"], model.predict_proba(X[1::2]),
                                       atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("zipmap", [True, "columns"])
def test_an_onnx_file_from_skl2onnx_serves_its_class_names(zipmap, workers, tmp_path):
    """skl2onnx's defaults give a ZipMap output (a list of {class: probability} dicts) and
    labels of class names: exporting such a file raised a bare TypeError. Its
    ``zipmap="columns"`` gives one output per class, read as a regression of n + 1 outputs.
    Both are made plain tensors; the labels come from the file."""
    import skl2onnx

    model, X = _named_classes("words")
    onx = skl2onnx.to_onnx(model, X[:1], options={"zipmap": zipmap})
    (tmp_path / "m.onnx").write_bytes(onx.SerializeToString())
    r = deploykit.export(tmp_path / "m.onnx", ["onnx", "tflite"], out=tmp_path / "b",
                         sample=X[::2], quiet=True)
    onnx_cell, tflite_cell = r.cells
    assert onnx_cell.status == "pass", onnx_cell.reason
    assert "export the scikit-learn model itself" in tflite_cell.reason
    with deploykit.load_bundle(tmp_path / "b") as bundle:
        got = bundle.predict(X[1::2], target="onnx")
    assert got.labels == list(model.predict(X[1::2]))
    probabilities = got.outputs[bundle.signature.scores]
    np.testing.assert_allclose(probabilities, model.predict_proba(X[1::2]), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["words", "numbers"])
def test_an_onnx_file_of_a_classifier_without_probabilities_keeps_its_classes(kind, workers,
                                                                             tmp_path):
    """skl2onnx writes a LinearSVC's or an SGD's margins, not probabilities: such a file was
    read as a regression (the labels rewritten to positions and then dropped, so the bundle
    answered 0..n-1), or refused for "labels given" that the user never gave."""
    import skl2onnx
    from sklearn.linear_model import SGDClassifier
    from sklearn.svm import LinearSVC

    model, X = _named_classes(kind, LinearSVC() if kind == "words" else SGDClassifier(random_state=0))
    onx = skl2onnx.to_onnx(model, X[:1], options={type(model[-1]): {}})
    (tmp_path / "m.onnx").write_bytes(onx.SerializeToString())
    r = deploykit.export(tmp_path / "m.onnx", ["onnx"], out=tmp_path / "b", sample=X[::2],
                         quiet=True)
    assert r.ok, [c.reason for c in r.cells]
    with deploykit.load_bundle(tmp_path / "b") as bundle:
        assert bundle.task == "classification"
        assert bundle.predict(X[1::2]).labels == [str(c) for c in model.predict(X[1::2])]


@pytest.mark.parametrize("kind", ["multi-output-classifier", "forest-on-two-columns"])
def test_a_classifier_of_several_targets_is_refused_by_name(kind, tmp_path):
    """Such a model failed as if the sample were at fault ("the model fails on the sample
    (ValueError: object too deep for desired array)")."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.multioutput import MultiOutputClassifier

    from deploykit.errors import SourceError

    X, y = _data(regression=False)
    model = MultiOutputClassifier(LogisticRegression(max_iter=500)) \
        if kind == "multi-output-classifier" else RandomForestClassifier(n_estimators=3)
    model.fit(X, np.c_[y, X[:, 0] > 0])
    with pytest.raises(SourceError, match=f"{type(model).__name__} classifies several targets at "
                                          f"once; .* export one per target"):
        deploykit.export(model, ["onnx"], out=tmp_path / "b", sample=X, quiet=True)


def test_a_classifier_without_probabilities_and_word_classes_is_refused_by_name(tmp_path):
    from sklearn.svm import LinearSVC

    from deploykit.errors import SourceError

    X, y = _data(regression=False)
    model = LinearSVC().fit(X, np.array(["no", "yes"])[y])
    with pytest.raises(SourceError, match="LinearSVC has no predict_proba and its classes are "
                                          "not numbers .*CalibratedClassifierCV"):
        deploykit.export(model, ["onnx"], out=tmp_path / "b", quiet=True)


def _predict_only():
    from sklearn.ensemble import IsolationForest
    from sklearn.linear_model import RidgeClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC

    return {"linear-svc": make_pipeline(StandardScaler(), LinearSVC()),
            "ridge-classifier": RidgeClassifier(),
            "svc-without-probabilities": make_pipeline(StandardScaler(), SVC()),
            "isolation-forest": IsolationForest(n_estimators=30, random_state=0)}


@pytest.mark.parametrize("name", sorted(_predict_only()))
def test_a_model_without_probabilities_exports_its_predict_to_onnx(name, workers, tmp_path):
    """skl2onnx gives a label and scores; deploykit exports ``predict`` as one column of
    predictions (as its compiler does for TFLite): every ONNX cell failed with "artifact
    gives 2 outputs, the signature expects 1"."""
    X, y = _data(regression=False)
    model = _predict_only()[name].fit(X, y)
    r = deploykit.export(model, ["onnx"], out=tmp_path / "b", sample=X[:200], quiet=True)
    assert r.ok, r.cells[0].reason
    with deploykit.load_bundle(tmp_path / "b") as bundle:
        got = bundle.predict(X[200:400]).outputs["predictions"]
    np.testing.assert_array_equal(got.reshape(-1), model.predict(X[200:400]))


def test_a_model_fitted_on_a_dataframe_takes_its_columns_by_name(workers, tmp_path):
    """A DataFrame's columns in another order were taken by position, without a word (a third
    of the labels right); the model's feature names are now the input's columns: a DataFrame
    is reordered, a missing column named, and the server takes rows of {feature: value}."""
    import warnings

    from jsonschema import Draft202012Validator
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from deploykit.errors import InputError
    from deploykit.serve import create_app

    X, y = load_wine(return_X_y=True, as_frame=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    shuffled = X[X.columns[::-1]]
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        r = deploykit.export(model, ["onnx"], out=tmp_path / "b", sample=shuffled, quiet=True)
    assert r.ok, r.cells[0].reason
    assert not [w for w in said if "feature names" in str(w.message)], said[0].message
    with deploykit.load_bundle(tmp_path / "b") as bundle:
        assert bundle.signature.inputs[0].columns == tuple(X.columns)
        got = bundle.predict(shuffled)
        with pytest.raises(InputError, match=r"missing \['proline'\], unknown none"):
            bundle.predict(X.drop(columns="proline"))
    assert got.labels == [str(c) for c in model.predict(X)]
    np.testing.assert_allclose(got.outputs["probabilities"], model.predict_proba(X), atol=1e-5)
    client = create_app([tmp_path / "b"]).test_client()
    body = {"instances": shuffled.iloc[:5].to_dict(orient="records")}
    answer = client.post("/predict", json=body).get_json()
    assert answer["labels"] == [str(c) for c in model.predict(X.iloc[:5])], answer
    doc = client.get("/openapi.json").get_json()
    assert Draft202012Validator({"$ref": "#/components/schemas/Instances.b", **doc}).is_valid(body)
    body["instances"][0]["colour"] = 1.0
    answer = client.post("/predict", json=body).get_json()
    assert "instance 0: features do not match the model's" in answer["error"], answer
    # a feature may have the input's name: its rows are still {feature: value} rows
    named_x = X.iloc[:, :3].set_axis(["x", "y", "z"], axis=1)
    model = LogisticRegression(max_iter=5000).fit(named_x, y)
    assert deploykit.export(model, ["onnx"], out=tmp_path / "x", sample=named_x, quiet=True).ok
    body = {"instances": named_x.iloc[:5].to_dict(orient="records")}
    answer = create_app([tmp_path / "x"]).test_client().post("/predict", json=body).get_json()
    assert answer["labels"] == [str(c) for c in model.predict(named_x.iloc[:5])], answer


def test_a_model_that_predicts_otherwise_on_float32_rows_says_so(workers, tmp_path):
    """Every artifact takes float32 rows. HistGradientBoosting fitted on float64 data predicts
    otherwise when a row is rounded to float32 (by 14 on diabetes): artifacts matched the
    model on float32 rows and passed, while differing from what the user's model says."""
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge

    X, y = load_diabetes(return_X_y=True)
    notes = {}
    for name, model in (("trees", HistGradientBoostingRegressor(max_iter=30, random_state=0)),
                        ("linear", Ridge())):
        r = deploykit.export(model.fit(X, y), ["onnx"], out=tmp_path / name, sample=X,
                             quiet=True)
        notes[name] = " ".join(r.source["notes"])
    trees = HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(X, y)
    gap = np.abs(trees.predict(X) - trees.predict(X.astype(np.float32))).max()
    assert gap > 1.0, gap
    assert f"rounded to float32, as every artifact takes it: by up to {gap:.3g}" in notes["trees"]
    assert "rounded to float32" not in notes["linear"]  # a few ulps do not count


@pytest.mark.parametrize("case, words", [
    ("pca", "PCA has no predict: deploykit exports models that predict"),
    ("kmeans-float64", "fitted on float64, it cannot predict on float32 rows"),
])
def test_a_model_that_cannot_be_exported_says_why(case, words, tmp_path):
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    from deploykit.errors import SourceError

    X, _ = _data(regression=False)
    model = PCA(2) if case == "pca" else KMeans(3, n_init=2, random_state=0)
    with pytest.raises(SourceError, match=words) as e:
        deploykit.export(model.fit(X.astype(np.float64)), ["onnx"], out=tmp_path / "b",
                         quiet=True)
    assert "ColumnTransformer" not in str(e.value)


def _with_holes(X: np.ndarray) -> np.ndarray:
    holes = X.copy()
    holes[np.random.default_rng(0).random(X.shape) < 0.1] = np.nan
    return holes


@pytest.mark.parametrize("case", ["imputer", "hist-gradient-boosting", "random-forest"])
def test_missing_values_are_filled_as_the_model_fills_them(case, workers, tmp_path):
    """NaN (a missing value) was refused everywhere, even by a model made to take it: a
    SimpleImputer pipeline, or trees, which route NaN down learned branches. Such a model's
    input takes NaN (JSON null on the server), parity is proved on rows with missing values,
    and the compiled artifacts (TFLite) fill and route them as scikit-learn; so does ONNX,
    where skl2onnx left a forest's learned branches out (every NaN went right)."""
    from jsonschema import Draft202012Validator
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from deploykit.serve import create_app

    X, y = _data(regression=False)
    holes = _with_holes(X)
    if case == "imputer":  # the sample has no NaN: deploykit adds rows with missing values
        model, sample = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                                      LogisticRegression(max_iter=2000)), X[:200]
    elif case == "hist-gradient-boosting":
        model, sample = HistGradientBoostingClassifier(max_iter=30, random_state=0), holes[:200]
    else:
        model, sample = RandomForestClassifier(30, random_state=0), holes[:200]
    model.fit(holes, y)
    r = deploykit.export(model, ["onnx", "tflite"], out=tmp_path / "b", sample=sample, quiet=True)
    assert r.ok, [c.reason for c in r.cells]
    with deploykit.load_bundle(tmp_path / "b") as bundle:
        assert bundle.signature.inputs[0].missing
        assert np.isnan(bundle.probe().inputs["x"]).any(axis=1).sum() >= 16
        for target in ("onnx", "tflite"):
            got = bundle.predict(holes[200:400], target=target)
            assert got.labels == [str(c) for c in model.predict(holes[200:400])], target
            np.testing.assert_allclose(got.outputs["probabilities"],
                                       model.predict_proba(holes[200:400]), atol=1e-5)
    rows = [[None if np.isnan(v) else float(v) for v in row] for row in holes[200:210]]
    client = create_app([tmp_path / "b"]).test_client()
    answer = client.post("/predict", json={"instances": rows}).get_json()
    assert answer["labels"] == [str(c) for c in model.predict(holes[200:210])], answer
    doc = client.get("/openapi.json").get_json()
    assert Draft202012Validator({"$ref": "#/components/schemas/Instances.b", **doc}).is_valid(
        {"instances": rows})


def test_a_model_without_missing_values_still_refuses_nan(workers, tmp_path):
    from sklearn.linear_model import LogisticRegression

    from deploykit.errors import InputError
    from deploykit.serve import create_app

    X, y = _data(regression=False)
    model = LogisticRegression(max_iter=3000).fit(X, y)
    assert deploykit.export(model, ["onnx"], out=tmp_path / "b", sample=X[:200], quiet=True).ok
    with deploykit.load_bundle(tmp_path / "b") as bundle:
        assert not bundle.signature.inputs[0].missing
        with pytest.raises(InputError, match="contains NaN or Inf"):
            bundle.predict(_with_holes(X[:5]))
    answer = create_app([tmp_path / "b"]).test_client().post(
        "/predict", json={"instances": [[None] * X.shape[1]]})
    assert answer.status_code == 400 and "null (a missing value) where this model takes none" \
        in answer.get_json()["error"]


@pytest.mark.parametrize("case", ["marker -1", "some columns"])
def test_an_imputer_of_another_marker_or_of_some_columns_keeps_exporting(case, workers,
                                                                          tmp_path):
    """Rows with NaN in every column were added for any imputer, and such a model failed on
    them: an imputer of -1 (which refuses NaN) or of some columns only (the others reach the
    classifier) was refused outright. NaN is now tried column by column: the model takes it
    where it fills it, and nowhere for a marker of -1 (which the compiled artifacts fill)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _data(regression=False)
    rows = X.copy()
    if case == "marker -1":
        imputer, hole = SimpleImputer(missing_values=-1.0), -1.0
    else:
        imputer, hole = ColumnTransformer([("filled", SimpleImputer(), [2, 3]),
                                           ("rest", "passthrough", list(range(4, 10)) + [0, 1])]
                                          ), np.nan
    rows[np.random.default_rng(0).random(X.shape[0]) < 0.2, 2] = hole
    model = make_pipeline(imputer, StandardScaler(), LogisticRegression(max_iter=3000))
    model.fit(rows, y)
    r = deploykit.export(model, ["onnx", "tflite"], out=tmp_path / "b", sample=X[:200],
                         quiet=True)
    assert r.ok, [c.reason for c in r.cells]
    with deploykit.load_bundle(tmp_path / "b") as bundle:
        probe = bundle.probe().inputs["x"]
        if case == "marker -1":
            assert not bundle.signature.inputs[0].missing and not np.isnan(probe).any()
        else:
            assert bundle.signature.inputs[0].missing
            assert set(np.flatnonzero(np.isnan(probe).any(axis=0))) == {2, 3}
        for target in ("onnx", "tflite"):
            got = bundle.predict(rows[200:400], target=target)
            assert got.labels == [str(c) for c in model.predict(rows[200:400])], target


def test_a_column_transformer_that_names_its_columns_exports(workers, tmp_path):
    """The usual DataFrame pipeline selects columns by name: it was refused ("a
    ColumnTransformer must select its columns by position"). deploykit exports a copy that
    selects them by position; the user's model is left as it was."""
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    X, y = load_wine(return_X_y=True, as_frame=True)
    columns = ColumnTransformer([("scaled", StandardScaler(), ["alcohol", "proline"]),
                                 ("ranged", MinMaxScaler(), ["hue"])], remainder="passthrough")
    model = make_pipeline(columns, LogisticRegression(max_iter=5000)).fit(X, y)
    r = deploykit.export(model, ["onnx", "tflite"], out=tmp_path / "b", sample=X, quiet=True)
    assert r.ok, [c.reason for c in r.cells]
    assert model[0].transformers_[0][2] == ["alcohol", "proline"]  # the user's, untouched
    with deploykit.load_bundle(tmp_path / "b") as bundle:
        for target in ("onnx", "tflite"):
            got = bundle.predict(X[X.columns[::-1]], target=target)
            assert got.labels == [str(c) for c in model.predict(X)], target
            np.testing.assert_allclose(got.outputs["probabilities"], model.predict_proba(X),
                                       atol=1e-5)


def test_an_imputer_that_adds_indicators_compiles(workers, tmp_path):
    """``SimpleImputer(add_indicator=True)`` (a 0/1 column per feature that had holes) was
    refused by the compiler; it compiles now (skl2onnx cannot convert it: its ONNX cell is an
    error)."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    X, y = _data(regression=False)
    holes = X.copy()
    holes[np.random.default_rng(0).random(X.shape[0]) < 0.3, 4] = np.nan
    model = make_pipeline(SimpleImputer(add_indicator=True), LogisticRegression(max_iter=5000))
    model.fit(holes, y)
    assert model[0].transform(holes[:5]).shape[1] == X.shape[1] + 1  # one indicator column
    r = deploykit.export(model, ["tflite"], out=tmp_path / "b", sample=holes[:200], quiet=True)
    assert r.ok, r.cells[0].reason
    with deploykit.load_bundle(tmp_path / "b") as bundle:
        got = bundle.predict(holes[200:400])
    assert got.labels == [str(c) for c in model.predict(holes[200:400])]
    np.testing.assert_allclose(got.outputs["probabilities"], model.predict_proba(holes[200:400]),
                               atol=1e-5)
