"""Every estimator the scikit-learn compiler supports (tests/sklearn_cases.py), compiled into
one tensor program with one output per estimator, exported through the Keras edges to
TFLite, TF.js, ExecuTorch and ONNX, and run in each runtime: every output agrees with its
estimator's own ``predict_proba``/``predict`` within the fp32 profile, and every label. One
program for all estimators shares one conversion per runtime."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn_cases import CASES, data, fitted

import deploykit
from deploykit import formats

pytestmark = pytest.mark.slow  # four conversions of a program of every estimator case

TARGETS = ("tflite", "tfjs", "executorch", "onnx")


def _output(name: str) -> str:
    return name.replace("-", "_")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import keras

    from deploykit.sklearn_compile import final
    from deploykit.sklearn_compile.program import Program, as_layer

    p, names = Program(), sorted(CASES)
    p.outputs = [final(fitted(n)[0], p, p.input) for n in names]
    x = keras.Input((data()["X"].shape[1],), name="x")
    ys = as_layer(p, name="estimators")(x)
    model = keras.Model(x, [keras.layers.Identity(name=_output(n))(y)
                            for n, y in zip(names, ys, strict=True)])
    out = tmp_path_factory.mktemp("compiled") / "bundle"
    report = deploykit.export(model, list(TARGETS), out=out, sample=data()["X"][:40],
                              task="regression", quiet=True)  # outputs keep their names
    return report, deploykit.load_bundle(out)


@pytest.mark.parametrize("target", TARGETS)
def test_every_estimator_agrees_with_scikit_learn_in_each_runtime(exported, target):
    report, bundle = exported
    cell = next(c for c in report.cells if c.target == target)
    assert cell.status == "pass", cell.reason
    X = data()["X"]
    got = formats.open_artifact(bundle, target).predict(X)
    for name in sorted(CASES):
        est, _ = fitted(name)
        out = got[_output(name)]
        if hasattr(est, "predict_proba"):
            np.testing.assert_allclose(out, est.predict_proba(X), atol=1e-5, rtol=1e-4,
                                       err_msg=name)
            assert np.array_equal(out.argmax(1), est.predict(X)), name
        else:
            want = est.predict(X).reshape(len(X), -1)
            np.testing.assert_allclose(out, want, atol=1e-5, rtol=1e-4 * np.abs(want).max(),
                                       err_msg=name)


def test_a_compiled_classifier_exports_from_python_with_its_labels(tmp_path):
    """The README's route: ``to_keras`` then ``deploykit.export``; the int64 ``label`` output
    survives every converter and equals scikit-learn's ``predict``."""
    from deploykit.sklearn_compile import to_keras

    est, X = fitted("forest")
    report = deploykit.export(to_keras(est, X.shape[1], classify=True), list(TARGETS),
                              out=tmp_path / "b", sample=X[:60], quiet=True)
    assert report.ok, [(c.target, c.reason) for c in report.cells]
    bundle = deploykit.load_bundle(tmp_path / "b")
    assert [s.name for s in bundle.signature.outputs] == ["label", "probabilities"]
    for target in TARGETS:
        got = formats.open_artifact(bundle, target).predict(X)
        assert np.array_equal(np.ravel(got["label"]), est.predict(X)), target


def test_a_forest_after_a_column_transformer_is_exact_in_litert(tmp_path):
    """LiteRT computes the scaling its own way (dividing by multiplying), which moved a row
    across a split before the ColumnTransformer's scaler was folded into the thresholds."""
    from sklearn_cases import columns_forest

    from deploykit.formats.tflite import TfliteRunner
    from deploykit.sklearn_compile import to_keras

    model, x = columns_forest()
    r = deploykit.export(to_keras(model, x.shape[1], classify=True), ["tflite"],
                         out=tmp_path / "b", sample=x, quiet=True)
    bundle = deploykit.load_bundle(r.bundle)
    art = bundle.artifact("tflite")
    got = TfliteRunner(r.bundle / art.path, bundle.signature).predict({"x": x})
    assert np.array_equal(got["label"].ravel(), model.predict(x))
    np.testing.assert_allclose(got["probabilities"], model.predict_proba(x), atol=1e-6)


def test_an_estimator_the_compiler_lacks_fails_the_keras_routes_by_name(tmp_path):
    """skl2onnx converts PolynomialFeatures, the compiler does not: ONNX passes, and every
    target behind ``sklearn -> keras`` fails with the estimator's name and what is supported."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    d = data()
    model = make_pipeline(StandardScaler(), PolynomialFeatures(2),
                          LogisticRegression(max_iter=2000)).fit(d["X"], d["three"])
    report = deploykit.export(model, ["onnx", "tflite", "executorch"], out=tmp_path / "b",
                              sample=d["X"][:40], quiet=True)
    cells = {c.target: c for c in report.cells}
    assert cells["onnx"].status == "pass", cells["onnx"].reason
    for target in ("tflite", "executorch"):
        why = cells[target].reason
        assert cells[target].status == "error" and "PolynomialFeatures" in why, why
        assert "StandardScaler" in why and "supported" in why, why
