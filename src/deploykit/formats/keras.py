"""Keras source node (a ``.keras`` file) and its edges out of Keras.

A ``.keras`` file does not depend on the backend it was trained with, so each edge reloads
it in a worker whose Keras runs on the backend that edge needs: TensorFlow for SavedModel,
PyTorch for a ``torch.export`` program (from which TorchScript, ExecuTorch, ... follow).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deploykit._lazy import require
from deploykit.errors import ExportError
from deploykit.formats.base import Runner, register_runner
from deploykit.graph import EdgeContext, edge, node

node("keras", "keras", description="Keras 3 model (.keras)")


def load_keras(src: Path, purpose: str = "to convert a Keras model"):
    """``(keras, model)`` for a ``.keras`` file, safe mode on; deploykit's own layers (the
    compiled scikit-learn program, the translated ONNX graph) are registered first."""
    keras = require("keras", purpose=purpose)
    from deploykit import onnx_keras
    from deploykit.sklearn_compile.program import layer_class

    layer_class()
    onnx_keras.layer_class()
    return keras, keras.saving.load_model(src, safe_mode=True)


@edge("keras", "saved_model", requires=("keras", "tensorflow"), keras_backend="tensorflow")
def keras_to_saved_model(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    """Keras's own export, in the TF Serving layout ``NAME/1/``."""
    keras, model = load_keras(src)
    model, options = unrolled(keras, model)
    tf = require("tensorflow")
    names = [s["name"] for s in ctx.signature["outputs"]]
    # any batch, unless the source fixed one (a graph that computes with its batch size)
    specs = [tf.TensorSpec(s["shape"], s["dtype"], name=s["name"]) for s in ctx.signature["inputs"]]

    def serve(*xs):  # inputs and outputs named as in deploykit's signature
        return dict(zip(names, ordered_outputs(model, call(model, xs)), strict=True))

    with _gelu_through_erf(tf):
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", serve, input_signature=specs)
        archive.write_out(str(out / "model" / "1"), verbose=False)
    return {"file": "model/1", "versions": {"keras": keras.__version__}, "options": options}


@contextmanager
def _gelu_through_erf(tf) -> Iterator[None]:
    """Keras's exact GELU, written with ``Erf`` while the SavedModel is traced. TensorFlow
    writes it with ``Erfc``, which neither ONNX (tf2onnx) nor TF.js has, so every
    transformer's ONNX and TF.js cells failed; ``0.5·x·(1 + erf(x/√2))`` is the same
    function (``erfc(-z) = 1 + erf(z)``). The approximate (tanh) form is left as it is."""
    from keras.src.backend.tensorflow import nn

    exact = nn.gelu

    def gelu(x, approximate=True):
        if approximate:
            return exact(x, approximate=True)
        x = tf.convert_to_tensor(x)
        return 0.5 * x * (1.0 + tf.math.erf(x * tf.cast(0.7071067811865476, x.dtype)))

    nn.gelu = gelu
    try:
        yield
    finally:
        nn.gelu = exact


