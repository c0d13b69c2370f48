"""TensorFlow SavedModel: node, runner. Edges into it live with their sources (keras.py);
a TensorFlow-core source *is* a SavedModel (see deploykit.sources)."""

from __future__ import annotations

from deploykit._lazy import require
from deploykit.formats.base import Runner, register_runner
from deploykit.graph import node

node("saved_model", "saved_model", column=0, serve_rank=7, extra="tf",
     distributions=("tensorflow", "tensorflow-cpu"),
     description="TensorFlow SavedModel, TF Serving layout NAME/1/")

SIGNATURE_KEY = "serving_default"


def serving_function(path):
    """The loaded ``serving_default`` concrete function and its input names."""
    tf = require("tensorflow", purpose="to load a SavedModel")
    loaded = tf.saved_model.load(str(path))
    if SIGNATURE_KEY not in loaded.signatures:
        raise ValueError(f"no '{SIGNATURE_KEY}' signature (has {list(loaded.signatures)})")
    fn = loaded.signatures[SIGNATURE_KEY]
    fn._deploykit_keepalive = loaded  # signatures only hold weak references to their object
    return fn, list(fn.structured_input_signature[1])


@register_runner("saved_model")
class SavedModelRunner(Runner):
    def _load(self) -> None:
        self.fn, self.input_names = serving_function(self.path)

    def _predict(self, inputs):
        tf = require("tensorflow")
        feed = {name: tf.constant(v) for name, v in self._feed(self.input_names, inputs).items()}
        return {k: v.numpy() for k, v in self.fn(**feed).items()}


def output_names(path) -> list[str]:
    """Output keys of the serving signature, in the order TF reports them."""
    fn, _ = serving_function(path)
    return list(fn.structured_outputs)


