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


def _named_classes(kind: str):
    """A classifier fitted on class values other than 0..n-1, and its data."""
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
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    return model, X.astype(np.float32)


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


def test_an_onnx_file_from_skl2onnx_defaults_serves_its_class_names(workers, tmp_path):
    """skl2onnx's defaults give a ZipMap output (a list of {class: probability} dicts) and
    labels of class names: exporting such a file raised a bare TypeError. It is made plain
    tensors; its labels come from the file."""
    import skl2onnx

    model, X = _named_classes("words")
    onx = skl2onnx.to_onnx(model, X[:1])
    (tmp_path / "m.onnx").write_bytes(onx.SerializeToString())
    r = deploykit.export(tmp_path / "m.onnx", ["onnx", "tflite"], out=tmp_path / "b",
                         sample=X[::2], quiet=True)
    onnx_cell, tflite_cell = r.cells
    assert onnx_cell.status == "pass", onnx_cell.reason
    assert "export the scikit-learn model itself" in tflite_cell.reason
    with deploykit.load_bundle(tmp_path / "b") as bundle:
        got = bundle.predict(X[1::2], target="onnx")
    assert got.labels == list(model.predict(X[1::2]))
    probabilities = next(v for k, v in got.outputs.items() if v.dtype == np.float32)
    np.testing.assert_allclose(probabilities, model.predict_proba(X[1::2]), atol=1e-5, rtol=1e-4)


def test_a_classifier_without_probabilities_and_word_classes_is_refused_by_name(tmp_path):
    from sklearn.svm import LinearSVC

    from deploykit.errors import SourceError

    X, y = _data(regression=False)
    model = LinearSVC().fit(X, np.array(["no", "yes"])[y])
    with pytest.raises(SourceError, match="LinearSVC has no predict_proba and its classes are "
                                          "not numbers .*CalibratedClassifierCV"):
        deploykit.export(model, ["onnx"], out=tmp_path / "b", quiet=True)
