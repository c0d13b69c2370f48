"""Compile fitted scikit-learn estimators to Keras models made of one tensor program.

:func:`to_keras` turns an estimator (or a Pipeline) into a ``keras.Model`` whose only layer
runs a :class:`~deploykit.sklearn_compile.program.Program` with ``keras.ops``: it runs under
both Keras backends and follows the Keras edges to SavedModel, TFLite, TF.js, ONNX,
TorchScript and ExecuTorch. Classifiers give ``label`` and ``probabilities`` (as
scikit-learn's ``predict`` and ``predict_proba``), regressors ``predictions`` ``[rows, 1]``.

What each estimator computes lives in :mod:`.estimators` (and :mod:`.trees`); ``SUPPORTED``
lists them. Anything else raises :class:`UnsupportedEstimator` naming it.
"""

from __future__ import annotations

from typing import Any

from deploykit.errors import ExportError
from deploykit.sklearn_compile import estimators as E
from deploykit.sklearn_compile import trees
from deploykit.sklearn_compile.program import Program


class UnsupportedEstimator(ExportError):
    """An estimator or option the compiler does not cover (the ONNX route may)."""


def supported() -> list[str]:
    """Every estimator class the compiler takes, sorted."""
    return sorted({"Pipeline", *E.TRANSFORM, *E.PROBA, *E.DECISION, *E.PREDICT,
                   *trees.CLASSIFIERS, *trees.REGRESSORS})


def _refuse(est: Any, what: str):
    raise UnsupportedEstimator(f"{E.name_of(est)} cannot be compiled as a {what}; supported: "
                               f"{', '.join(supported())}")


def transform(est: Any, p: Program, x: int) -> int:
    """A transformer (or a Pipeline of them)."""
    if E.name_of(est) == "Pipeline":
        return _steps(est, p, x, final_step=False)
    fn = E.TRANSFORM.get(E.name_of(est)) or _refuse(est, "transformer")
    return fn(est, p, x)


def decision(est: Any, p: Program, x: int) -> int:
    """A classifier's ``decision_function`` (what calibration builds on)."""
    fn = E.DECISION.get(E.name_of(est)) or _refuse(est, "decision function")
    return fn(est, p, x)


def final(est: Any, p: Program, x: int, before: Any = None) -> int:
    """A model's probabilities (classifier) or predictions (regressor), a Pipeline's included."""
    name = E.name_of(est)
    if name == "Pipeline":
        return _steps(est, p, x, final_step=True)
    if name in trees.CLASSIFIERS or name in trees.REGRESSORS:
        return trees.compile_ensemble(est, p, x, before)
    table = E.PROBA if hasattr(est, "predict_proba") else E.PREDICT
    fn = table.get(name) or _refuse(est, "classifier" if table is E.PROBA else "regressor")
    return fn(est, p, x)


def _steps(pipe: Any, p: Program, x: int, final_step: bool) -> int:
    """A Pipeline: its transformers, then its final model when ``final_step``. Per-feature
    scalers right before a tree model are folded into its thresholds (see :mod:`.trees`)."""
    steps = [s for _, s in pipe.steps if not (isinstance(s, str) or s is None)]
    body, end = (steps[:-1], steps[-1]) if final_step else (steps, None)
    folded = 0
    if end is not None and E.name_of(end) in trees.CLASSIFIERS + trees.REGRESSORS:
        while folded < len(body) and E.scaler_steps(body[len(body) - 1 - folded]):
            folded += 1
    for s in body[:len(body) - folded]:
        x = transform(s, p, x)
    if end is None:
        return x
    return final(end, p, x, _pipeline(body[len(body) - folded:]) if folded else None)


def _pipeline(steps: list[Any]) -> Any:
    from sklearn.pipeline import make_pipeline

    return steps[0] if len(steps) == 1 else make_pipeline(*steps)


def to_keras(est: Any, n_features: int, *, classify: bool) -> Any:
    """The fitted ``est`` as a ``keras.Model`` on float32 rows of ``n_features``.

    Raises:
        UnsupportedEstimator: naming the estimator or option, and what is supported.
    """
    import keras

    from deploykit.sklearn_compile.program import as_layer

    p = Program()
    out = final(est, p, p.input)
    p.outputs = [p.add("argmax", out), out] if classify else [out]
    x = keras.Input((n_features,), name="x", dtype="float32")
    ys = as_layer(p, name="sklearn")(x)
    names = ["label", "probabilities"] if classify else ["predictions"]
    ys = [keras.layers.Identity(name=n)(y) for n, y in zip(names, ys if classify else [ys],
                                                            strict=True)]
    return keras.Model(x, ys, name="sklearn_compiled")
