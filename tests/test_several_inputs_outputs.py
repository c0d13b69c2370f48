"""Models with several named inputs and several outputs: the signature keeps the model's
input names and order and the outputs their names (a classifier's ``scores`` names the output
of class scores); the reference is the model's own prediction. TensorFlow-core models with
several inputs are refused by name."""

from __future__ import annotations

import numpy as np
import pytest


def _two_by_two():
    import keras

    keras.utils.set_random_seed(0)
    feats, extra = keras.Input((5,), name="feats"), keras.Input((3,), name="extra")
    h = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([feats, extra]))
    return keras.Model([feats, extra], [keras.layers.Dense(3, activation="softmax",
                                                           name="cls")(h),
                                        keras.layers.Dense(2, name="box")(h)])


def _sample(rows: int = 24) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"feats": rng.normal(size=(rows, 5)).astype(np.float32),
            "extra": rng.normal(size=(rows, 3)).astype(np.float32)}


def test_several_inputs_and_outputs_keep_their_names_and_the_models_predictions():
    from deploykit.sources import detect

    model, sample = _two_by_two(), _sample()
    src = detect(model, sample=sample)
    assert [(s.name, s.shape) for s in src.signature.inputs] == [("feats", (None, 5)),
                                                                  ("extra", (None, 3))]
    assert [s.name for s in src.signature.outputs] == ["cls", "box"]  # the model's own
    assert src.signature.scores == "cls"
    assert src.task == "classification" and src.labels == ["0", "1", "2"]
    probs, box = model.predict([sample["feats"], sample["extra"]], verbose=0)
    np.testing.assert_allclose(src.reference["cls"], probs, rtol=1e-6)
    np.testing.assert_allclose(src.reference["box"], box, rtol=1e-6)


def test_a_bare_array_for_a_two_input_keras_model_is_refused_by_name():
    from deploykit.errors import SourceError
    from deploykit.sources import detect

    with pytest.raises(SourceError, match=r"takes 2 inputs \(feats, extra\)"):
        detect(_two_by_two(), sample=np.zeros((24, 5), np.float32))


def _tf_module(n_inputs: int = 1):
    import tensorflow as tf

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.random.stateless_normal((4, 3), seed=(1, 2)))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)] * n_inputs)
        def serve(self, x, *more):
            h = x @ self.w
            return {"scores": tf.nn.softmax(h), "raw": h}

    return Net()


def test_a_tf_function_with_two_outputs_keeps_both():
    import tensorflow as tf

    from deploykit.sources import detect

    x = np.random.default_rng(0).normal(size=(24, 4)).astype(np.float32)
    net = _tf_module()
    src = detect(net, sample=x)
    want = net.serve(tf.constant(x))
    assert src.task == "classification"  # an output sums to one per row
    assert [s.name for s in src.signature.outputs] == ["raw", "scores"]  # sorted, as TF
    assert src.signature.scores == "scores"
    np.testing.assert_allclose(src.reference["scores"], want["scores"].numpy(), rtol=1e-6)
    np.testing.assert_allclose(src.reference["raw"], want["raw"].numpy(), rtol=1e-6)


def test_a_tf_function_with_two_inputs_is_refused_by_name():
    from deploykit.errors import SourceError
    from deploykit.sources import detect

    with pytest.raises(SourceError, match=r"tf.function takes 2 inputs .*Keras and PyTorch"):
        detect(_tf_module(2), sample=np.zeros((24, 4), np.float32))
