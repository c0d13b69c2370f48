"""The Keras 3 paths: one model definition, trained under the TensorFlow or PyTorch backend.

Keras fixes its backend when first imported, so training runs in a worker process started
with ``KERAS_BACKEND`` set (:func:`fit` in the caller, :func:`fit_in_worker` in the worker).
Standardisation is a ``Normalization`` layer with constants from the training split, so the
saved ``model.keras`` takes raw features.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from deploykit import worker
from deploykit._lazy import require
from deploykit._progress import Reporter
from deploykit.data import Split
from deploykit.errors import TrainingError
from deploykit.flows import DEFAULT_EPOCHS
from deploykit.training.common import (
    FitResult,
    TrainConfig,
    metrics,
    output_name,
    primary_metric,
    scaling,
    use_cnn,
)

MODEL_FILE = "model.keras"
BACKENDS = ("tensorflow", "torch")
_OUTPUTS = "outputs.npz"


def build_model(arch: dict[str, Any], sc: dict[str, Any]):
    """The Keras model shared by both backends (MLP, or a small CNN for image data)."""
    keras = require("keras", purpose="for the keras paths")
    L = keras.layers
    x_in = keras.Input((arch["n_features"],), name="x")
    z = L.Normalization(mean=sc["mean"], variance=np.square(sc["std"]), name="standardize")(x_in)
    if arch["image_shape"]:
        z = L.Reshape(tuple(arch["image_shape"]))(z)
        z = L.Conv2D(16, 3, padding="same", activation="relu")(z)
        z = L.Conv2D(32, 3, padding="same", activation="relu")(z)
        z = L.MaxPooling2D(2)(z)
        z = L.Flatten()(z)
        z = L.Dense(64, activation="relu")(z)
        z = L.Dropout(0.2)(z)
    else:
        z = L.Dense(128, activation="relu")(z)
        z = L.Dropout(0.1)(z)
        z = L.Dense(64, activation="relu")(z)
    name = output_name(arch["task"])
    if arch["task"] == "classification":
        out = L.Dense(arch["n_outputs"], activation="softmax", name=name)(z)
    else:
        out = L.Rescaling(scale=sc["y_std"], offset=sc["y_mean"], name=name)(L.Dense(1)(z))
    return keras.Model(x_in, out, name="deploykit_keras")


def fit(split: Split, workdir: Path, cfg: TrainConfig, backend: str) -> FitResult:
    """Train in a worker process whose Keras runs on ``backend``."""
    if backend not in BACKENDS:
        raise TrainingError(f"unknown Keras backend '{backend}': use one of {BACKENDS}")
    ds = split.dataset
    cnn = use_cnn(split, cfg.arch)
    arch = {"n_features": ds.n_features, "n_outputs": ds.n_outputs, "task": ds.task,
            "image_shape": list(ds.image_shape) if cnn else None}
    epochs = cfg.epochs or DEFAULT_EPOCHS["cnn" if cnn else "mlp"]
    with tempfile.TemporaryDirectory(prefix="deploykit-keras-") as tmp:
        data = Path(tmp) / "split.npz"
        sc = scaling(split)
        np.savez(data, X_train=split.X_train, y_train=split.y_train, X_val=split.X_val,
                 y_val=split.y_val, X_probe=split.X_probe, mean=sc["mean"], std=sc["std"])
        info = worker.run(
            "deploykit.training.keras_path:fit_in_worker",
            {"data": str(data), "workdir": str(workdir), "arch": arch, "epochs": epochs,
             "seed": cfg.seed, "quiet": cfg.quiet, "backend": backend,
             "y_mean": float(sc["y_mean"]), "y_std": float(sc["y_std"])},
            env={"KERAS_BACKEND": backend}, timeout=cfg.timeout, label=f"train keras-{backend}",
            draws=not cfg.quiet)  # its epochs' progress bar
    with np.load(workdir / _OUTPUTS) as z:
        val, probe = {k[4:]: z[k] for k in z.files if k.startswith("val.")}, \
            {k[6:]: z[k] for k in z.files if k.startswith("probe.")}
    (workdir / _OUTPUTS).unlink()
    return FitResult(framework="keras", backend=backend, files={"model": MODEL_FILE},
                     val_outputs=val, probe_outputs=probe,
                     model={"kind": "cnn" if cnn else "mlp", "architecture": arch,
                            "epochs": epochs, "params": info["params"]},
                     versions=info["versions"])


def fit_in_worker(data: str, workdir: str, arch: dict, epochs: int, seed: int, quiet: bool,
                  backend: str, y_mean: float, y_std: float) -> dict[str, Any]:
    """Worker side of :func:`fit`: train, save ``model.keras`` and the val/test outputs."""
    keras = require("keras", purpose="for the keras paths")
    if keras.backend.backend() != backend:
        raise TrainingError(f"worker runs Keras on '{keras.backend.backend()}', not '{backend}'")
    keras.utils.set_random_seed(seed)
    with np.load(data) as z:
        a = {k: z[k] for k in z.files}
    sc = {"mean": a["mean"], "std": a["std"], "y_mean": y_mean, "y_std": y_std}
    model = build_model(arch, sc)
    task = arch["task"]
    if task == "classification":
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        y_train, y_val = a["y_train"], a["y_val"]
    else:
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
        y_train, y_val = a["y_train"].reshape(-1, 1), a["y_val"].reshape(-1, 1)
    report = _Progress(Reporter(quiet), epochs, task, a["X_val"], a["y_val"])
    model.fit(a["X_train"], y_train, validation_data=(a["X_val"], y_val), epochs=epochs,
              batch_size=32, verbose=0, shuffle=True, callbacks=[report.callback(keras)])
    out = Path(workdir)
    model.save(out / MODEL_FILE)
    np.savez(out / _OUTPUTS,
             **{f"val.{k}": v for k, v in predict(model, a["X_val"], task).items()},
             **{f"probe.{k}": v for k, v in predict(model, a["X_probe"], task).items()})
    return {"params": int(model.count_params()),
            "versions": {"keras": keras.__version__, backend: _backend_version(backend)}}


class _Progress:
    """Epoch progress plus restore-best-validation-weights, as one Keras callback."""

    def __init__(self, reporter: Reporter, epochs: int, task: str, X_val, y_val) -> None:
        self.reporter, self.epochs, self.task = reporter, epochs, task
        self.X_val, self.y_val = X_val, y_val

    def callback(self, keras):
        outer = self

        class Callback(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self._ctx = outer.reporter.task(f"keras ({keras.backend.backend()}) epochs",
                                                total=outer.epochs)
                self._advance = self._ctx.__enter__()
                self._best, self._weights = -np.inf, None

            def on_epoch_end(self, epoch, logs=None):
                name = primary_metric(outer.task)
                score = metrics(outer.task, outer.y_val, predict(self.model, outer.X_val, outer.task))[name]
                if score > self._best:
                    self._best, self._weights = score, self.model.get_weights()
                self._advance(status=f"loss {logs['loss']:.4f}  val {name} {score:.4f}")

            def on_train_end(self, logs=None):
                self._ctx.__exit__(None, None, None)
                self.model.set_weights(self._weights)

        return Callback()


def predict(model, X: np.ndarray, task: str) -> dict[str, np.ndarray]:
    """Named outputs of a Keras model on ``X`` (batched, no progress bar)."""
    out = model.predict(np.asarray(X, dtype=np.float32), batch_size=256, verbose=0)
    return {output_name(task): np.asarray(out, dtype=np.float32)}


def load(folder: Path):
    """Load ``model.keras`` in safe mode under this process's backend."""
    keras = require("keras", purpose="to load a .keras model")
    return keras.saving.load_model(folder / MODEL_FILE, safe_mode=True)


def _backend_version(backend: str) -> str:
    import importlib

    return importlib.import_module(backend).__version__  # already imported by Keras
