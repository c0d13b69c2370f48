"""A model zoo of the models users arrive with, built from public model definitions with
random weights and no downloads. The deep ones are then fitted for a few epochs to a
synthetic task derived from their inputs, so that, like a user's trained model, they make
confident, input-dependent predictions (a random MobileNet predicts the same for every
input, and parity on it would prove nothing; see ``keras-constant`` for that case).

Each entry writes a model file the way its framework's own public API saves it, and a
``sample.npy`` (or ``.npz`` for several inputs) of example inputs, which is what a user hands
to ``deploykit export FILE --to all --sample SAMPLE``. Run as a script to build the whole zoo::

    python tests/zoo.py OUT_DIR        # writes OUT_DIR/<name>/... and OUT_DIR/zoo.json

Keras models are built under the backend their entry names (a subprocess runs the torch one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

RNG = np.random.default_rng(0)
ROWS = 128  # probe rows: int8's 99 % agreement threshold needs at least 100
ZOO: dict[str, tuple[str, Callable[[Path], tuple[str, str]]]] = {}  # name -> (group, build)
# Token-id inputs and the rows of the embedding table each indexes, by model and input name.
VOCAB = {"keras-lstm-tokens": {"x": 50}, "torch-bert-mask": {"input_ids": 64}}


def entry(name: str, group: str):
    """Register a builder ``build(folder) -> (model file, sample file)`` under ``group``
    (``keras-tensorflow``, ``keras-torch``, ``tensorflow``, ``torch``, ``sklearn``)."""
    def deco(fn):
        ZOO[name] = (group, fn)
        return fn
    return deco


def _save_sample(folder: Path, x: np.ndarray) -> str:
    np.save(folder / "sample.npy", x)
    return "sample.npy"


# -- Keras ------------------------------------------------------------------------------------
def _fit_keras(model, x, classes: int, epochs: int = 8):
    """A few epochs on labels derived from the inputs: quantiles of the inputs' mean (``x``
    is an array, or a list for several inputs); a second output learns that mean."""
    xs = x if isinstance(x, list) else [x]
    score = np.concatenate([a.reshape(len(a), -1) for a in xs], axis=1).astype("float64")
    score = score.mean(axis=1)
    y = np.searchsorted(np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1]), score)
    import keras

    for layer in model.layers:  # moving statistics that follow the data within a few steps
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.5
    losses = ["sparse_categorical_crossentropy", "mse"][:len(model.outputs)]
    model.compile(optimizer="adam", loss=losses if len(losses) > 1 else losses[0])
    model.fit(x, [y, score][:len(losses)] if len(losses) > 1 else y, epochs=epochs,
              batch_size=32, verbose=0)
    return model


@entry("keras-mobilenetv3", "keras-tensorflow")
def keras_mobilenet(folder: Path):
    """A Keras application (hard-swish, squeeze-excite), random weights."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), alpha=0.5,
                                                weights=None, classes=10,
                                                include_preprocessing=False, minimalistic=False)
    x = RNG.uniform(0, 1, (512, 32, 32, 3)).astype("float32")
    _fit_keras(model, x, 10, epochs=4).save(folder / "model.keras")
    return "model.keras", _save_sample(folder, x[:ROWS])


@entry("keras-gru", "keras-tensorflow")
def keras_gru(folder: Path):
    """Two named inputs and two outputs: a float sequence of any length (``steps``,
    ``Input((None, 4))``, GRU) and a ``context`` vector, giving class probabilities and a
    ``score`` (a regression head). Exported at the sample's length, 10."""
    import keras

    keras.utils.set_random_seed(0)
    steps, context = keras.Input((None, 4), name="steps"), keras.Input((3,), name="context")
    h = keras.layers.Concatenate()([keras.layers.GRU(16)(steps), context])
    heads = [keras.layers.Dense(3, activation="softmax", name="class")(h),
             keras.layers.Dense(1, name="score")(h)]
    x, c = RNG.normal(size=(512, 10, 4)).astype("float32"), RNG.normal(size=(512, 3))
    model = _fit_keras(keras.Model([steps, context], heads), [x, c.astype("float32")], 3)
    model.save(folder / "model.keras")
    np.savez(folder / "sample.npz", steps=x[:ROWS], context=c[:ROWS].astype("float32"))
    return "model.keras", "sample.npz"


