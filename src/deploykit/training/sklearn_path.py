"""The scikit-learn path: scaling + a classical model chosen by cross-validated grid search.

Each candidate family (logistic regression or ridge, SVM, random forest, MLP) gets a small
grid; the family with the best cross-validation score on the training split wins.
The fitted Pipeline is saved with skops, never pickle. HistGradientBoosting is left out on
purpose: skl2onnx 1.20 cannot convert it with onnx 1.23, and its float64 thresholds make the
ONNX regressor ~5 % off even when patched, so it would never pass fp32 parity.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from deploykit._progress import Reporter
from deploykit.data import Dataset, Split
from deploykit.errors import ModelFolderError
from deploykit.signature import Signature, TensorSpec
from deploykit.training.common import FitResult, TrainConfig, primary_metric

MODEL_FILE = "model.skops"
# Types a saved deploykit Pipeline may contain; anything else in a .skops file is refused.
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.")
# Types as values, not code: make_column_selector(dtype_include=object) holds the class.
TRUSTED_TYPES = {"builtins.object", "builtins.str", "builtins.int", "builtins.float",
                 "builtins.bool"}


def candidates(task: str, seed: int) -> dict[str, tuple[Any, dict[str, list]]]:
    """Candidate family -> (estimator, grid). Kept small: the whole search runs in seconds."""
    from sklearn import calibration, ensemble, linear_model, neural_network, svm

    if task == "classification":
        return {
            "logistic_regression": (linear_model.LogisticRegression(max_iter=3000),
                                    {"C": [0.1, 1.0, 10.0]}),
            # SVC(probability=True) is deprecated in sklearn 1.9: calibrate explicitly.
            "svm_rbf": (calibration.CalibratedClassifierCV(svm.SVC(), ensemble=False),
                        {"estimator__C": [1.0, 10.0]}),
            "random_forest": (ensemble.RandomForestClassifier(n_estimators=150, random_state=seed),
                              {"max_depth": [None, 12]}),
            "mlp": (neural_network.MLPClassifier((128,), max_iter=400, random_state=seed),
                    {"alpha": [1e-4, 1e-2]}),
        }
    return {
        "ridge": (linear_model.Ridge(), {"alpha": [0.1, 1.0, 10.0]}),
        "random_forest": (ensemble.RandomForestRegressor(n_estimators=150, random_state=seed),
                          {"max_depth": [None, 8]}),
    }


def fit(split: Split, workdir: Path, cfg: TrainConfig) -> FitResult:
    """Grid-search every family, keep the best, save it as ``model.skops``."""
    import skops.io as sio
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
    from sklearn.pipeline import Pipeline

    task = split.dataset.task
    cv = (StratifiedKFold if task == "classification" else KFold)(3, shuffle=True,
                                                                   random_state=cfg.seed)
    scoring = primary_metric(task)
    results, best = [], None
    families = candidates(task, cfg.seed)
    report = Reporter(cfg.quiet)
    with report.task("sklearn grid search", total=len(families)) as advance:
        for name, (estimator, grid) in families.items():
            pipe = Pipeline([("scale", scaling(split.dataset)), ("model", estimator)])
            search = GridSearchCV(pipe, {f"model__{k}": v for k, v in grid.items()},
                                  scoring=scoring, cv=cv, n_jobs=1)
            with warnings.catch_warnings():  # a non-converged candidate shows in its CV score
                warnings.simplefilter("ignore", ConvergenceWarning)
                search.fit(split.X_train, split.y_train)
            params = {k.removeprefix("model__"): v for k, v in search.best_params_.items()}
            results.append({"family": name, "cv_score": round(float(search.best_score_), 4),
                            "params": params})
            if best is None or search.best_score_ > best[1].best_score_:
                best = (name, search)
            advance(status=f"{name}: cv {scoring} {search.best_score_:.4f}")
    name, search = best
    model = search.best_estimator_
    sio.dump(model, workdir / MODEL_FILE)
    selection = {"metric": scoring, "cv_folds": 3, "chosen": name,
                 "cv_score": round(float(search.best_score_), 4), "candidates": results}
    return FitResult(
        framework="sklearn", files={"model": MODEL_FILE},
        val_outputs=predict(model, split.X_val, task),
        probe_outputs=predict(model, split.X_probe, task),
        model={"kind": name, "estimator": type(model[-1]).__name__,
               "params": {k.removeprefix("model__"): _jsonable(v)
                          for k, v in search.best_params_.items()}},
        selection=selection, versions={"skops": _version("skops")})


def scaling(ds: Dataset):
    """What comes before the model: numbers standardised, and a column of words (its codes,
    :attr:`Dataset.words`) one-hot encoded over all of its words, so none is unknown."""
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    if not ds.words:
        return StandardScaler()
    coded = [w.column for w in ds.words]
    numbers = [j for j in range(ds.n_features) if j not in coded]
    codes = [np.arange(len(w.words), dtype=np.float64) for w in ds.words]
    branches = [("words", OneHotEncoder(categories=codes, sparse_output=False), coded)]
    return ColumnTransformer(branches + [("numbers", StandardScaler(), numbers)] * bool(numbers))


def predict(model, X: np.ndarray, task: str) -> dict[str, np.ndarray]:
    """Named outputs of a fitted estimator: ``label`` + ``probabilities``, or ``predictions``."""
    if task == "classification":
        return {"label": class_positions(model.classes_, model.predict(X)),
                "probabilities": model.predict_proba(X).astype(np.float32)}
    out = model.predict(X).astype(np.float32)
    return {"predictions": out.reshape(len(out), -1)}  # a column per target


def class_positions(classes, predicted: np.ndarray) -> np.ndarray:
    """The position in ``classes`` of each predicted class value: a classifier's ``label``
    output, whatever its classes are (``["cat", "dog"]``, ``[1, 2, 3]``); the manifest's labels
    name them."""
    classes = np.asarray(classes)
    order = np.argsort(classes, kind="stable")
    at = np.searchsorted(classes, predicted, sorter=order).clip(0, len(classes) - 1)
    return order[at].astype(np.int64)


def signature(split: Split) -> Signature:
    ds = split.dataset
    if ds.task == "classification":
        outs = [TensorSpec("label", "int64", (None,)),
                TensorSpec("probabilities", "float32", (None, ds.n_outputs))]
    else:
        outs = [TensorSpec("predictions", "float32", (None, 1))]
    return Signature.single(ds.n_features, outs, columns=ds.columns, words=ds.words,
                            filled=ds.filled)


def load(folder: Path):
    """Load a model folder's ``model.skops``."""
    return load_estimator(folder / MODEL_FILE)


def load_estimator(path: Path):
    """Load a ``.skops`` file, trusting only scikit-learn, numpy and scipy types."""
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    foreign = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)
               and t not in TRUSTED_TYPES]
    if foreign:
        raise ModelFolderError(f"{path} contains types deploykit does not trust: {foreign}; "
                               f"it loads scikit-learn, numpy and scipy types (a function or "
                               f"a class of your own needs a scikit-learn equivalent)")
    return sio.load(path, trusted=untrusted)


def _jsonable(v: Any) -> Any:
    return v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)


def _version(name: str) -> str:
    from importlib import metadata

    return metadata.version(name)
