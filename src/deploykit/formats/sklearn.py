"""scikit-learn source node (a ``.skops`` file) and its edge into Keras.

skl2onnx's edge to ONNX lives in onnx.py. The edge here compiles the estimator to a Keras
model made of one tensor program (:mod:`deploykit.sklearn_compile`), from which the Keras
edges reach SavedModel, TFLite, TF.js, TorchScript and ExecuTorch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploykit._lazy import require
from deploykit.graph import EdgeContext, edge, node

node("sklearn", "sklearn", description="scikit-learn estimator (.skops)")


@edge("sklearn", "keras", requires=("sklearn", "keras"), keras_backend="tensorflow")
def sklearn_to_keras(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    """Compile the fitted estimator to a Keras tensor program (classifiers: label and
    probabilities; regressors: predictions)."""
    keras = require("keras", purpose="to compile a scikit-learn model")
    sklearn = require("sklearn")
    from deploykit.sklearn_compile import to_keras
    from deploykit.training.sklearn_path import load_estimator

    names = [s["name"] for s in ctx.signature["outputs"]]
    x = ctx.signature["inputs"][0]
    model = to_keras(load_estimator(src), x["shape"][1], classify="probabilities" in names,
                     missing=x.get("missing", False))
    model.save(out / "model.keras")
    return {"file": "model.keras", "versions": {"scikit-learn": sklearn.__version__,
                                                "keras": keras.__version__}}