@entry("keras-lstm-tokens", "keras-torch")
def keras_lstm_tokens(folder: Path):
    """Token ids (int32) of any length (``Input((None,))``) -> Embedding -> bidirectional
    LSTM -> softmax, built on Keras's torch backend. Exported at the sample's length, 12.
    (The LSTMs inside a Bidirectional kept their loop: 7 of 11 targets failed.)"""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(VOCAB["keras-lstm-tokens"]["x"], 8)(inp)
    x = keras.layers.Bidirectional(keras.layers.LSTM(8))(x)
    out = keras.layers.Dense(4, activation="softmax")(x)
    x = RNG.integers(0, VOCAB["keras-lstm-tokens"]["x"], (512, 12)).astype("int32")
    _fit_keras(keras.Model(inp, out), x, 4, epochs=30).save(folder / "model.keras")
    return "model.keras", _save_sample(folder, x[:ROWS])


@entry("keras-constant", "keras-tensorflow")
def keras_constant(folder: Path):
    """A network whose output is the same for every input (zero weights): parity on it
    proves nothing, and deploykit must say so."""
    import keras

    inp = keras.Input((6,))
    out = keras.layers.Dense(10, activation="softmax", kernel_initializer="zeros")(inp)
    keras.Model(inp, out).save(folder / "model.keras")
    return "model.keras", _save_sample(folder, RNG.normal(size=(ROWS, 6)).astype("float32"))


# -- TensorFlow core --------------------------------------------------------------------------
@entry("tf-module-conv1d", "tensorflow")
def tf_module(folder: Path):
    """A tf.Module with a serving tf.function: 1-D convolution over a sequence, pooled; it
    returns the class probabilities and the pooled features by name."""
    import tensorflow as tf

    class Net(tf.Module):
        def __init__(self):
            super().__init__()
            self.k = tf.Variable(tf.random.stateless_normal((3, 4, 8), seed=(1, 2)) * 0.5)
            self.w = tf.Variable(tf.random.stateless_normal((8, 5), seed=(3, 4)))

        @tf.function(input_signature=[tf.TensorSpec([None, 16, 4], tf.float32)])
        def serve(self, x):  # two outputs by name: class probabilities and pooled features
            h = tf.reduce_mean(tf.nn.relu(tf.nn.conv1d(x, self.k, 1, "SAME")), axis=1)
            return {"scores": tf.nn.softmax(h @ self.w), "pooled": h}

    net = Net()
    tf.saved_model.save(net, str(folder / "saved_model"),
                        signatures={"serving_default": net.serve})
    return "saved_model", _save_sample(folder, RNG.normal(size=(ROWS, 16, 4)).astype("float32"))


# -- PyTorch ----------------------------------------------------------------------------------
def _fit_torch(net, x, classes: int, epochs: int = 8):
    """As :func:`_fit_keras`, for a torch module (BatchNorm statistics follow the data)."""
    import torch

    score = x.reshape(len(x), -1).double().mean(dim=1)
    y = torch.bucketize(score, torch.quantile(score, torch.linspace(0, 1, classes + 1)[1:-1]
                                              .double()))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    net.train()
    for _ in range(epochs):
        for i in range(0, len(x), 32):
            opt.zero_grad()
            p = net(x[i:i + 32])
            torch.nn.functional.nll_loss(torch.log(p + 1e-9), y[i:i + 32]).backward()
            opt.step()
    return net.eval()


def _tiny_bert():
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=VOCAB["torch-bert-mask"]["input_ids"], hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=32,
                        num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    bert = BertForSequenceClassification(config).eval()

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids):
            return torch.softmax(self.bert(input_ids=input_ids).logits, dim=-1)

    return Classifier().eval()


