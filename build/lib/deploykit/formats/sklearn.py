"""scikit-learn source node (a ``.skops`` file); its only edge leads to ONNX (see onnx.py)."""

from deploykit.graph import node

node("sklearn", "sklearn", description="scikit-learn estimator (.skops)")
