"""deploykit: train along any path of the Python AI flowchart, export to every deployment
artifact, and prove each one predicts what the original model predicts.

The public API is imported lazily: ``import deploykit`` loads no ML framework.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["train", "load_model", "load_dataset", "split_dataset", "what_if", "export",
           "verify", "load_bundle", "__version__"]

_API = {
    "train": "deploykit.training",
    "load_model": "deploykit.training",
    "load_dataset": "deploykit.data",
    "split_dataset": "deploykit.data",
    "what_if": "deploykit.whatif",
    "export": "deploykit.exporting",
    "verify": "deploykit.exporting",
    "load_bundle": "deploykit.bundle",
}


def __getattr__(name: str) -> Any:  # PEP 562: resolve the API on first use
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'deploykit' has no attribute {name!r}")
