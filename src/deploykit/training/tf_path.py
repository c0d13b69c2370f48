"""The TensorFlow core path, no Keras: ``tf.Module``, ``tf.Variable``s, a ``GradientTape``
loop with a hand-written Adam, and a ``tf.function`` serving signature.

Saved as a SavedModel whose ``serving_default`` takes raw features ``x`` and returns
``probabilities`` (classification) or ``predictions`` (regression).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deploykit._lazy import require
from deploykit._progress import Reporter
from deploykit.data import Split
from deploykit.flows import DEFAULT_EPOCHS
from deploykit.training.common import (
    FitResult,
    TrainConfig,
    batches,
    epoch_status,
    metrics,
    primary_metric,
    scaling,
    use_cnn,
)

SAVED_MODEL_DIR = "saved_model"


def make_module(arch: dict[str, Any], sc: dict[str, Any], seed: int):
    """Build the ``tf.Module``: variables plus a serving ``tf.function`` with a signature."""
    tf = require("tensorflow", purpose="for the tensorflow path")

    def glorot(shape, fan_in, fan_out, i):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return tf.random.stateless_uniform(shape, seed=[seed, i], minval=-limit, maxval=limit)

    class DeployModule(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="deploykit_tf_core")
            f, k = arch["n_features"], arch["n_outputs"]
            self.classify = arch["task"] == "classification"
            self.image_shape = arch["image_shape"]
            self.mean = tf.constant(sc["mean"])
            self.std = tf.constant(sc["std"])
            self.y_mean = tf.constant(float(sc["y_mean"]))
            self.y_std = tf.constant(float(sc["y_std"]))
            if self.image_shape:
                h, w, c = self.image_shape
                flat = 32 * (h // 2) * (w // 2)
                shapes = [(3, 3, c, 16), (16,), (3, 3, 16, 32), (32,), (flat, 64), (64,), (64, k), (k,)]
                fans = [(9 * c, 9 * 16), None, (9 * 16, 9 * 32), None, (flat, 64), None, (64, k), None]
            else:
                shapes = [(f, 128), (128,), (128, 64), (64,), (64, k), (k,)]
                fans = [(f, 128), None, (128, 64), None, (64, k), None]
            self.params = [tf.Variable(glorot(s, *fan, i) if fan else tf.zeros(s), name=f"p{i}")
                           for i, (s, fan) in enumerate(zip(shapes, fans))]
            self.serve = tf.function(self._serve, input_signature=[
                tf.TensorSpec([None, f], tf.float32, name="x")])

        def logits(self, x):
            z = (x - self.mean) / self.std
            p = self.params
            if self.image_shape:
                z = tf.reshape(z, [-1, *self.image_shape])
                z = tf.nn.relu(tf.nn.conv2d(z, p[0], 1, "SAME") + p[1])
                z = tf.nn.relu(tf.nn.conv2d(z, p[2], 1, "SAME") + p[3])
                z = tf.nn.max_pool2d(z, 2, 2, "VALID")
                z = tf.reshape(z, [-1, p[4].shape[0]])
                z = tf.nn.relu(z @ p[4] + p[5])
                return z @ p[6] + p[7]
            z = tf.nn.relu(z @ p[0] + p[1])
            z = tf.nn.relu(z @ p[2] + p[3])
            return z @ p[4] + p[5]

        def _serve(self, x):
            z = self.logits(x)
            if self.classify:
                return {"probabilities": tf.nn.softmax(z)}
            return {"predictions": z * self.y_std + self.y_mean}

    return DeployModule()


class _Adam:
    """Adam written with tf.Variables, so the path uses no Keras optimizer."""

    def __init__(self, params, lr=1e-3, b1=0.9, b2=0.999, eps=1e-7) -> None:
        tf = require("tensorflow")
        self.params, self.lr, self.b1, self.b2, self.eps = params, lr, b1, b2, eps
        self.m = [tf.Variable(tf.zeros_like(p)) for p in params]
        self.v = [tf.Variable(tf.zeros_like(p)) for p in params]
        self.t = tf.Variable(0.0)

    def apply(self, grads) -> None:
        self.t.assign_add(1.0)
        c1 = 1.0 - self.b1 ** self.t
        c2 = 1.0 - self.b2 ** self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m.assign(self.b1 * m + (1 - self.b1) * g)
            v.assign(self.b2 * v + (1 - self.b2) * g * g)
            p.assign_sub(self.lr * (m / c1) / ((v / c2) ** 0.5 + self.eps))


def fit(split: Split, workdir: Path, cfg: TrainConfig) -> FitResult:
    tf = require("tensorflow", purpose="for the tensorflow path")
    tf.random.set_seed(cfg.seed)
    ds = split.dataset
    cnn = use_cnn(split, cfg.arch)
    arch = {"n_features": ds.n_features, "n_outputs": ds.n_outputs, "task": ds.task,
            "image_shape": list(ds.image_shape) if cnn else None}
    module = make_module(arch, scaling(split), cfg.seed)
    epochs = cfg.epochs or DEFAULT_EPOCHS["cnn" if cnn else "mlp"]
    _train(module, split, epochs, cfg)
    tf.saved_model.save(module, str(workdir / SAVED_MODEL_DIR),
                        signatures={"serving_default": module.serve.get_concrete_function()})
    return FitResult(
        framework="tensorflow", files={"saved_model": SAVED_MODEL_DIR},
        val_outputs=predict(module.serve, split.X_val),
        probe_outputs=predict(module.serve, split.X_probe),
        model={"kind": "cnn" if cnn else "mlp", "architecture": arch, "epochs": epochs,
               "signature_key": "serving_default"},
        versions={"tensorflow": tf.__version__})


def _train(module, split: Split, epochs: int, cfg: TrainConfig) -> None:
    tf = require("tensorflow")
    task = split.dataset.task
    y_train = split.y_train if task == "classification" else \
        ((split.y_train - float(module.y_mean)) / float(module.y_std)).reshape(-1, 1)
    opt = _Adam(module.params)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            z = module.logits(x)
            if task == "classification":
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, z))
            else:
                loss = tf.reduce_mean(tf.square(z - y))
        opt.apply(tape.gradient(loss, module.params))
        return loss

    rng = np.random.default_rng(cfg.seed)
    best, best_values = -np.inf, None
    with Reporter(cfg.quiet).task("tensorflow epochs", total=epochs) as advance:
        for _ in range(epochs):
            total = 0.0
            for idx in batches(len(split.X_train), 32, rng):
                y = y_train[idx].astype(np.int64 if task == "classification" else np.float32)
                total += float(step(tf.constant(split.X_train[idx]), tf.constant(y))) * len(idx)
            score = metrics(task, split.y_val, predict(module.serve, split.X_val))[
                primary_metric(task)]
            if score > best:  # keep the variables of the best validation epoch
                best, best_values = score, [p.numpy() for p in module.params]
            advance(status=epoch_status(total / len(split.X_train), score, task))
    for p, v in zip(module.params, best_values):
        p.assign(v)


def predict(fn, X: np.ndarray) -> dict[str, np.ndarray]:
    """Call a serving function (or loaded signature) and return numpy outputs."""
    tf = require("tensorflow")
    out = fn(x=tf.constant(np.asarray(X, dtype=np.float32)))
    return {k: v.numpy() for k, v in out.items()}


def load(folder: Path, card: dict[str, Any]):
    """The saved serving signature, callable as ``fn(x=...)``."""
    tf = require("tensorflow", purpose="to load a SavedModel")
    loaded = tf.saved_model.load(str(folder / SAVED_MODEL_DIR))
    fn = loaded.signatures[card["model"]["signature_key"]]
    fn._deploykit_keepalive = loaded  # signatures hold weak references to their object
    return fn