@entry("torch-bert-mask", "torch")
def torch_bert_mask(folder: Path):
    """A tiny BERT encoder from a transformers config with two named inputs, as Hugging Face
    models take them: ``input_ids`` and ``attention_mask`` (int64, padded sequences), and two
    outputs: class probabilities and the pooled [CLS] embedding. torch.export with a dynamic
    batch and a dynamic sequence length."""
    import torch

    vocab = VOCAB["torch-bert-mask"]["input_ids"]
    ids = torch.from_numpy(RNG.integers(1, vocab, (512, 16)).astype("int64"))
    mask = (torch.arange(16) < torch.from_numpy(RNG.integers(4, 17, (512, 1)))).long()
    ids = ids * mask  # padding id 0 past each sequence's length
    bert = _fit_torch(_tiny_bert(), ids, 3, epochs=8).bert

    class Masked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):  # probabilities and the pooled [CLS]
            pooled = self.bert.bert(input_ids=input_ids, attention_mask=attention_mask)[1]
            return torch.softmax(self.bert.classifier(pooled), dim=-1), pooled

    batch = torch.export.Dim("batch", min=1, max=1024)
    seq = torch.export.Dim("seq", min=2, max=32)
    program = torch.export.export(Masked().eval(), (ids[:4], mask[:4]),
                                  dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}),
                                  strict=False)
    torch.export.save(program, folder / "model.pt2")
    np.savez(folder / "sample.npz", input_ids=ids[:ROWS].numpy(),
             attention_mask=mask[:ROWS].numpy())
    return "model.pt2", "sample.npz"


@entry("torch-cnn-bn-fixed", "torch")
def torch_cnn_fixed(folder: Path):
    """A CNN with BatchNorm, torch.export at a fixed sample batch (no dynamic_shapes)."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(8, 3), torch.nn.Softmax(dim=-1))
    x = torch.from_numpy(RNG.normal(size=(512, 1, 12, 12)).astype("float32"))
    net = _fit_torch(net, x, 3, epochs=15)
    torch.export.save(torch.export.export(net, (x[:4],)), folder / "model.pt2")
    return "model.pt2", _save_sample(folder, x[:ROWS].numpy())


@entry("torch-fixed-reshape", "torch")
def torch_fixed_reshape(folder: Path):
    """A program whose graph depends on its export batch (an explicit reshape to it): it
    cannot be made dynamic, so it stays fixed at 4 rows."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(6, 12)
            self.head = torch.nn.Linear(12, 3)

        def forward(self, x):
            h = torch.tanh(self.body(x)).reshape(4, 3, 4).mean(-1).reshape(4, 3)
            return torch.softmax(self.head(torch.tanh(self.body(x))) + h, dim=-1)

    torch.manual_seed(0)
    x = torch.from_numpy(RNG.normal(size=(ROWS + 2, 6)).astype("float32"))
    torch.export.save(torch.export.export(Net().eval(), (x[:4],)), folder / "model.pt2")
    return "model.pt2", _save_sample(folder, x.numpy())


@entry("torch-gru-lstm", "torch")
def torch_gru_lstm(folder: Path):
    """nn.GRU then nn.LSTM over float sequences, each from its implicit zero state, last step
    -> linear -> softmax (dynamic batch)."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = torch.nn.GRU(5, 12, batch_first=True)
            self.lstm = torch.nn.LSTM(12, 12, batch_first=True)
            self.head = torch.nn.Linear(12, 3)

        def forward(self, x):
            h, _ = self.lstm(self.gru(x)[0])
            return torch.softmax(self.head(h[:, -1]), dim=-1)

    torch.manual_seed(0)
    x = torch.from_numpy(RNG.normal(size=(512, 9, 5)).astype("float32"))
    net = _fit_torch(Net(), x, 3, epochs=15)
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(net, (x[:4],), dynamic_shapes=({0: batch},), strict=False)
    torch.export.save(program, folder / "model.pt2")
    return "model.pt2", _save_sample(folder, x[:ROWS].numpy())


# -- scikit-learn -----------------------------------------------------------------------------
def _sk_data(regression: bool = False):
    from sklearn.datasets import load_breast_cancer, load_diabetes

    X, y = (load_diabetes if regression else load_breast_cancer)(return_X_y=True)
    return X.astype("float32"), y


def _dump(folder: Path, model, X: np.ndarray):
    import skops.io as sio

    sio.dump(model, folder / "model.skops")
    return "model.skops", _save_sample(folder, X[:200])


@entry("sklearn-hgb-classifier", "sklearn")
def sk_hgb_classifier(folder: Path):
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = _sk_data()
    return _dump(folder, HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X, y), X)


@entry("sklearn-hgb-regressor", "sklearn")
def sk_hgb_regressor(folder: Path):
    from sklearn.ensemble import HistGradientBoostingRegressor

    X, y = _sk_data(regression=True)
    return _dump(folder, HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(X, y), X)


@entry("sklearn-pipeline-pca-logreg", "sklearn")
def sk_pipeline(folder: Path):
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _sk_data()
    model = make_pipeline(StandardScaler(), PCA(8), LogisticRegression(max_iter=500))
    return _dump(folder, model.fit(X, y), X)


@entry("sklearn-words-forest", "sklearn")
def sk_columns(folder: Path):
    """A DataFrame with two columns of words: one-hot on them (after an imputer on one),
    scaling on the rest, then a random forest; the sample a .csv file, as a user has it."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y = _sk_data()
    frame = pd.DataFrame(X[:, :8], columns=[f"f{j}" for j in range(8)])
    words = np.array(["none", "low", "mid", "high", "top"], dtype=object)
    for j in (0, 1):  # two columns of words, from the values' quintiles
        frame[f"f{j}"] = words[np.floor(X[:, j] / X[:, j].max() * 4).astype(int)]
    frame.loc[::17, "f1"] = np.nan  # missing: the imputer fills its most frequent word
    pre = ColumnTransformer([
        ("size", OneHotEncoder(handle_unknown="ignore"), ["f0"]),
        ("shape", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder()),
         ["f1"]),
        ("scale", StandardScaler(), [f"f{j}" for j in range(2, 8)])])
    model = make_pipeline(pre, RandomForestClassifier(30, max_depth=6, random_state=0))
    import skops.io as sio

    sio.dump(model.fit(frame, y), folder / "model.skops")
    frame[:200].to_csv(folder / "sample.csv", index=False)
    return "model.skops", "sample.csv"


