"""deploykit: train along any path of the Python AI flowchart, export to every deployment
artifact, and prove each one predicts what the original model predicts.

The public API is imported lazily: ``import deploykit`` loads no ML framework.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["train", "load_model", "load_dataset", "split_dataset", "what_if", "export",
           "export_many", "verify", "load_bundle", "workers", "__version__"]

_API = {  # name -> "module:attribute"
    "train": "deploykit.training:train",
    "load_model": "deploykit.training:load_model",
    "load_dataset": "deploykit.data:load_dataset",
    "split_dataset": "deploykit.data:split_dataset",
    "what_if": "deploykit.whatif:what_if",
    "export": "deploykit.exporting:export",
    "export_many": "deploykit.exporting:export_many",
    "verify": "deploykit.exporting:verify",
    "load_bundle": "deploykit.predicting:load_bundle",  # a Bundle that predicts
    "workers": "deploykit.worker:pool",  # `with deploykit.workers():` shares worker processes
}


def __getattr__(name: str) -> Any:  # PEP 562: resolve the API on first use
    if name in _API:
        import importlib

        module, _, attr = _API[name].partition(":")
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'deploykit' has no attribute {name!r}")
