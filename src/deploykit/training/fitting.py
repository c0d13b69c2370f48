"""One flow's fit into a temporary model folder: the dispatch from a flow's name to its
training module, shared by :func:`deploykit.train` and the ``auto`` decision."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploykit.data import Split
from deploykit.errors import TrainingError
from deploykit.flows import TRAINABLE
from deploykit.signature import Signature
from deploykit.training.common import (
    FitResult,
    TrainConfig,
    deep_signature,
    new_workdir,
    write_folder,
)


def _fitter(flow: str) -> Callable[[Split, Path, TrainConfig], FitResult]:
    if flow == "sklearn":
        from deploykit.training import sklearn_path
        return sklearn_path.fit
    if flow == "tensorflow":
        from deploykit.training import tf_path
        return tf_path.fit
    if flow == "torch":
        from deploykit.training import torch_path
        return torch_path.fit
    if flow in ("keras-tensorflow", "keras-torch"):
        from deploykit.training import keras_path
        backend = flow.removeprefix("keras-")
        return lambda split, workdir, cfg: keras_path.fit(split, workdir, cfg, backend)
    raise TrainingError(f"unknown flow '{flow}': use one of {', '.join(TRAINABLE)}")


def signature_for(flow: str, split: Split) -> Signature:
    if flow == "sklearn":
        from deploykit.training import sklearn_path
        return sklearn_path.signature(split)
    return deep_signature(split)


def fit_into(flow: str, split: Split, cfg: TrainConfig, out: Path) -> tuple[Path, dict[str, Any]]:
    """Train one flow into a temporary folder beside ``out``; return (folder, card).

    The caller moves the folder into place (or deletes it); on failure it is removed here.
    """
    fitter = _fitter(flow)
    workdir = new_workdir(out)
    try:
        start = time.perf_counter()
        fit = fitter(split, workdir, cfg)
        card = write_folder(workdir, split, fit, flow=flow, seed=cfg.seed,
                            seconds=time.perf_counter() - start,
                            signature=signature_for(flow, split))
        return workdir, card
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
