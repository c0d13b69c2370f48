"""scikit-learn source node (a ``.skops`` file); its only edge leads to ONNX (see onnx.py)."""

from deploykit.graph import node

node("sklearn", "sklearn", is_target=False, description="scikit-learn estimator (.skops)")
