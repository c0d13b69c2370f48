"""The public API is typed and documented: every name ``deploykit`` exports (and the methods
of the bundle it loads) has annotated parameters and return, and a Google-style docstring
with its arguments and what it returns."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import deploykit
from deploykit.predicting import Bundle

FUNCTIONS = [n for n in deploykit.__all__ if n != "__version__"]
METHODS = ["predict", "verify", "close"]


def _check(f, what: str) -> None:
    sig = inspect.signature(f)
    bare = [p for p, v in sig.parameters.items() if v.annotation is inspect.Parameter.empty
            and p != "self"]
    assert not bare, f"{what}: parameters without a type: {bare}"
    assert sig.return_annotation is not inspect.Signature.empty, f"{what}: no return type"
    doc = inspect.getdoc(f) or ""
    assert doc, f"{what}: no docstring"
    takes = [p for p in sig.parameters if p != "self"]
    if takes:
        assert "Args:" in doc, f"{what}: docstring lists no Args"
        listed = doc[doc.index("Args:"):]
        for p in takes:
            assert p in listed, f"{what}: argument '{p}' not described"
    if sig.return_annotation not in (None, "None"):
        assert "Returns:" in doc or "Yields:" in doc, f"{what}: docstring says no Returns"


@pytest.mark.parametrize("name", FUNCTIONS)
def test_public_function_is_typed_and_documented(name):
    _check(getattr(deploykit, name), name)


@pytest.mark.parametrize("name", METHODS)
def test_bundle_method_is_typed_and_documented(name):
    _check(getattr(Bundle, name), f"Bundle.{name}")


def test_the_package_says_it_is_typed():
    assert (Path(deploykit.__file__).parent / "py.typed").is_file()
