from __future__ import annotations

import logging
import os
import sys
import threading

import numpy as np
import pytest

from deploykit._lazy import require
from deploykit._runlog import native_output_logged
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


def _native_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "deploykit.native"]


def test_overlapping_native_windows_log_both_and_give_stderr_back(caplog):
    """Two runners loading in two threads: what native code writes to descriptor 2 in
    either window reaches the logger once both end, and descriptor 2 is the caller's again
    (the first to leave must not restore it under the other)."""
    before = os.fstat(2)
    inner_started, outer_done = threading.Event(), threading.Event()

    def inner() -> None:
        with native_output_logged():
            os.write(2, b"inner runtime says hello\n")
            inner_started.set()
            outer_done.wait(10)
            os.write(2, b"inner runtime after outer left\n")

    with caplog.at_level(logging.DEBUG, logger="deploykit.native"):
        thread = threading.Thread(target=inner)
        with native_output_logged():
            os.write(2, b"outer runtime says hello\n")
            thread.start()
            assert inner_started.wait(10)
        assert not _native_records(caplog)  # the inner window still holds descriptor 2
        outer_done.set()
        thread.join(10)
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    [record] = _native_records(caplog)
    assert record.levelno == logging.DEBUG
    for said in ("outer runtime says hello", "inner runtime says hello",
                 "inner runtime after outer left"):
        assert said in record.getMessage()


def test_what_a_runtime_printed_as_it_failed_is_a_warning(caplog):
    with caplog.at_level(logging.DEBUG, logger="deploykit.native"), \
            pytest.raises(RuntimeError, match="cannot load"):
        with native_output_logged():
            os.write(2, b"ERROR: Didn't find op for builtin opcode\n")
            raise RuntimeError("cannot load")
    [record] = _native_records(caplog)
    assert record.levelno == logging.WARNING and "builtin opcode" in record.getMessage()


def test_a_runner_loading_and_running_first_keeps_the_runtimes_chatter_off_stderr(
        tmp_path, capfd, caplog):
    """What a runtime prints as it loads and on its first run (TensorFlow's oneDNN notes on a
    SavedModel's first call) reaches the logger, not the caller's stderr; later runs are
    left alone (the window costs a temporary file)."""
    from deploykit.formats.base import Runner

    class Loud(Runner):
        def _load(self) -> None:
            os.write(2, b"runtime: loaded\n")

        def _predict(self, inputs):
            os.write(2, b"runtime: first kernel chosen\n")
            return [inputs["x"] * 2]

    with caplog.at_level(logging.DEBUG, logger="deploykit.native"):
        runner = Loud(tmp_path, Signature.single(3, [TensorSpec("y", "float32", (None, 3))]))
        got = runner.predict(np.ones((2, 3), np.float32))
        assert capfd.readouterr().err == ""
        runner.predict(np.ones((2, 3), np.float32))
    assert capfd.readouterr().err == "runtime: first kernel chosen\n"
    np.testing.assert_array_equal(next(iter(got.values())), np.full((2, 3), 2, np.float32))
    said = "".join(r.getMessage() for r in _native_records(caplog))
    assert "runtime: loaded" in said and "first kernel chosen" in said
