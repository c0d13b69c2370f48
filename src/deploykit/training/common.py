"""What every training flow shares: config, metrics, scaling constants, the model folder.

A model folder is self-describing::

    OUT/
      deploykit-model.json   card: flow, framework, dataset, task, labels, signature,
                             metrics, selection, seed, versions, files
      <model files>          the framework's own safe format (.skops, .keras,
                             saved_model/, state_dict.pt + model.pt2)
      test_split.npz         held-out X, y and the model's outputs on X ("ref.<output>")

It is written into a temporary sibling and renamed into place, so an interrupted run never
leaves a folder that looks complete.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from deploykit._fs import (
    check_replaceable,
    read_schema_json,
    replace_dir,
    sha256,
    work_folder_beside,
)
from deploykit.data import Split
from deploykit.errors import ModelFolderError, TrainingError
from deploykit.signature import Signature, TensorSpec

CARD = "deploykit-model.json"
CARD_SCHEMA = "deploykit.model/2"
CARD_READS = ("deploykit.model/1", CARD_SCHEMA)  # /1 named the flow "path"
TEST_SPLIT = "test_split.npz"


@dataclass(frozen=True)
class TrainConfig:
    """Knobs shared by the paths; ``None`` means the path's own default."""

    seed: int = 0
    epochs: int | None = None
    arch: str = "auto"  # "auto" (CNN for image data, else MLP), "mlp" or "cnn"
    quiet: bool = False
    timeout: float = 900.0  # seconds, for paths trained in a worker process


@dataclass
class FitResult:
    """What a path's ``fit`` hands back: outputs on val/test plus facts for the card."""

    framework: str
    files: dict[str, str]
    val_outputs: dict[str, np.ndarray]
    probe_outputs: dict[str, np.ndarray]  # on Split.X_probe, the test rows first
    model: dict[str, Any]
    backend: str | None = None
    selection: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)


def use_cnn(split: Split, arch: str) -> bool:
    """CNN for image data unless asked otherwise; asking for a CNN on tabular data fails."""
    if arch not in ("auto", "mlp", "cnn"):
        raise TrainingError(f"unknown architecture '{arch}': use auto, mlp or cnn")
    if arch == "cnn" and split.dataset.image_shape is None:
        raise TrainingError(f"dataset '{split.dataset.name}' is not image data; use --arch mlp")
    return arch == "cnn" or (arch == "auto" and split.dataset.image_shape is not None)


def scaling(split: Split) -> dict[str, np.ndarray | float]:
    """Standardisation constants from the training split, baked into deep models.

    Constant features get a scale of 1 so an unseen value is not divided by ~0.
    For regression the target is standardised too and the model un-scales its output.
    """
    mean = split.X_train.mean(axis=0).astype(np.float32)
    std = split.X_train.std(axis=0).astype(np.float32)
    std[std < 1e-6] = 1.0
    out: dict[str, np.ndarray | float] = {"mean": mean, "std": std, "y_mean": 0.0, "y_std": 1.0}
    if split.dataset.task == "regression":
        out["y_mean"] = float(split.y_train.mean())
        out["y_std"] = float(split.y_train.std()) or 1.0
    return out


def output_name(task: str) -> str:
    return "probabilities" if task == "classification" else "predictions"


def deep_signature(split: Split) -> Signature:
    ds = split.dataset
    out = TensorSpec(output_name(ds.task), "float32", (None, ds.n_outputs))
    return Signature.single(ds.n_features, [out], columns=ds.columns, words=ds.words,
                            filled=ds.filled)


def metrics(task: str, y_true: np.ndarray, outputs: dict[str, np.ndarray]) -> dict[str, float]:
    """Task metrics from a model's named outputs."""
    from sklearn import metrics as m

    if task == "classification":
        pred = outputs["label"] if "label" in outputs else outputs["probabilities"].argmax(axis=1)
        return {"accuracy": float(m.accuracy_score(y_true, pred)),
                "f1_macro": float(m.f1_score(y_true, pred, average="macro"))}
    pred = outputs["predictions"].reshape(-1)
    return {"r2": float(m.r2_score(y_true, pred)),
            "mae": float(m.mean_absolute_error(y_true, pred)),
            "rmse": float(np.sqrt(m.mean_squared_error(y_true, pred)))}


def primary_metric(task: str) -> str:
    return "accuracy" if task == "classification" else "r2"


def versions(*packages: str) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("deploykit", "numpy", "scikit-learn", *packages):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def new_workdir(out: Path) -> Path:
    """A temporary folder beside ``out`` (same file system, so the final rename is atomic)."""
    return work_folder_beside(out)


