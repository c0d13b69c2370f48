from __future__ import annotations

import sys

import numpy as np
import pytest

from deploykit._lazy import require
from deploykit.errors import DeploykitError, InputError, MissingDependencyError
from deploykit.signature import Signature, TensorSpec, format_shape


def test_require_missing_names_the_extra():
    with pytest.raises(MissingDependencyError) as e:
        require("deploykit_no_such_framework", extra="tf", purpose="for a test")
    assert "pip install 'deploykit[tf]'" in str(e.value)
    assert "for a test" in str(e.value)
    assert isinstance(e.value, ImportError) and isinstance(e.value, DeploykitError)


def test_require_keeps_real_errors_of_installed_packages(tmp_path, monkeypatch):
    # A package that is installed but broken must show its own error, not "not installed".
    (tmp_path / "brokenpkg_dk.py").write_text("import missing_inner_dependency_dk\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as e:
        require("brokenpkg_dk")
    assert not isinstance(e.value, MissingDependencyError)
    assert e.value.name == "missing_inner_dependency_dk"
    sys.modules.pop("brokenpkg_dk", None)


def test_require_returns_module():
    assert require("json").dumps([1]) == "[1]"


SIG = Signature.single(4, [TensorSpec("probabilities", "float32", (None, 3))])


def test_signature_accepts_any_batch_and_casts_ints():
    for n in (1, 7, 100):
        out = SIG.validate(np.ones((n, 4), dtype=np.int64))
        assert out["x"].dtype == np.float32 and out["x"].shape == (n, 4)


@pytest.mark.parametrize("value, words", [
    (np.ones((2, 5), np.float32), "expected shape [batch, 4], got [2, 5]"),
    (np.ones((4,), np.float32), "expected shape [batch, 4]"),
    (np.array([["a", "b", "c", "d"]]), "expected numbers"),
    (np.array([[1, 2, np.nan, 4]], np.float32), "NaN or Inf"),
    (np.array([[1, 2, np.inf, 4]], np.float64), "NaN or Inf"),
])
def test_signature_rejects_bad_inputs(value, words):
    with pytest.raises(InputError) as e:
        SIG.validate(value)
    assert words in str(e.value)


def test_signature_rejects_floats_for_int_inputs_and_unknown_names():
    sig = Signature((TensorSpec("ids", "int64", (None, 2)),))
    with pytest.raises(InputError, match="expected dtype int64"):
        sig.validate(np.ones((1, 2), np.float32))
    with pytest.raises(InputError, match="missing \\['ids'\\]"):
        sig.validate({"idz": np.ones((1, 2), np.int64)})


def test_signature_round_trips_through_json_dict():
    assert Signature.from_dict(SIG.to_dict()) == SIG
    assert SIG.to_dict()["inputs"][0]["shape"] == [None, 4]
    assert format_shape((None, 8, 8, 1)) == "[batch, 8, 8, 1]"


def test_tensor_spec_rejects_bad_dims():
    with pytest.raises(ValueError):
        TensorSpec("x", "float32", (None, -3))