# Parity on a constant model is vacuous whatever the target: one per runtime family will do.
TARGETS = {"keras-constant": {"targets": "tflite,tflite-int8,onnx,torchscript,tfjs"}}


def build(out: Path, groups: set[str]) -> dict[str, dict[str, str]]:
    """Build the zoo entries of ``groups`` under ``out``; returns name -> files."""
    made = {}
    for name, (group, fn) in ZOO.items():
        if group not in groups:
            continue
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        model, sample = fn(folder)
        made[name] = {"group": group, "model": str(folder / model),
                      "sample": str(folder / sample), **TARGETS.get(name, {})}
    return made


def export_cli(name: str, files: dict[str, str], out: Path, cli: Callable[..., tuple[int, str]]
               ) -> tuple[int, str, dict[str, tuple[str, str]]]:
    """``deploykit export MODEL --to all --sample SAMPLE --out out/name`` as a user runs it.

    Args:
        cli: runs ``deploykit ARGS`` and returns its exit code and everything it printed
            (:func:`subprocess_cli`, or the tests' in-process runner).

    Returns:
        The exit code, everything printed, and target -> (status, reason) for every
        reachable target (``pass``, ``vacuous``, ``fail`` or ``error``).
    """
    from deploykit.bundle import load_bundle

    bundle = out / name
    code, text = cli("export", files["model"], "--to", files.get("targets", "all"), "--sample",
                     files["sample"], "--out", str(bundle), "--quiet")
    cells: dict[str, tuple[str, str]] = {}
    if (bundle / "manifest.json").exists():
        b = load_bundle(bundle)
        for a in b.artifacts:
            cells[a.target] = (a.parity.status, "; ".join(a.parity.failures) or
                               a.parity.vacuous or "")
        for f in b.failed:
            cells.setdefault(f.target, (f.status, f.reason))
    return code, text, cells


def subprocess_cli(deploykit: str) -> Callable[..., tuple[int, str]]:
    """A runner for :func:`export_cli`: the ``deploykit`` executable in a process of its own."""
    def run(*args: str) -> tuple[int, str]:
        r = subprocess.run([deploykit, *args], capture_output=True, text=True, timeout=1800)
        return r.returncode, r.stdout + r.stderr
    return run


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if os.environ.get("KERAS_BACKEND") == "torch":  # the subprocess for keras-torch entries
        made = build(out, {"keras-torch"})
    else:
        env = {**os.environ, "KERAS_BACKEND": "torch"}
        subprocess.run([sys.executable, __file__, str(out)], env=env, check=True)
        made = json.loads((out / "zoo.json").read_text())
        made.update(build(out, {"keras-tensorflow", "tensorflow", "torch", "sklearn"}))
    (out / "zoo.json").write_text(json.dumps(made, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    main(Path(sys.argv[1]).resolve())
