"""Reduced precision that keeps in float32 what it would break (formats/tflite.py, tfjs.py).
int8: the digits SVM, whose full-integer model changes labels, keeps its leading op types
float and then agrees with scikit-learn's own predict_proba in LiteRT; a network whose
full-integer model agrees stays full integer. fp16: a boosted-trees model's thresholds stay
float32 in TFLite and TF.js, so rows stay on their branches."""

from __future__ import annotations

import numpy as np
import pytest

import deploykit


def test_check_rows_are_rows_then_blends_of_two_rows():
    from deploykit.formats.tflite import check_rows

    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    ids = rng.integers(0, 1000, (40, 7))
    rows = check_rows({"x": x, "ids": ids}, n=16)
    assert rows["x"].shape == (32, 5) and rows["ids"].shape == (32, 7)
    assert rows["x"].dtype == np.float32 and rows["ids"].dtype == ids.dtype
    np.testing.assert_array_equal(rows["x"][:16], x[np.linspace(0, 39, 16).astype(int)])
    assert all(_blend_of_two(b, x) for b in rows["x"][16:])
    assert all(any((r == ids).all(1)) for r in rows["ids"])  # token ids are never blended
    assert len(check_rows({"x": x[:5]}, n=16)["x"]) == 10  # fewer rows than asked: all of them


@pytest.fixture(scope="module")
def digits():
    from deploykit.data import load_dataset, split_dataset

    return split_dataset(load_dataset("digits"), seed=0)


@pytest.mark.slow
def test_digits_svm_int8_keeps_its_kernel_float_and_agrees_with_sklearn(digits, tmp_path):
    """The training core's digits model: a calibrated RBF SVM behind a scaler."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from deploykit.formats.tflite import TfliteRunner
    from deploykit.sklearn_compile import to_keras

    svm = make_pipeline(StandardScaler(), CalibratedClassifierCV(SVC(C=10.0), ensemble=False))
    svm.fit(digits.X_train, digits.y_train)
    x = digits.X_test.astype(np.float32)
    r = deploykit.export(to_keras(svm, x.shape[1], classify=True), ["tflite-int8"],
                         out=tmp_path / "b", sample=x, quiet=True)
    bundle = deploykit.load_bundle(r.bundle)
    art = bundle.artifact("tflite-int8")
    assert art.passed, art.parity.failures
    kept = art.converter_options["float32_ops"]
    assert "EXP" in kept and "kept float32" in kept
    got = TfliteRunner(r.bundle / art.path, bundle.signature).predict({"x": x})
    agree = np.mean(got["probabilities"].argmax(1) == svm.predict_proba(x).argmax(1))
    assert agree >= 0.99, agree
    ops = {o["op_name"] for o in _ops(r.bundle / art.path)}
    assert "QUANTIZE" in ops and "EXP" in ops  # some of it is integer, and exp is float


@pytest.mark.slow
def test_a_network_that_agrees_at_int8_stays_full_integer(digits, tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((64,), name="x"), keras.layers.Rescaling(1 / 16),
                            keras.layers.Dense(64, activation="relu"),
                            keras.layers.Dense(10, activation="softmax")])
    net.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    net.fit(digits.X_train, digits.y_train, epochs=30, batch_size=32, verbose=0)
    r = deploykit.export(net, ["tflite-int8"], out=tmp_path / "b",
                         sample=digits.X_test.astype(np.float32), quiet=True)
    art = deploykit.load_bundle(r.bundle).artifact("tflite-int8")
    assert art.passed and "float32_ops" not in art.converter_options
    float_ops = {o["op_name"] for o in _ops(r.bundle / art.path)
                 if o["op_name"] not in ("QUANTIZE", "DEQUANTIZE")
                 and any(t == np.float32 for t in o["dtypes"])}
    assert not float_ops, float_ops


def test_compared_constants_are_thresholds_not_weights():
    import tensorflow as tf

    from deploykit.formats.tfjs import compared_constants

    w = tf.constant(np.ones((3, 2), np.float32), name="weight")
    table = tf.constant(np.arange(4, dtype=np.float32), name="thresholds")
    cut = tf.constant(np.float32(0.5), name="cut")

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    def f(x):
        z = x @ w
        picked = tf.gather(table, tf.constant([0, 2], name="nodes"))
        return tf.cast(z <= picked, tf.float32) + tf.cast(z[:, :1] > cut, tf.float32)

    graph_def = f.get_concrete_function().graph.as_graph_def()
    values = {n.name: tf.make_ndarray(n.attr["value"].tensor) for n in graph_def.node
              if n.op == "Const"}
    kept = [values[name] for name in compared_constants(graph_def)]
    assert sorted(v.size for v in kept) == [1, 4], kept  # the cut and the threshold table
    assert any(np.array_equal(v, np.arange(4)) for v in kept)
    assert not any(v.shape == (3, 2) for v in kept)  # the weight is float16's to store


@pytest.mark.slow
def test_boosted_trees_keep_exact_thresholds_at_fp16(tmp_path):
    from sklearn_cases import breast_cancer_boosting

    from deploykit.formats.tflite import TfliteRunner
    from deploykit.sklearn_compile import to_keras

    model, x = breast_cancer_boosting()
    r = deploykit.export(to_keras(model, x.shape[1], classify=True),
                         ["tflite-fp16", "tfjs-fp16"], out=tmp_path / "b", sample=x, quiet=True)
    bundle = deploykit.load_bundle(r.bundle)
    lite, web = bundle.artifact("tflite-fp16"), bundle.artifact("tfjs-fp16")
    assert lite.passed and web.passed, [c.reason for c in r.cells]
    assert "ai-edge-quantizer" in lite.converter_options["float16_weights"]
    assert "compared constant" in web.converter_options["float32_weights"]
    got = TfliteRunner(r.bundle / lite.path, bundle.signature).predict({"x": x})
    assert np.array_equal(got["label"].ravel(), model.predict(x))
    np.testing.assert_allclose(got["probabilities"], model.predict_proba(x), atol=1e-2)


def _blend_of_two(b, x) -> bool:
    """``b == t·x[i] + (1 - t)·x[j]`` for some rows ``i``, ``j`` and ``t`` in [0.3, 0.7] (or
    ``b`` is a row: a pair drawn twice)."""
    if (np.abs(x - b).max(1) < 1e-6).any():
        return True
    for i in range(len(x)):
        d = np.delete(x[i] - x, i, axis=0)
        rest = np.delete(x, i, axis=0)  # row j: b - x[j] must be t·(x[i] - x[j]) in every column
        t = (b - rest) / np.where(np.abs(d) > 1e-3, d, np.nan)
        ok = (np.nanmax(t, 1) - np.nanmin(t, 1) < 1e-4) & (np.nanmin(t, 1) >= 0.3 - 1e-4) \
            & (np.nanmax(t, 1) <= 0.7 + 1e-4)
        if ok.any():
            return True
    return False


def _ops(path):
    """Each op of a .tflite with its op name and the dtypes of its output tensors."""
    from deploykit.formats.tflite import _interpreter_class

    it = _interpreter_class()(model_path=str(path))
    tensors = {t["index"]: t["dtype"] for t in it.get_tensor_details()}
    return [{"op_name": o["op_name"], "dtypes": [tensors.get(i) for i in o["outputs"]]}
            for o in it._get_ops_details()]
