"""Bundle.predict: every artifact of the five digits bundles answers any batch size (the
runners of fixed-batch artifacts run chunks of their batch) with the original model's
outputs, within its parity profile."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import shared

import deploykit
from deploykit.errors import BundleError, InputError
from deploykit.parity import PROFILES

pytestmark = pytest.mark.slow  # opens every runtime on the shared digits bundles

BATCHES = (1, 2, 7)


def _within_profile(got: dict, ref: dict, profile: str, what: str) -> None:
    prof = PROFILES[profile]
    for name, want in ref.items():
        have = np.asarray(got[name])
        assert have.shape == want.shape, (what, name, have.shape, want.shape)
        if want.dtype.kind in "iu" or prof.atol is None:  # labels; int8 is judged by labels
            ours = have.reshape(len(have), -1)
            theirs = want.reshape(len(want), -1)
            agree = np.mean(ours.argmax(1) == theirs.argmax(1)) if ours.shape[1] > 1 \
                else np.mean(ours == theirs)
            assert agree >= (1.0 if profile == "fp32" else 0.98), (what, name, agree)
        else:
            np.testing.assert_allclose(have, want, atol=prof.atol, rtol=prof.rtol,
                                       err_msg=what)


@pytest.mark.parametrize("flow", shared.FLOWS)
def test_every_artifact_predicts_any_batch_like_the_original(flow):
    path = shared.digits([flow])[flow]["bundle"]
    with deploykit.load_bundle(path) as b:
        probe = b.probe()
        assert set(b.targets) == {a.target for a in b.artifacts} and len(b.targets) == 11
        for target in b.targets:
            profile = b.artifact(target).profile
            full = b.predict(probe.inputs, target=target)
            assert full.target == target
            _within_profile(full.outputs, probe.reference, profile, f"{target} at {probe.n}")
            for n in BATCHES:
                rows = {k: v[:n] for k, v in probe.inputs.items()}
                got = b.predict(rows, target=target).outputs
                if profile != "int8":  # int8 is judged on labels over the whole set
                    _within_profile(got, {k: v[:n] for k, v in probe.reference.items()},
                                    profile, f"{target} at {n}")
                for k, v in got.items():  # and what the whole set gave those rows
                    np.testing.assert_allclose(v, full.outputs[k][:n], atol=1e-5, rtol=1e-4,
                                               err_msg=f"{target} at {n}")


def test_the_default_artifact_takes_a_bare_array_and_names_labels():
    path = shared.digits(["torch"])["torch"]["bundle"]
    with deploykit.load_bundle(path) as b:
        probe = b.probe()
        x = probe.inputs["x"][:3]
        p = b.predict(x)  # a bare array for a model of one input
        assert p.target in b.targets and b.artifact(p.target).runs == "server"
        want = [b.labels[i] for i in probe.reference["probabilities"][:3].argmax(1)]
        assert p.labels == want
        tfl = b.predict({"x": x}, target="tflite")  # the case: fixed batch 1, 3 rows
        assert b.artifact("tflite").batch == 1 and tfl.labels == want
        with pytest.raises(BundleError, match="has no passing 'nope' artifact"):
            b.predict(x, target="nope")

        with pytest.raises(InputError, match="input 'x'"):
            b.predict(x[:, :10])
    assert not b._runners  # closed with the block


def test_a_file_changed_after_the_load_is_refused_when_its_runtime_opens(tmp_path):
    """Runtimes open on first use: a file changed after load_bundle ran unchecked."""
    import shutil

    path = shutil.copytree(shared.digits(["torch"])["torch"]["bundle"], tmp_path / "b")
    with deploykit.load_bundle(path) as b:
        x = b.probe().inputs["x"][:2]
        model = b.root / next(iter(b.artifact("onnx").files))
        good = model.read_bytes()
        model.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
        with pytest.raises(BundleError, match="does not match its sha256"):
            b.predict(x, target="onnx")
        model.write_bytes(good)
        assert b.predict(x, target="onnx").target == "onnx"


def test_threads_sharing_a_bundle_get_their_own_rows_answers():
    """A TFLite interpreter cannot be entered twice at once: threads sharing a Bundle got
    "at least 1 reference to internal data" (1,800 of 2,400 calls), or another row's
    answer. Each thread's rows, every server-side target, against the same rows run one by
    one in this thread (within its profile of the original model: the test above)."""
    from concurrent.futures import ThreadPoolExecutor

    path = shared.digits(["sklearn"])["sklearn"]["bundle"]
    with deploykit.load_bundle(path) as b:
        x = b.probe().inputs["x"]
        for target in [t for t in b.targets if b.artifact(t).runs == "server"]:
            alone = [b.predict(x[j:j + 1], target=target).outputs["probabilities"]
                     for j in range(len(x))]

            def rows(i: int, target=target, alone=alone) -> list[int]:
                return [int(np.abs(b.predict(x[j:j + 1], target=target)
                                   .outputs["probabilities"] - alone[j]).max() > 1e-6)
                        for j in range(i, len(x), 4)]
            with ThreadPoolExecutor(4) as ex:
                wrong = sum(sum(r) for r in ex.map(rows, range(4)))
            assert wrong == 0, (target, wrong)


def test_a_python_caller_sees_no_runtime_chatter_and_its_logger_gets_it(tmp_path):
    """deploykit as a library (no CLI run log to send output to): opening every artifact of
    a bundle in its runtime, TensorFlow and ExecuTorch imported for the first time, leaves
    the caller's stderr empty; what the runtimes print as they load goes to the
    ``deploykit.native`` logger instead, where a caller who wants it finds it."""
    path = shared.digits(["torch"])["torch"]["bundle"]
    script = f"""
import logging
import deploykit
log = logging.getLogger("deploykit.native")
log.addHandler(logging.FileHandler("native.log"))
log.setLevel(logging.DEBUG)
with deploykit.load_bundle({str(path)!r}) as b:
    probe = b.probe()
    for target in b.targets:
        b.predict(probe.inputs, target=target)
        print(target)
"""
    r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    with deploykit.load_bundle(path) as b:
        assert r.stdout.split() == b.targets
    assert {"saved_model", "tflite", "executorch"} <= set(b.targets)
    assert r.stderr == ""
    assert shared.CHATTER.search((tmp_path / "native.log").read_text())
