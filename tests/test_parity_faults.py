"""A probe set that can detect a fault: faults planted in artifacts of three model families
are caught by parity in the artifacts' own runtimes, and agreement that proves nothing
(a constant model, a one-row sample) is reported ``vacuous``, not ``pass``."""

from __future__ import annotations

import numpy as np
import pytest
from sources_for_tests import N_FEATURES, keras_model, sample

import deploykit
from deploykit import formats
from deploykit.parity import ParityResult, Probe, check


def _check_file(bundle, target: str, path, any_batch: bool = False) -> ParityResult:
    """Parity of a (tampered) artifact file against the bundle's probe set (with
    ``any_batch``, held to the dynamic batch a user expects, whatever the bundle recorded)."""
    b = deploykit.load_bundle(bundle)
    art = b.artifact(target)
    if any_batch:
        art = art.replace(batch=None)
    runner = formats.open_runner(art.runtime, path, art.signature(b.signature), art.outputs)
    try:
        return check(target, art.profile, runner.predict, b.probe())
    finally:
        runner.close()


@pytest.mark.slow
def test_perturbed_tree_weights_in_onnx_are_caught(tmp_path):
    """scikit-learn family: every leaf value of a boosted-trees ONNX file moved by 1 %."""
    import onnx
    from onnx import helper
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import GradientBoostingClassifier

    X, y = load_breast_cancer(return_X_y=True)
    X = X.astype(np.float32)
    model = GradientBoostingClassifier(n_estimators=20, random_state=0).fit(X, y)
    r = deploykit.export(model, ["onnx"], out=tmp_path / "b", sample=X[:200], quiet=True)
    assert r.ok
    path = tmp_path / "b" / deploykit.load_bundle(tmp_path / "b").artifact("onnx").path
    m = onnx.load(path)
    trees = next(n for n in m.graph.node if n.op_type.startswith("TreeEnsemble"))
    for i, a in enumerate(trees.attribute):
        if a.name in ("class_weights", "target_weights"):
            trees.attribute[i].CopyFrom(helper.make_attribute(a.name, [w * 1.01 for w in a.floats]))
    onnx.save(m, tmp_path / "tampered.onnx")
    result = _check_file(tmp_path / "b", "onnx", tmp_path / "tampered.onnx")
    assert result.status == "fail" and "exceeds atol" in " ".join(result.failures)


@pytest.mark.slow
def test_swapped_outputs_in_tflite_are_caught(tmp_path):
    """Keras family: a .tflite whose first two classes are swapped (its last layer's columns)."""
    import keras

    model = keras_model()
    x = sample(160)
    deploykit.export(model, ["tflite"], out=tmp_path / "b", sample=x, quiet=True)
    swapped = keras.models.clone_model(model)
    weights = model.get_weights()
    weights[-2], weights[-1] = weights[-2][:, [1, 0, 2]], weights[-1][[1, 0, 2]]
    swapped.set_weights(weights)
    deploykit.export(swapped, ["tflite"], out=tmp_path / "s", sample=x, quiet=True)
    art = deploykit.load_bundle(tmp_path / "s").artifact("tflite")
    result = _check_file(tmp_path / "b", "tflite", tmp_path / "s" / art.path)
    assert result.status == "fail"
    assert any("probabilities" in f for f in result.failures)


@pytest.mark.slow
def test_a_batch_baked_into_torchscript_is_caught(tmp_path):
    """PyTorch family: a TorchScript traced with the batch size turned into a constant (a
    Python int from x.shape), the silent failure of tracing."""
    import torch

    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self, bake: bool):
            super().__init__()
            self.fc, self.bake = torch.nn.Linear(N_FEATURES, 3), bake

        def forward(self, x):
            n = int(x.shape[0]) if self.bake else x.shape[0]  # int(): traced as a constant
            return torch.softmax(self.fc(x).reshape(n, 3), dim=1)

    net, baking = Net(bake=False).eval(), Net(bake=True).eval()
    baking.load_state_dict(net.state_dict())
    x = sample(64)
    assert deploykit.export(net, ["torchscript"], out=tmp_path / "b", sample=x, quiet=True).ok
    with torch.no_grad():
        baked = torch.jit.trace(baking, torch.from_numpy(x[:8]), check_trace=False)
    torch.jit.save(baked, str(tmp_path / "baked.pt"))
    result = _check_file(tmp_path / "b", "torchscript", tmp_path / "baked.pt", any_batch=True)
    assert result.status == "fail"
    assert "error" in result.batches["1"] and "error" in result.batches["64"]


def test_a_constant_reference_is_vacuous_not_pass():
    probe = Probe({"x": sample(64)}, {"probabilities": np.full((64, 10), 0.1, np.float32)})
    result = check("onnx", "fp32", lambda inputs: {"probabilities": np.full((len(inputs["x"]), 10),
                                                                           0.1, np.float32)}, probe)
    assert not result and result.status == "vacuous"
    assert "same outputs for every probe input" in result.vacuous


def test_a_varied_reference_that_agrees_passes():
    x = sample(64)
    probe = Probe({"x": x}, {"predictions": x[:, :1] * 2})
    result = check("onnx", "fp32", lambda inputs: {"predictions": inputs["x"][:, :1] * 2}, probe)
    assert result and result.status == "pass" and result.vacuous is None