@edge("onnx", "keras", requires=("onnx", "keras"), keras_backend="tensorflow", cost=2.0)
def onnx_to_keras(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    """deploykit's ONNX → ``keras.ops`` translator (:mod:`deploykit.onnx_keras`): the bridge
    from TensorFlow models to the PyTorch targets and from PyTorch programs to SavedModel and
    TF.js. It costs more than any direct route, so only sources without one take it."""
    keras = require("keras", purpose="to translate ONNX into Keras")
    onnx = require("onnx")
    from deploykit.onnx_keras import to_keras

    to_keras(src, ctx.signature).save(out / "model.keras")
    return {"file": "model.keras", "versions": {"onnx": onnx.__version__,
                                                "keras": keras.__version__}}


def call(model, xs):
    """The model on positional inputs (one tensor, or a list for several inputs)."""
    return model(xs[0] if len(xs) == 1 else list(xs), training=False)


def output_names(model) -> list[str]:
    """A Keras model's output names: a functional model's own, else (a ``Sequential``,
    which has none) its last layer's name."""
    names = getattr(model, "output_names", None)
    return list(names) if names else [model.layers[-1].name]


def ordered_outputs(model, y) -> list:
    """The model's outputs as a list in :func:`output_names` order (the signature's)."""
    if isinstance(y, dict):
        return [y[n] for n in output_names(model)]
    return list(y) if isinstance(y, (list, tuple)) else [y]


UNROLL_WHY = ("recurrent layers unrolled over their fixed sequence length: the TFLite, "
              "tf2onnx and TF.js converters cannot carry Keras's while-loop (TensorList ops)")


def unrolled(keras, model):
    """The model with its recurrent layers unrolled, when it has any and its sequence length
    is fixed (the SavedModel computes the same; parity proves it), plus the option recorded.
    With a dynamic sequence length the model is returned as it is."""
    def clone(layer):
        config = layer.get_config()
        _unroll(config)
        return layer.__class__.from_config(config)

    # also those wrapped in a Bidirectional or a TimeDistributed, or in a nested model
    every = model._flatten_layers(include_self=False, recursive=True)
    if not any(isinstance(layer, keras.layers.RNN) for layer in every):
        return model, {}
    if any(None in tuple(i.shape)[1:] for i in model.inputs):
        return model, {}
    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy, {"unroll_recurrent": UNROLL_WHY}


def _unroll(config: Any) -> None:
    """Set ``unroll`` in a layer's config and in every layer config nested in it (a
    Bidirectional's two, a nested model's layers): only recursive layers have the key."""
    if isinstance(config, dict):
        if "unroll" in config:
            config["unroll"] = True
        for value in config.values():
            _unroll(value)
    elif isinstance(config, list):
        for value in config:
            _unroll(value)


def as_torch_module(src: Path):
    """The ``.keras`` model as a ``torch.nn.Module`` (the worker runs Keras on torch)."""
    keras, model = load_keras(src)
    torch = require("torch")
    if keras.backend.backend() != "torch":
        raise RuntimeError(f"Keras runs on {keras.backend.backend()}, expected torch")

    class KerasAsTorch(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *xs):
            ys = ordered_outputs(self.model, call(self.model, xs))
            return ys[0] if len(ys) == 1 else tuple(ys)

    return KerasAsTorch().eval()


@edge("keras", "torch", requires=("keras", "torch"), keras_backend="torch", cost=1.5)
def keras_to_torch(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    """Reload under the torch backend and ``torch.export`` it with a dynamic batch, without
    the nodes Keras-on-torch adds that never change a value (see
    :func:`~deploykit.formats.torch_program.simplified`): every PyTorch edge loads it."""
    from deploykit.formats.torch_program import export_program, simplified

    torch = require("torch")
    keras = require("keras")
    try:
        program = export_program(as_torch_module(src), ctx.signature)
    except Exception as e:
        if "Constraints violated (batch)" not in str(e):
            raise
        raise ExportError("torch.export cannot give this Keras model a dynamic batch: on the "
                          "torch backend it computes with the batch size (an Embedding's "
                          "mask_zero feeding a recurrent layer does), so no target is made "
                          "through torch.export from it; targets on other routes stand") from None
    torch.export.save(simplified(program), out / "model.pt2")
    return {"file": "model.pt2", "versions": {"keras": keras.__version__,
                                              "torch": torch.__version__}}


@register_runner("keras")
class KerasRunner(Runner):
    """A ``.keras`` file on the Keras backend of this process (an intermediate; checks the
    edges into Keras)."""

    def _load(self) -> None:
        _, self.model = load_keras(self.path, purpose="to run a Keras model")

    def _predict(self, inputs):
        xs = list(inputs.values())
        return ordered_outputs(self.model, self.model.predict(xs[0] if len(xs) == 1 else xs,
                                                              verbose=0))
