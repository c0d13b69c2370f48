"""Keras source node (a ``.keras`` file) and its edges out of Keras.

A ``.keras`` file does not depend on the backend it was trained with, so each edge reloads
it in a worker whose Keras runs on the backend that edge needs: TensorFlow for SavedModel,
PyTorch for a ``torch.export`` program (from which TorchScript, ExecuTorch, ... follow).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploykit._lazy import require
from deploykit.graph import EdgeContext, edge, node

node("keras", "keras", description="Keras 3 model (.keras)")


def _load(src: Path):
    keras = require("keras", purpose="to convert a Keras model")
    return keras, keras.saving.load_model(src, safe_mode=True)


@edge("keras", "saved_model", requires=("keras", "tensorflow"), keras_backend="tensorflow")
def keras_to_saved_model(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    """Keras's own export, in the TF Serving layout ``NAME/1/``."""
    keras, model = _load(src)
    target = out / "model" / "1"
    model.export(str(target), format="tf_saved_model", verbose=False)
    return {"file": "model/1", "versions": {"keras": keras.__version__}}


def as_torch_module(src: Path):
    """The ``.keras`` model as a ``torch.nn.Module`` (the worker runs Keras on torch)."""
    keras, model = _load(src)
    torch = require("torch")
    if keras.backend.backend() != "torch":
        raise RuntimeError(f"Keras runs on {keras.backend.backend()}, expected torch")

    class KerasAsTorch(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x, training=False)

    return KerasAsTorch().eval()


@edge("keras", "torch", requires=("keras", "torch"), keras_backend="torch", cost=1.5)
def keras_to_torch(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    """Reload under the torch backend and ``torch.export`` it with a dynamic batch."""
    from deploykit.formats.torch_program import export_program

    torch = require("torch")
    keras = require("keras")
    export_program(as_torch_module(src), ctx.signature, out / "model.pt2")
    return {"file": "model.pt2", "versions": {"keras": keras.__version__,
                                              "torch": torch.__version__}}