def test_small_batches_run_the_first_rows_and_still_catch_rows_that_interact():
    """Batches of 1 and 7 run the probe's first rows only (each call a Node round trip for
    TF.js), the whole set every row. A model whose rows interact (each row scaled by its
    batch's mean, as a batch-norm left in training mode does) fails at every batch size."""
    from deploykit.parity import SMALL_BATCH_ROWS

    x = sample(100)
    probe = Probe({"x": x}, {"predictions": x[:, :1] * 2})
    calls: list[int] = []

    def predict(inputs):
        calls.append(len(inputs["x"]))
        return {"predictions": inputs["x"][:, :1] * 2}

    assert check("onnx", "fp32", predict, probe).status == "pass"
    assert SMALL_BATCH_ROWS < 100 and calls.count(1) == SMALL_BATCH_ROWS and calls[-1] == 100
    assert sum(calls) == 2 * SMALL_BATCH_ROWS + 100 and calls.count(7) == SMALL_BATCH_ROWS // 7
    result = check("onnx", "fp32", lambda inputs: {
        "predictions": inputs["x"][:, :1] * 2 / np.abs(inputs["x"][:, :1]).mean()}, probe)
    assert set(result.batches.values()) == {"mismatch"}, result.batches
    assert result.outputs[0].max_abs > 0.1


def test_an_artifact_that_runs_only_in_small_batches_fails_with_its_first_runs_stats():
    """A batch of 1 works, one of 7 is off by 0.5 (a chunk of 4 at the end too), the whole
    set raises: the batch sizes that broke are named, and the error statistics are those of
    the first run that gave outputs (batch 1, which agrees), not 'did not run'."""
    x = sample(100)
    probe = Probe({"x": x}, {"predictions": x[:, :1] * 2})

    def predict(inputs):
        n = len(inputs["x"])
        if n > 7:
            raise ValueError(f"expected at most 7 rows, got {n}")
        return {"predictions": inputs["x"][:, :1] * 2 + (0.5 if n > 1 else 0.0)}

    result = check("onnx", "fp32", predict, probe)
    assert result.status == "fail" and result.batches["1"] == "ok", result.batches
    assert result.batches["7"] == "mismatch" and "got 100" in result.batches["100"]
    assert result.max_abs == 0.0 and result.vacuous is None, result


@pytest.mark.parametrize("rows, profile, needed", [(1, "fp32", 16), (40, "int8", 100)])
def test_too_few_probe_rows_are_vacuous_and_say_how_many(rows, profile, needed):
    x = sample(rows)
    probe = Probe({"x": x}, {"probabilities": _softmax(x[:, :3])})
    result = check("t", profile, lambda inputs: {"probabilities": _softmax(inputs["x"][:, :3])},
                   probe)
    assert result.status == "vacuous"
    assert f"has {rows} row" in result.vacuous and f"at least {needed}" in result.vacuous
    assert "pass more sample rows" in result.vacuous


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.slow
def test_one_sample_row_from_the_cli_fails_and_asks_for_more(tmp_path):
    """What a user passing one row sees: exit 1, the cell ``vacuous``, and what to do."""
    import skops.io
    from conftest import run_cli
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    skops.io.dump(LogisticRegression(max_iter=500).fit(X, y), tmp_path / "model.skops")
    np.save(tmp_path / "one.npy", X[:1].astype(np.float32))
    r = run_cli("export", str(tmp_path / "model.skops"), "--sample", str(tmp_path / "one.npy"),
                "--to", "onnx", "--out", str(tmp_path / "b"), "--quiet")
    said = r.stdout + r.stderr
    assert r.returncode == 1, said
    assert "the probe set has 1 row" in said, said
    assert "pass more sample rows (--sample; sample= in Python)" in said, said
    assert "Traceback" not in said
    assert deploykit.load_bundle(tmp_path / "b").artifact("onnx").parity.status == "vacuous"


def _swap_two_classes(p: np.ndarray) -> np.ndarray:
    return p[:, [1, 0, *range(2, p.shape[1])]]


@pytest.mark.parametrize("name", ["probabilities", "probs"])
def test_int8_judges_a_classifier_by_its_scores_whatever_the_output_is_named(name):
    """int8 has no tolerance: a classifier is judged by label agreement alone. Found only
    under ``probabilities``, so a user's ONNX classifier with output ``probs`` passed int8
    with its classes swapped: nothing was compared."""
    x = sample(200)
    probe = Probe({"x": x}, {name: _softmax(x[:, :3] * 4)})
    same = check("t", "int8", lambda inputs: {name: _softmax(inputs["x"][:, :3] * 4)}, probe)
    assert same.status == "pass" and same.label_agreement == 1.0, same
    swapped = check("t", "int8", lambda inputs: {name: _swap_two_classes(
        _softmax(inputs["x"][:, :3] * 4))}, probe)
    assert swapped.status == "fail" and "label agreement" in swapped.failures[0], swapped


def test_int8_reads_one_sigmoid_column_as_a_threshold_at_a_half():
    """One column: argmax always said class 0, so agreement was 100 % whatever the artifact
    gave; the label is whether the score reaches 0.5."""
    x = sample(200)
    sigmoid = lambda inputs: {"p": 1 / (1 + np.exp(-4 * inputs["x"][:, :1]))}  # noqa: E731
    probe = Probe({"x": x}, sigmoid({"x": x}))
    assert check("t", "int8", sigmoid, probe).status == "pass"
    flipped = check("t", "int8", lambda inputs: {"p": 1 - sigmoid(inputs)["p"]}, probe)
    assert flipped.status == "fail" and flipped.label_agreement < 0.2, flipped


def test_int8_on_a_classifier_without_labels_or_scores_compares_nothing_and_says_so():
    x = sample(200)
    probe = Probe({"x": x}, {"cls": (x[:, 0] > 0).astype(np.int64)})
    result = check("t", "int8", lambda inputs: {"cls": np.zeros(len(inputs["x"]), np.int64)},
                   probe)
    assert result.status == "vacuous" and "nothing was compared" in result.vacuous, result
