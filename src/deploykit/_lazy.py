"""Import heavy frameworks on first use, with an error naming the extra to install.

``import tensorflow`` costs seconds and hundreds of MB, so no deploykit module imports a
framework at top level; code that needs one calls :func:`require` where it is used.
"""

from __future__ import annotations

import importlib
import importlib.abc
import os
import sys
from types import ModuleType

from deploykit._runlog import native_output_logged
from deploykit.errors import MissingDependencyError

# import name -> deploykit extra that installs it
EXTRAS: dict[str, str] = {
    "tensorflow": "tf",
    "keras": "tf",
    "torch": "torch",
    "executorch": "mobile",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "skl2onnx": "onnx",
    "tf2onnx": "onnx",
    "ai_edge_litert": "edge",
    "litert_torch": "litert",
    "ai_edge_quantizer": "litert",
    "flask": "serve",
    "pandas": "tables",
}


def _quiet_tensorflow() -> None:
    # TensorFlow prints C++ INFO lines on import; keep real warnings and errors.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# Loggers that announce deprecations of the frameworks' own internals when a package imports
# (torchao, pulled in by executorch and litert-torch, registers enums with torch's pytree and
# torch logs a warning per enum). Nothing a user can act on: only errors are kept.
NOISY_ON_IMPORT = {"executorch": ("torch.utils._pytree",), "litert_torch": ("torch.utils._pytree",),
                   "torchao": ("torch.utils._pytree",)}


def _errors_only(record) -> bool:
    import logging

    return record.levelno >= logging.ERROR


def _quiet_loggers(top: str) -> None:
    # a filter, unlike a level, survives torch resetting its loggers' levels
    import logging

    for name in NOISY_ON_IMPORT.get(top, ()):
        logging.getLogger(name).addFilter(_errors_only)


# Imports the frameworks make on their way in for features deploykit never uses, by the module
# that makes them; each importer takes an ImportError as "not installed". TensorFlow's TFLite
# utilities import jax for ``experimental_from_jax`` and Keras's Orbax callback to patch old
# versions; Keras imports pandas to accept DataFrames in ``fit`` and scikit-learn for its
# scikit-learn wrappers; TensorFlow's legacy ``tf.compat.v1`` Keras imports scipy for sparse
# inputs. deploykit hands the frameworks numpy arrays. Together 1.6 s of CPU in every worker
# and CLI process that imports TensorFlow or Keras (0.6 s of it jax).
UNUSED_ON_IMPORT: dict[str, frozenset[str]] = {
    "jax": frozenset({"tensorflow.lite.python.util", "keras.src.callbacks.orbax_checkpoint"}),
    "pandas": frozenset({"keras.src.trainers.data_adapters.array_slicing"}),
    "sklearn": frozenset({"keras.src.wrappers.fixes", "keras.src.wrappers.sklearn_wrapper",
                          "keras.src.wrappers.utils"}),
    "scipy": frozenset({"tensorflow.python.keras.engine.training_v1",
                        "tensorflow.python.keras.engine.training_arrays_v1"}),
}


class _SkipUnused(importlib.abc.MetaPathFinder):
    """Refuses an import listed in :data:`UNUSED_ON_IMPORT` when that importer makes it."""

    def find_spec(self, fullname, path=None, target=None):
        importers = UNUSED_ON_IMPORT.get(fullname)
        importer = _importer() if importers else ""
        if importer in (importers or ()):
            raise ModuleNotFoundError(f"{fullname} is not imported for {importer} here",
                                      name=fullname)
        return None


def _importer() -> str:
    """The module whose code runs the import being looked up (the first frame outside the
    import machinery and this module)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") in (
            __name__, "importlib._bootstrap", "importlib._bootstrap_external"):
        frame = frame.f_back
    return frame.f_globals.get("__name__", "") if frame is not None else ""


def skip_unused_imports() -> None:
    """In deploykit's own processes (the CLI, converter workers), let the frameworks skip the
    imports in :data:`UNUSED_ON_IMPORT`. Any other importer still gets them (litert-torch
    needs jax), and so does everyone once they are imported; a user's own process is left
    alone (TensorFlow would lose ``TFLiteConverter.experimental_from_jax`` there, Keras its
    DataFrame inputs and scikit-learn wrappers)."""
    if not any(isinstance(f, _SkipUnused) for f in sys.meta_path):
        sys.meta_path.insert(0, _SkipUnused())


def require(module: str, *, extra: str | None = None, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra.

    Args:
        module: dotted import name, e.g. ``"tensorflow"`` or ``"torch.export"``.
        extra: the deploykit extra that provides it; looked up in :data:`EXTRAS` by the
            top-level package name when omitted.
        purpose: a few words on why it is needed, shown in the error.
    """
    top = module.split(".")[0]
    if top in ("tensorflow", "keras"):
        _quiet_tensorflow()
    _quiet_loggers(top)
    try:
        if module in sys.modules:  # imported, or being imported by another thread: wait
            return importlib.import_module(module)
        with native_output_logged():  # TensorFlow's first import prints oneDNN lines
            return importlib.import_module(module)
    except ModuleNotFoundError as e:
        # Only translate the error when the package itself is missing, not when it is
        # installed but one of *its* imports fails: that deserves the real traceback.
        if e.name is not None and e.name.split(".")[0] != top:
            raise
        raise MissingDependencyError(module, extra or EXTRAS.get(top, "all"), purpose) from e
