"""scikit-learn source node (a ``.skops`` file); its only edge leads to ONNX (see onnx.py).

The compiler in :mod:`deploykit.sklearn_compile` turns a fitted estimator into a Keras model
that reaches every other target from Python; its ``sklearn -> keras`` edge joins the graph
once its int8 artifacts pass (see the README's scikit-learn section)."""

from deploykit.graph import node

node("sklearn", "sklearn", description="scikit-learn estimator (.skops)")
