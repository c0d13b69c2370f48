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

from deploykit.sklearn_compile.base import UnsupportedEstimator
from deploykit.sklearn_compile.estimators import decision, final, supported, transform
from deploykit.sklearn_compile.program import Program

__all__ = ["UnsupportedEstimator", "decision", "final", "supported", "to_keras", "transform"]


def to_keras(est: Any, n_features: int, *, classify: bool, missing: bool = False) -> Any:
    """The fitted ``est`` as a ``keras.Model`` on float32 rows of ``n_features`` (``missing``:
    rows may hold NaN for missing values, which trees then route as scikit-learn does).

    Raises:
        UnsupportedEstimator: naming the estimator or option, and what is supported.
    """
    import keras

    from deploykit.sklearn_compile.program import as_layer

    p = Program(missing)
    out = final(est, p, p.input)
    p.outputs = [p.add("argmax", out), out] if classify else [out]
    x = keras.Input((n_features,), name="x", dtype="float32")
    ys = as_layer(p, name="sklearn")(x)
    names = ["label", "probabilities"] if classify else ["predictions"]
    ys = [keras.layers.Identity(name=n)(y) for n, y in zip(names, ys if classify else [ys],
                                                            strict=True)]
    return keras.Model(x, ys, name="sklearn_compiled")
