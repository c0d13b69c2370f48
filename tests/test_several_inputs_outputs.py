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


def _heads(kind: str):
    """A Keras model of two heads where the class scores are not the first output that looks
    like probabilities: logits after an embedding, a sigmoid after a regression head (moved
    below zero), or the main softmax after an auxiliary one."""
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((6,), name="x")
    h = keras.layers.Dense(16, activation="relu")(x)
    first, second = {
        "logits": (keras.layers.Dense(2, name="emb")(h), keras.layers.Dense(3, name="cls")(h)),
        "sigmoid": (keras.layers.Rescaling(1.0, offset=-3.0)(keras.layers.Dense(1)(h)),
                    keras.layers.Dense(1, activation="sigmoid", name="cls")(h)),
        "auxiliary": (keras.layers.Dense(2, activation="softmax", name="aux")(h),
                      keras.layers.Dense(3, activation="softmax", name="cls")(h)),
    }[kind]
    return keras.Model(x, [first, second])


@pytest.mark.parametrize("kind, labels", [("logits", ["a", "b", "c"]), ("sigmoid", ["no", "yes"]),
                                          ("auxiliary", ["a", "b", "c"])])
def test_labels_find_the_scores_they_name(kind, labels):
    """Given labels, the scores are the output as wide as they are (a sigmoid column for two):
    logits after an embedding were refused ("3 labels given for a classifier of 2 classes"), a
    sigmoid after a regression head and a softmax after an auxiliary one gave every label
    from the wrong output."""
    from deploykit.sources import detect

    x = np.random.default_rng(0).normal(size=(24, 6)).astype(np.float32)
    src = detect(_heads(kind), sample=x, labels=labels)
    assert (src.task, src.signature.scores, src.labels) == ("classification", "cls", labels)


def test_a_float_output_named_label_is_not_taken_for_class_indices():
    """A model's float output named ``label`` (a score, a regression) was read as class
    indices: Bundle.predict and the server failed on it (a TypeError, a 500)."""
    from deploykit.parity import predicted_labels

    probs = np.array([[0.2, 0.8], [0.9, 0.1]], np.float32)
    got = predicted_labels({"probs": probs, "label": np.array([[0.7], [0.3]], np.float32)},
                           "probs")
    assert got.tolist() == [1, 0]
    assert predicted_labels({"label": np.array([1, 0])}, None).tolist() == [1, 0]
