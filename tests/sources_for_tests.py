"""Small models built in the tests themselves (random weights), one per source kind.

They are not trained by deploykit: exporting them proves the API takes a user's own model.
"""

from __future__ import annotations

import numpy as np

N_FEATURES, N_CLASSES = 12, 3


def sample(n: int = 40) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, N_FEATURES)).astype(np.float32)


def torch_model():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(N_FEATURES, 16), torch.nn.ReLU(),
                               torch.nn.Linear(16, N_CLASSES), torch.nn.Softmax(dim=1)).eval()


def keras_model():
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((N_FEATURES,), name="x")
    z = keras.layers.Dense(16, activation="relu")(x)
    out = keras.layers.Dense(N_CLASSES, activation="softmax", name="probabilities")(z)
    return keras.Model(x, out)


def tf_module():
    import tensorflow as tf

    class Tiny(tf.Module):
        def __init__(self):
            super().__init__()
            rng = np.random.default_rng(0)
            self.w = tf.Variable(rng.normal(size=(N_FEATURES, N_CLASSES)).astype(np.float32))
            self.b = tf.Variable(np.zeros(N_CLASSES, np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, N_FEATURES], tf.float32)])
        def serve(self, x):
            return {"probabilities": tf.nn.softmax(x @ self.w + self.b)}

    return Tiny()


def sklearn_model():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    X = sample(120)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)
    return Pipeline([("scale", StandardScaler()), ("model", LogisticRegression())]).fit(X, y)


BUILDERS = {"torch": torch_model, "keras": keras_model, "saved_model": tf_module,
            "sklearn": sklearn_model}


def log_features_module():
    """A digits classifier on log1p(pixel) features, as a tf.Module: a common tabular trick
    whose int8 conversion uses LOG version 2, an op version tflite-runtime 2.14 lacks."""
    import tensorflow as tf
    from sklearn.linear_model import LogisticRegression

    from deploykit.data import load_dataset

    ds = load_dataset("digits")
    clf = LogisticRegression(max_iter=3000).fit(np.log1p(ds.X), ds.y)

    class LogFeatures(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(clf.coef_.T.astype(np.float32))
            self.b = tf.Variable(clf.intercept_.astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32)])
        def serve(self, x):
            return {"probabilities": tf.nn.softmax(tf.math.log1p(x) @ self.w + self.b)}

    return LogFeatures(), ds.X[:400].astype(np.float32)


def two_headed_onnx(path):
    """A user's ONNX classifier of two outputs written to ``path``, ``embedding`` first, then
    its class scores ``probs``; returns the scores the torch original gives for rows."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.h, self.e, self.c = (torch.nn.Linear(6, 16), torch.nn.Linear(16, 4),
                                      torch.nn.Linear(16, 3))

        def forward(self, x):
            h = torch.relu(self.h(x))
            return self.e(h), torch.softmax(self.c(h), dim=-1)

    torch.manual_seed(0)
    net = Net().eval()
    torch.onnx.export(net, (torch.zeros(2, 6),), str(path), input_names=["x"],
                      output_names=["embedding", "probs"], dynamic_axes={"x": {0: "n"}},
                      dynamo=False)
    return lambda x: net(torch.from_numpy(x))[1].detach().numpy()
