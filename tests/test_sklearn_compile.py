"""The scikit-learn compiler: every supported estimator, fitted here, compiled to a Keras
tensor program that predicts what the estimator predicts (compared with its own
``predict_proba``/``predict``); tree thresholds exact on the float32 grid; unsupported
estimators named. The export of all of them to the device and browser runtimes is in
``test_sklearn_compile_export.py``."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn_cases import CASES, fitted

from deploykit.sklearn_compile import UnsupportedEstimator, supported, to_keras


@pytest.mark.parametrize("name", sorted(CASES))
def test_compiled_estimator_predicts_what_it_predicts(name):
    est, X = fitted(name)
    classify = hasattr(est, "predict_proba")
    out = to_keras(est, X.shape[1], classify=classify).predict(X, verbose=0)
    if classify:
        label, proba = out
        np.testing.assert_allclose(proba, est.predict_proba(X), atol=1e-5, rtol=1e-4)
        assert np.array_equal(label.ravel(), est.predict(X)), "every label as scikit-learn's"
    else:
        got = np.asarray(out[0] if isinstance(out, list) else out)
        want = est.predict(X).reshape(len(X), -1)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4 * np.abs(want).max())


def test_every_supported_estimator_has_a_case():
    covered = {type(s).__name__ for est, _ in map(fitted, CASES) for s in _parts(est)}
    assert set(supported()) <= covered, sorted(set(supported()) - covered)


def _parts(est):
    """``est`` and every estimator inside it (pipeline steps, column transformers,
    calibrated and one-vs-rest inner estimators)."""
    yield est
    for attr in ("steps", "transformers_"):
        for step in getattr(est, attr, []):
            inner = step[1]
            if not isinstance(inner, str):
                yield from _parts(inner)
    for cal in getattr(est, "calibrated_classifiers_", []):
        yield from _parts(cal.estimator)


def test_thresholds_after_a_scaler_split_the_float32_grid_as_scikit_learn_does():
    """Folding a StandardScaler into tree thresholds: for float32 inputs right around each
    threshold, ``x <= folded`` is exactly ``scaler(x) <= threshold`` as scikit-learn
    computes the scaler (float64 inside, float32 out)."""
    from sklearn.preprocessing import StandardScaler

    from deploykit.sklearn_compile.trees import float32_thresholds

    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 7.0, (500, 4)).astype(np.float32)
    scaler = StandardScaler().fit(X)
    feature = rng.integers(0, 4, 200)
    threshold = rng.normal(0, 1, 200)
    folded = float32_thresholds(feature, threshold, 4, scaler)
    for step in range(-3, 4):  # the folded value and its float32 neighbours
        v = folded.copy()
        for _ in range(abs(step)):
            v = np.nextafter(v, np.float32(np.inf if step > 0 else -np.inf))
        grid = np.zeros((200, 4), np.float32)
        grid[np.arange(200), feature] = v
        scaled = scaler.transform(grid)[np.arange(200), feature].astype(np.float64)
        assert np.array_equal(v <= folded, scaled <= threshold), step


def test_an_unsupported_estimator_is_named_with_what_is_supported():
    from sklearn.ensemble import IsolationForest
    from sklearn.preprocessing import FunctionTransformer, PolynomialFeatures

    X = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    with pytest.raises(UnsupportedEstimator, match="PolynomialFeatures cannot be compiled as a "
                                                   "transformer; supported: .*StandardScaler"):
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline

        to_keras(make_pipeline(PolynomialFeatures(), Ridge()).fit(X, X[:, 0]), 3,
                 classify=False)
    with pytest.raises(UnsupportedEstimator, match="IsolationForest cannot be compiled as a "
                                                   "regressor"):
        to_keras(IsolationForest(random_state=0).fit(X), 3, classify=False)
    from sklearn.svm import SVC

    svc = SVC(probability=True, random_state=0).fit(X, (X[:, 0] > 0).astype(int))
    with pytest.raises(UnsupportedEstimator, match=r"SVC is compiled as a decision function "
                       r"and a predict-only model, not as a classifier: its probability=True "
                       r".*CalibratedClassifierCV"):
        to_keras(svc, 3, classify=True)  # it said "supported: ..., SVC, ..."
    with pytest.raises(UnsupportedEstimator, match="FunctionTransformer: a FunctionTransformer "
                                                   "with a func is not supported"):
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline

        to_keras(make_pipeline(FunctionTransformer(np.log1p), Ridge()).fit(X ** 2, X[:, 0]), 3,
                 classify=False)
