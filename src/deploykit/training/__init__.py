"""The training core: one model per flow (flowchart path), written as a model folder.

>>> from deploykit.training import train
>>> result = train("sklearn", "digits", "out/digits-sklearn")   # doctest: +SKIP
>>> result.metrics["test"]["accuracy"]                           # doctest: +SKIP

Flows: ``sklearn``, ``tensorflow`` (TF core), ``torch`` (PyTorch core), ``keras-tensorflow``,
``keras-torch``, and ``auto`` (the flowchart's "need deep learning?" decision, see
:mod:`deploykit.training.auto`). Framework modules are imported only by the flow that uses them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deploykit.data import Dataset, load_dataset, split_dataset
from deploykit.errors import ModelFolderError, TrainingError
from deploykit.flows import AUTO, TRAINABLE
from deploykit.signature import Signature
from deploykit.training.common import (
    TrainConfig,
    check_options,
    check_out_dir,
    finalize,
    read_card,
    read_test_split,
)
from deploykit.training.fitting import fit_into


@dataclass(frozen=True)
class TrainResult:
    """A finished training run: where the model folder is and what its card says."""

    flow: str
    folder: Path
    card: dict[str, Any]

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        return self.card["metrics"]

    @property
    def decision(self) -> dict[str, Any] | None:
        return self.card.get("decision")


def train(flow: str, data: str | Path | Dataset, out: str | Path, *,
          label_column: str | None = None, task: str | None = None, seed: int = 0,
          epochs: int | None = None, arch: str = "auto", quiet: bool = False,
          timeout: float = 900.0, **auto_options: Any) -> TrainResult:
    """Train along ``flow`` on ``data`` and write a model folder at ``out``.

    Args:
        flow: one of :data:`deploykit.flows.TRAINABLE` (a flowchart path, or ``auto``).
        data: a builtin dataset name, a CSV/NPZ file, or a :class:`Dataset`.
        out: the model folder to write (an older model folder there is replaced).
        label_column: for CSV files: the column holding the labels or values to predict.
        task: ``classification`` or ``regression`` when it should not be inferred.
        seed: seeds the split, initialisation and shuffling.
        epochs: deep flows only; each has a default that reaches its accuracy bar.
        arch: ``auto`` (CNN for image data, else MLP), ``mlp`` or ``cnn``.
        quiet: no progress output.
        timeout: seconds allowed to a flow trained in a worker process (Keras).
        auto_options: for ``flow="auto"``: ``target_score``, ``margin``, ``deep_flow``.

    Returns:
        The :class:`TrainResult` (model folder and card).

    Raises:
        TrainingError: an unknown flow, a seed or epochs it cannot use, or training failed.
        DataError: unusable data.
        ModelFolderError: ``out`` exists and is not a model folder.
    """
    if flow not in TRAINABLE:
        raise TrainingError(f"unknown flow '{flow}': use one of {', '.join(TRAINABLE)}")
    check_options(seed, epochs)
    out = Path(out).resolve()  # workers may see it from elsewhere
    check_out_dir(out)
    ds = data if isinstance(data, Dataset) else load_dataset(data, label_column=label_column,
                                                             task=task)
    split = split_dataset(ds, seed=seed)
    if ds.note and not quiet and ds is not data:  # a what-if said it once for every flow
        from deploykit._progress import Reporter
        Reporter().info(ds.note)
    cfg = TrainConfig(seed=seed, epochs=epochs, arch=arch, quiet=quiet, timeout=timeout)
    if flow == AUTO:
        from deploykit.training.auto import choose
        workdir, card = choose(split, cfg, out, **auto_options)
    else:
        workdir, card = fit_into(flow, split, cfg, out)
    finalize(workdir, out)
    return TrainResult(card["flow"] if flow != AUTO else AUTO, out, card)


class TrainedModel:
    """A model folder loaded with its own framework: ``predict(X)`` -> named outputs.

    Keras folders load under this process's Keras backend (a ``.keras`` file is
    backend-independent); use :func:`predict_in_worker` to load under a given backend.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.card = read_card(self.folder)
        self.flow = self.card["flow"]
        self.task = self.card["task"]["kind"]
        self._predict = self._loader()

    def _loader(self) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
        fw = self.card["framework"]
        if fw == "sklearn":
            from deploykit.training import sklearn_path
            model = sklearn_path.load(self.folder)
            return lambda X: sklearn_path.predict(model, X, self.task)
        if fw == "tensorflow":
            from deploykit.training import tf_path
            fn = tf_path.load(self.folder, self.card)
            return lambda X: tf_path.predict(fn, X)
        if fw == "torch":
            from deploykit.training import torch_path
            model = torch_path.load(self.folder, self.card)
            return lambda X: torch_path.predict(model, X, self.task)
        if fw == "keras":
            from deploykit.training import keras_path
            model = keras_path.load(self.folder)
            return lambda X: keras_path.predict(model, X, self.task)
        raise ModelFolderError(f"{self.folder}: unknown framework '{fw}' in the card")

    @property
    def signature(self) -> Signature:
        return Signature.from_dict(self.card["signature"])

    def predict(self, X: Any) -> dict[str, np.ndarray]:
        x = self.signature.validate(X)[self.signature.inputs[0].name]
        return self._predict(x)


def load_model(folder: str | Path) -> TrainedModel:
    """Load a model folder written by :func:`train` with its own framework.

    Args:
        folder: the model folder.

    Returns:
        A :class:`TrainedModel`; ``predict(X)`` gives its named outputs.

    Raises:
        ModelFolderError: not a model folder, or its files are missing.
    """
    return TrainedModel(folder)


def predict_in_worker(folder: str | Path, X: Any, *, timeout: float = 600.0
                      ) -> dict[str, np.ndarray]:
    """Predict with a model folder loaded from its files in a worker process, Keras on the
    backend it was trained on (a fresh process, or a pooled one inside ``deploykit.workers()``).

    Args:
        folder: the model folder.
        X: the inputs (rows of ``{column: value}`` and words too, for a model trained on a
            table).
        timeout: seconds the worker may take.

    Returns:
        The model's named outputs.

    Raises:
        InputError: ``X`` does not fit the model's signature (named).
        WorkerError: loading or predicting failed in the worker (with its message).
    """
    import tempfile

    from deploykit import worker

    card = read_card(folder)
    signature = Signature.from_dict(card["signature"])  # words as codes, gaps filled
    x = signature.validate(X)[signature.inputs[0].name]
    env = {"KERAS_BACKEND": card["backend"]} if card["framework"] == "keras" else {}
    with tempfile.TemporaryDirectory(prefix="deploykit-predict-") as tmp:
        xin, yout = Path(tmp) / "x.npy", Path(tmp) / "y.npz"
        np.save(xin, x)
        worker.run("deploykit.training:_predict_files",
                   {"folder": str(Path(folder).resolve()), "x": str(xin), "out": str(yout)},
                   env=env, timeout=timeout, label="predict")
        with np.load(yout) as z:
            return {k: z[k] for k in z.files}


def _predict_files(folder: str, x: str, out: str) -> None:
    np.savez(out, **load_model(folder).predict(np.load(x)))


__all__ = ["TrainResult", "TrainedModel", "train", "load_model",
           "predict_in_worker", "read_card", "read_test_split"]