def check_options(seed: int, epochs: int | None) -> None:
    """Refuse what training cannot use: ``epochs`` 0 trained each flow's default, a negative
    count crashed the deep flows; scikit-learn takes seeds from 0 to 2**32 - 1."""
    def whole(v: Any) -> bool:
        return isinstance(v, int | np.integer) and not isinstance(v, bool)
    if epochs is not None and not (whole(epochs) and epochs >= 1):
        raise TrainingError(f"epochs must be a whole number of 1 or more (got {epochs!r})")
    if not (whole(seed) and 0 <= seed < 2**32):
        raise TrainingError(f"the seed must be a whole number from 0 to 2**32 - 1 "
                            f"(got {seed!r})")


def check_out_dir(out: Path) -> None:
    """Refuse to replace a folder that is not a deploykit model folder."""
    check_replaceable(out, CARD, "a deploykit model folder", TrainingError)


def finalize(workdir: Path, out: Path) -> None:
    """Move a finished workdir into place, replacing an older model folder."""
    replace_dir(workdir, out)


def write_folder(workdir: Path, split: Split, fit: FitResult, *, flow: str, seed: int,
                 seconds: float, signature: Signature, extra: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """Write the card and the probe rows (the test split, topped up to
    :data:`~deploykit.data.PROBE_MIN_ROWS`, with the model's outputs) into ``workdir``;
    return the card."""
    ds = split.dataset
    card = {
        "schema": CARD_SCHEMA,
        "flow": flow,
        "framework": fit.framework,
        "backend": fit.backend,
        "model": fit.model,
        "files": fit.files,
        "dataset": {"name": ds.name, "source": ds.source, "n_samples": int(len(ds.X)),
                    "n_features": ds.n_features, "feature_names": list(ds.feature_names),
                    "image_shape": list(ds.image_shape) if ds.image_shape else None,
                    **({"label_column": ds.label_column} if ds.label_column else {})},
        "task": {"kind": ds.task, "labels": list(ds.labels)},
        "signature": signature.to_dict(),
        "metrics": {"validation": metrics(ds.task, split.y_val, fit.val_outputs),
                    "test": metrics(ds.task, split.y_test,
                                    {k: v[:len(split.y_test)] for k, v in fit.probe_outputs.items()})},
        "selection": fit.selection,
        "split": {"seed": split.seed, "n_train": int(len(split.X_train)),
                  "n_validation": int(len(split.X_val)), "n_test": int(len(split.X_test)),
                  "n_probe": int(len(split.X_probe))},
        "seed": seed,
        "train_seconds": round(seconds, 2),
        "versions": {**versions(), **fit.versions},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    arrays = {"X": split.X_probe, "y": split.y_probe,
              **{f"ref.{k}": v for k, v in fit.probe_outputs.items()}}
    np.savez(workdir / TEST_SPLIT, **arrays)
    card["sha256"] = {p.relative_to(workdir).as_posix(): sha256(p)  # checked by read_card
                      for p in sorted(workdir.rglob("*")) if p.is_file()}
    (workdir / CARD).write_text(json.dumps(card, indent=2) + "\n")
    return card


def read_card(folder: str | Path) -> dict[str, Any]:
    """Read and sanity-check a model folder's card."""
    folder = Path(folder)
    path = folder / CARD
    if not path.is_file():
        raise ModelFolderError(f"{folder} is not a deploykit model folder (no {CARD})")
    card = read_schema_json(path, CARD_READS, ModelFolderError)
    if "flow" not in card and "path" in card:  # written by deploykit.model/1
        card["flow"] = card.pop("path")
    missing = [f for f in card.get("files", {}).values() if not (folder / f).exists()]
    if missing:
        raise ModelFolderError(f"{folder}: missing model files {missing}")
    for rel, digest in card.get("sha256", {}).items():  # folders before it have none
        p = folder / rel
        if not p.is_file() or sha256(p) != digest:
            raise ModelFolderError(f"{folder}: {rel} is missing or was changed after training "
                                   f"(its sha256 differs from the card's); train again")
    return card


def read_test_split(folder: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """``(X, y, reference outputs)`` of the probe rows stored with a model folder (the test
    split first; older folders hold the test split alone)."""
    with np.load(Path(folder) / TEST_SPLIT, allow_pickle=False) as z:
        refs = {k[4:]: z[k] for k in z.files if k.startswith("ref.")}
        return z["X"], z["y"], refs


def batches(n: int, batch_size: int, rng: np.random.Generator):
    """Shuffled index batches for one epoch."""
    order = rng.permutation(n)
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]


def epoch_status(loss: float, val_score: float, task: str) -> str:
    return f"loss {loss:.4f}  val {primary_metric(task)} {val_score:.4f}"
