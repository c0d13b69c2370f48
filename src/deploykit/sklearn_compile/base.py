"""What the compiler's modules share: the error for what it does not cover."""

from __future__ import annotations

from typing import Any

from deploykit.errors import ExportError


class UnsupportedEstimator(ExportError):
    """An estimator or option the compiler does not cover (the ONNX route may)."""


def name_of(est: Any) -> str:
    return type(est).__name__


def unsupported(est: Any, what: str):
    raise UnsupportedEstimator(f"{name_of(est)}: {what} is not supported by deploykit's "
                               f"scikit-learn compiler")
