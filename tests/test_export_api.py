"""The public export API on models the project did not train (random weights, built here)."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from sources_for_tests import keras_model, sample, tf_module, torch_model, two_headed_onnx

import deploykit

pytestmark = pytest.mark.slow  # exports user models to every runtime


def test_user_keras_model_exports_to_every_runtime_and_verifies(tmp_path):
    targets = ["saved_model", "tflite", "onnx", "torchscript", "ptl", "executorch"]
    r = deploykit.export(keras_model(), targets, out=tmp_path / "b", sample=sample(), quiet=True)
    assert [c.target for c in r.cells] == targets
    assert r.ok, {c.target: c.reason for c in r.cells}
    assert deploykit.verify(tmp_path / "b").ok
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["schema"] == "deploykit.bundle/2" and m["source"]["framework"] == "keras"
    for a in m["artifacts"]:
        assert a["sha256"] and a["bytes"] > 0 and a["route"][0] == "keras"
        assert a["parity"]["passed"] and set(a["parity"]["batches"]) == {"1", "7", "40"}
    art = {a["target"]: a for a in m["artifacts"]}
    assert art["saved_model"]["path"].endswith("model/1")  # TF Serving layout
    assert art["executorch"]["route"] == ["keras", "torch", "executorch"]


def test_user_torch_module_needs_a_sample(tmp_path):
    """Exported with one, to onnx, tflite (a fixed batch of 1) and executorch, predicted at
    any batch against the original: the README's From Python section (test_readme_python)."""
    from deploykit.errors import SourceError

    with pytest.raises(SourceError, match="pass sample="):
        deploykit.export(torch_model(), ["onnx"], out=tmp_path / "x", quiet=True)
    assert not (tmp_path / "x").exists()
    net = torch_model().train()  # a module mid-training: export reads it in eval mode
    assert deploykit.export(net, ["onnx"], out=tmp_path / "b", sample=sample(), quiet=True).ok
    assert net.training  # and hands it back as it came (it was left in eval mode)


def test_a_sample_file_is_read_as_the_cli_reads_it(tmp_path):
    """``sample="x.npy"`` was taken for an array of one string: "expected numbers of dtype
    float32, got <U80". A .npy file, or a test split's .npz (X beside y), is the array."""
    import numpy as np

    from deploykit.errors import DataError

    x = sample()
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "split.npz", X=x, y=np.zeros(len(x)))
    for i, path in enumerate((tmp_path / "x.npy", str(tmp_path / "split.npz"))):
        r = deploykit.export(torch_model(), ["onnx"], out=tmp_path / f"b{i}", sample=path,
                             quiet=True)
        assert r.ok, r.cells[0].reason
        np.testing.assert_array_equal(deploykit.load_bundle(tmp_path / f"b{i}").probe()
                                      .inputs["x"], x)
    (tmp_path / "bad.npy").write_text("not an array")
    with pytest.raises(DataError, match=r"cannot read sample .*bad\.npy"):
        deploykit.export(torch_model(), ["onnx"], out=tmp_path / "x", sample=tmp_path / "bad.npy",
                         quiet=True)
    assert not (tmp_path / "x").exists()


def test_an_empty_sample_is_refused_by_name(tmp_path):
    """A sample of 0 rows reached the model: an internal error (UnboundLocalError in Keras)."""
    from deploykit.errors import InputError

    for model in (torch_model(), keras_model()):
        with pytest.raises(InputError, match="the sample for input 'x' has no rows"):
            deploykit.export(model, ["onnx"], out=tmp_path / "x", sample=sample()[:0],
                             quiet=True)
        assert not (tmp_path / "x").exists()


def test_tf_core_module_exports_and_cli_inspect(tmp_path):
    r = deploykit.export(tf_module(), ["saved_model", "tflite", "onnx"], out=tmp_path / "b",
                         sample=sample(), quiet=True)
    assert r.ok, {c.target: c.reason for c in r.cells}
    out = run_cli("inspect", str(tmp_path / "b"))
    assert out.returncode == 0 and out.stdout.count("PASS") == 3


def test_export_cli_on_a_model_folder(tmp_path):
    t = run_cli("train", "--flow", "sklearn", "--data", "iris", "--out", str(tmp_path / "m"),
                "--quiet")
    assert t.returncode == 0, t.stderr
    r = run_cli("export", str(tmp_path / "m"), "--to", "onnx", "--out", str(tmp_path / "b"),
                "--quiet")
    assert r.returncode == 0, r.stderr
    assert "onnx" in r.stdout and "pass" in r.stdout
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["probe"]["targets"] == "probe/targets.npz"  # held-out labels came along
    assert m["artifacts"][0]["parity"]["metric"]["name"] == "accuracy"


def test_formats_prints_the_graph():
    r = run_cli("formats")
    assert r.returncode == 0
    assert "keras         -> saved_model" in r.stdout and "torch_to_executorch" in r.stdout


def test_a_torch_save_file_is_told_how_to_become_a_program(tmp_path):
    """A .pt (torch.save, torch.jit.save) was "not a model deploykit recognises" with no way
    forward."""
    from deploykit.errors import SourceError

    (tmp_path / "model.pt").write_bytes(b"PK\x03\x04 not read")
    with pytest.raises(SourceError, match=r"save it with torch.export.save as .pt2, or pass "
                                          r"the nn.Module from Python"):
        deploykit.export(tmp_path / "model.pt", "onnx", out=tmp_path / "b", quiet=True)


@pytest.mark.parametrize("name, expected", [
    ("model.onnx", "expected an ONNX model that onnxruntime loads"),
    ("model.keras", "expected a file of keras.Model.save"),
    ("model.skops", "expected a file of skops.io.dump"),
    ("model.pt2", "expected a program of torch.export.save (torch.save files are not programs)"),
])
def test_a_file_its_framework_cannot_load_is_one_typed_line(tmp_path, name, expected):
    """A corrupt file, or another kind under the suffix (a pickle named .skops, a torch.save
    state dict named .pt2): the framework's own exception was an "internal error, please
    report it" (exit 3). Now a one-line error saying what the file should be, the
    framework's traceback in the run log."""
    import pickle

    from zoo_check import in_process

    bad = tmp_path / name
    if name.endswith(".pt2"):
        import torch

        torch.save({"weight": torch.zeros(2, 2)}, bad)
    else:
        bad.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    code, text = in_process()("export", str(bad), "--to", "onnx", "--out", str(tmp_path / "b"))
    lines = text.strip().splitlines()
    assert code == 2 and len(lines) == 2, text
    assert lines[0].startswith(f"error: {bad}: cannot load it (") and expected in lines[0], text
    log = lines[1].removeprefix("details: ")
    assert "Traceback" in open(log).read() and not (tmp_path / "b").exists()


def test_a_regressor_of_several_targets_keeps_a_column_per_target(tmp_path):
    """Ridge fitted on two targets: its (n, 2) predictions were flattened into a (2n, 1)
    reference, so every target failed parity with "shape (150, 2) != reference (300, 1)"."""
    import numpy as np
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    y = np.column_stack([x @ rng.normal(size=5), x[:, 0] * 3 - x[:, 1]])
    model = Ridge().fit(x, y)
    targets = ["onnx", "tflite", "executorch"]
    r = deploykit.export(model, targets, out=tmp_path / "b", sample=x, quiet=True)
    assert r.ok, {c.target: c.reason for c in r.cells}
    with deploykit.load_bundle(tmp_path / "b") as b:
        assert b.signature.outputs[0].shape == (None, 2)
        for t in targets:
            got = b.predict(x[:20], target=t).outputs["predictions"]
            np.testing.assert_allclose(got, model.predict(x[:20]), rtol=1e-4, atol=1e-4)


def test_keras_exact_gelu_reaches_onnx_and_tfjs(tmp_path):
    """Keras's default GELU is exact; TensorFlow writes it with Erfc, which ONNX and TF.js
    lack, so every transformer failed both (onnx: "No Op registered for Erfc")."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    x_in = keras.Input((8,), name="x")
    h = keras.layers.Dense(16, activation="gelu")(x_in)
    model = keras.Model(x_in, keras.layers.Dense(3, activation="softmax")(h))
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    targets = ["onnx", "tfjs"]
    r = deploykit.export(model, targets, out=tmp_path / "b", sample=x, quiet=True)
    assert r.ok, {c.target: c.reason for c in r.cells}
    want = model.predict(x[:9], verbose=0)
    with deploykit.load_bundle(tmp_path / "b") as b:
        for t in targets:
            got = b.predict(x[:9], target=t).outputs["probabilities"]
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_a_binary_classifier_of_one_sigmoid_output_names_the_class_each_row_reaches(tmp_path):
    """A sigmoid head (the usual binary classifier in Keras or PyTorch) is two classes: the
    second wherever the score reaches 0.5, in Bundle.predict and in the server (both took
    the top of one column: always the first class); labels of the wrong count are refused."""
    import numpy as np
    import torch
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import StandardScaler

    from deploykit.errors import SourceError
    from deploykit.serve import create_app
    from deploykit.sources import detect

    X = StandardScaler().fit_transform(load_breast_cancer().data).astype(np.float32)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(30, 1), torch.nn.Sigmoid()).eval()
    with torch.no_grad():
        score = net(torch.from_numpy(X)).numpy()[:, 0]
    want = ["benign" if s >= 0.5 else "malignant" for s in score]
    assert set(want) == {"benign", "malignant"}
    assert detect(net, sample=X[:60], task="classification").labels == ["0", "1"]
    # labels say classifier without task= (it was a regression, the labels dropped)
    named = detect(net, sample=X[:60], labels=["malignant", "benign"])
    assert (named.task, named.labels) == ("classification", ["malignant", "benign"])
    with pytest.raises(SourceError, match="labels given for a regression model"):
        detect(net, sample=X[:60], task="regression", labels=["malignant", "benign"])
    with pytest.raises(SourceError, match="3 labels given for a classifier of 2 classes"):
        deploykit.export(net, "onnx", out=tmp_path / "bad", sample=X[:60], quiet=True,
                         task="classification", labels=["malignant", "benign", "other"])
    r = deploykit.export(net, "onnx", out=tmp_path / "b", sample=X[:60], quiet=True,
                         task="classification", labels=["malignant", "benign"])
    assert r.ok, [(c.target, c.reason) for c in r.cells]
    with deploykit.load_bundle(tmp_path / "b") as b:
        assert b.predict(X, target="onnx").labels == want
    answer = create_app([tmp_path / "b"]).test_client().post(
        "/predict", json={"instances": X[:40].tolist()}).get_json()
    assert answer["labels"] == want[:40]


def test_a_bundle_of_vacuous_artifacts_says_so_when_asked_to_predict(tmp_path):
    """Its only artifact agreed on too few rows to prove anything: predict said "no passing
    artifact this machine can run", which reads as a missing runtime."""
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from deploykit.errors import BundleError

    X, y = load_iris(return_X_y=True)
    X = X.astype(np.float32)
    deploykit.export(LogisticRegression(max_iter=500).fit(X, y), "onnx", out=tmp_path / "b",
                     sample=X[:10], quiet=True)
    with deploykit.load_bundle(tmp_path / "b") as b:
        for target in (None, "onnx"):
            with pytest.raises(BundleError, match=r"onnx vacuous \(onnx: the probe set has 10 "
                                                  r"rows.*pass more sample rows"):
                b.predict(X[:2], target=target)


def test_an_export_without_a_sample_says_its_probe_set_is_made_up(tmp_path):
    """64 random rows put every iris row in one class, the cell passed, and nothing said the
    probe set was synthetic."""
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(X.astype(np.float32), y)
    r = deploykit.export(model, "onnx", out=tmp_path / "b", quiet=True)
    assert any("no sample given" in n for n in r.source["notes"]), r.source["notes"]
    r = deploykit.export(model, "onnx", out=tmp_path / "b", sample=X[:40], quiet=True)
    assert not r.source["notes"], r.source["notes"]


def _two_headed_keras():
    """Class scores second, under the model's own name, after an embedding."""
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((6,), name="x")
    h = keras.layers.Dense(16, activation="relu")(x)
    return keras.Model(x, [keras.layers.Dense(4, name="embedding")(h),
                           keras.layers.Dense(3, activation="softmax", name="class_probs")(h)])


@pytest.mark.parametrize("kind", ["keras", "onnx"])
def test_a_classifier_keeps_its_output_names_and_labels_come_from_its_scores(tmp_path, kind):
    """Several outputs keep the model's names, and ``scores`` in the signature names the class
    scores: a Keras model's was renamed ``probabilities`` (the user's name gone from every
    artifact and answer), and an ONNX model with its scores second was a regression (no
    labels, its scores never compared as a classifier's)."""
    import numpy as np

    from deploykit.serve import create_app

    x = np.random.default_rng(0).normal(size=(120, 6)).astype(np.float32)
    if kind == "keras":
        model = _two_headed_keras()
        scores, probs = "class_probs", model.predict(x, verbose=0)[1]
    else:
        model, scores = tmp_path / "m.onnx", "probs"
        probs = two_headed_onnx(model)(x)
    r = deploykit.export(model, "onnx,tflite,torchscript", out=tmp_path / "b", sample=x,
                         quiet=True, labels=["a", "b", "c"])
    assert r.ok, [(c.target, c.reason) for c in r.cells]
    want = [["a", "b", "c"][i] for i in probs.argmax(1)]
    assert len(set(want)) > 1
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["task"]["kind"] == "classification"
    assert manifest["signature"]["scores"] == scores
    with deploykit.load_bundle(tmp_path / "b") as b:
        for target in ("onnx", "tflite", "torchscript"):
            p = b.predict(x, target=target)
            assert set(p.outputs) == {"embedding", scores} and p.labels == want, target
            np.testing.assert_allclose(p.outputs[scores], probs, atol=1e-5)
    answer = create_app([tmp_path / "b"]).test_client().post(
        "/predict", json={"instances": x[:30].tolist()}).get_json()
    assert answer["labels"] == want[:30], answer
    np.testing.assert_allclose(answer["predictions"], probs[:30], atol=1e-5)
    assert set(answer["outputs"]) == {"embedding", scores}


def test_a_float_output_named_label_is_served_beside_the_scores_and_not_packaged(tmp_path):
    """A Keras model's float head named ``label`` was read as class indices: Bundle.predict
    raised a TypeError and the server answered 500; the device packages took the model as one
    of a single output (a classifier's integer label beside its scores), dropping that head."""
    import keras
    import numpy as np

    from deploykit.errors import BundleError
    from deploykit.package import package
    from deploykit.serve import create_app

    keras.utils.set_random_seed(0)
    x_in = keras.Input((6,), name="x")
    h = keras.layers.Dense(16, activation="relu")(x_in)
    model = keras.Model(x_in, [keras.layers.Dense(3, activation="softmax", name="probs")(h),
                               keras.layers.Dense(1, name="label")(h)])
    x = np.random.default_rng(0).normal(size=(80, 6)).astype(np.float32)
    probs, score = model.predict(x, verbose=0)
    r = deploykit.export(model, "onnx", out=tmp_path / "b", sample=x, quiet=True)
    assert r.ok, [(c.target, c.reason) for c in r.cells]
    want = [str(i) for i in probs.argmax(1)]
    with deploykit.load_bundle(tmp_path / "b") as b:
        assert b.predict(x, target="onnx").labels == want
    answer = create_app([tmp_path / "b"]).test_client().post(
        "/predict", json={"instances": x[:20].tolist()})
    assert answer.status_code == 200 and answer.get_json()["labels"] == want[:20], answer.text
    np.testing.assert_allclose(answer.get_json()["outputs"]["label"], score[:20], atol=1e-5)
    with pytest.raises(BundleError, match=r"gives 2 outputs \['probs', 'label'\]"):
        package(tmp_path / "b", "edge", tmp_path / "pkg")


def test_the_cli_names_classes_with_labels(tmp_path):
    """``--labels`` (a list, or a .txt file of one per line) names a classifier's classes from
    the CLI, as ``labels=`` does in Python; it was missing, so a user's ONNX or Keras file
    exported from the CLI had classes "0", "1", "2"."""
    import numpy as np

    x = np.random.default_rng(0).normal(size=(60, 6)).astype(np.float32)
    two_headed_onnx(tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\n")
    for labels, out in (("cat,dog,bird", "b1"), (str(tmp_path / "labels.txt"), "b2")):
        r = run_cli("export", str(tmp_path / "m.onnx"), "--to", "onnx", "--sample",
                    str(tmp_path / "x.npy"), "--labels", labels, "--out", str(tmp_path / out))
        assert r.returncode == 0, r.stdout + r.stderr
        manifest = json.loads((tmp_path / out / "manifest.json").read_text())
        assert manifest["task"]["labels"] == ["cat", "dog", "bird"]
        assert manifest["signature"]["scores"] == "probs"
    r = run_cli("export", str(tmp_path / "m.onnx"), "--to", "onnx", "--labels", "cat,cat",
                "--out", str(tmp_path / "b3"))
    assert r.returncode == 2 and "two or more distinct class names" in r.stderr, r.stderr


def test_a_keras_mask_that_fixes_the_batch_is_one_line_for_the_pytorch_targets(tmp_path):
    """Embedding(mask_zero=True) into a GRU computes with the batch size on Keras's torch
    backend: torch's "Constraints violated (batch)! For more information, run with
    TORCH_LOGS=..." was the reason. It now says what happened and that other targets stand."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    ids = keras.Input((10,), dtype="int32")
    h = keras.layers.GRU(8)(keras.layers.Embedding(40, 8, mask_zero=True)(ids))
    model = keras.Model(ids, keras.layers.Dense(3, activation="softmax")(h))
    x = np.random.default_rng(0).integers(0, 40, (64, 10)).astype(np.int32)
    r = deploykit.export(model, "executorch", out=tmp_path / "b", sample=x, quiet=True)
    (cell,) = r.cells
    assert cell.status == "error"
    assert "torch.export cannot give this Keras model a dynamic batch" in cell.reason, cell.reason
    assert "TORCH_LOGS" not in cell.reason


def test_a_keras_model_of_float64_inputs_still_reaches_tflite(tmp_path):
    """Keras casts a float64 input to float32 at its first layer, so TFLite converts it; a
    check on the input's dtype alone refused it (the message is for models that keep
    float64 all the way in)."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,), dtype="float64"),
                              keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
    x = np.random.default_rng(0).standard_normal((40, 4))
    r = deploykit.export(model, "tflite", out=tmp_path / "b", sample=x, quiet=True)
    assert r.ok, [c.reason for c in r.cells]
    with deploykit.load_bundle(tmp_path / "b") as bundle:
        got = next(iter(bundle.predict(x[:9]).outputs.values()))
    np.testing.assert_allclose(got, model.predict(x[:9], verbose=0), rtol=1e-5, atol=1e-6)


def test_a_savedmodel_of_several_signatures_converts_its_serving_one_to_tflite(tmp_path):
    """TFLite's converter took every signature, and the .tflite's runner then refused to pick
    one ("SignatureDef signature_key is None and model has 2 Signatures")."""
    import numpy as np
    import tensorflow as tf

    class Two(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def probs(self, x):
            return {"probs": tf.nn.softmax(x @ self.w)}

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def logits(self, x):
            return {"logits": x @ self.w}

    m = Two()
    tf.saved_model.save(m, str(tmp_path / "sm"), signatures={"serving_default": m.probs,
                                                             "logits": m.logits})
    x = np.random.default_rng(1).normal(size=(40, 4)).astype(np.float32)
    r = deploykit.export(tmp_path / "sm", "tflite", out=tmp_path / "b", sample=x, quiet=True)
    assert r.ok, [c.reason for c in r.cells]
    with deploykit.load_bundle(tmp_path / "b") as bundle:
        (got,) = bundle.predict(x[:5]).outputs.values()
    np.testing.assert_allclose(got, m.probs(x[:5])["probs"].numpy(), rtol=1e-5, atol=1e-6)


def test_tf_functions_of_text_or_of_a_dict_are_refused_in_one_line(tmp_path):
    """A string input was an "internal error" (numpy: "data type 'string' not understood"),
    a dict of inputs a bare AttributeError."""
    import tensorflow as tf

    from deploykit.errors import SourceError

    class Text(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def __call__(self, x):
            return tf.cast(tf.strings.length(x), tf.float32)[:, None]

    class Named(tf.Module):
        @tf.function(input_signature=[{"a": tf.TensorSpec([None, 2], tf.float32),
                                       "b": tf.TensorSpec([None, 2], tf.float32)}])
        def __call__(self, d):
            return tf.concat([d["a"], d["b"]], 1)

    with pytest.raises(SourceError, match="input 'x' takes string values; deploykit exports "
                                          "models of numeric inputs"):
        deploykit.export(Text(), "onnx", out=tmp_path / "t", quiet=True)
    with pytest.raises(SourceError, match=r"the tf.function takes 2 inputs \['a', 'b'\]"):
        deploykit.export(Named(), "onnx", out=tmp_path / "n", quiet=True)


def test_a_legacy_h5_file_is_told_how_to_become_a_keras_file(tmp_path):
    from deploykit.errors import SourceError

    (tmp_path / "model.h5").write_bytes(b"\x89HDF\r\n\x1a\n not read")
    with pytest.raises(SourceError, match=r"a legacy Keras file: save it again as \.keras"):
        deploykit.export(tmp_path / "model.h5", "onnx", out=tmp_path / "b", quiet=True)


@pytest.mark.parametrize("kind", ["own-layer", "lambda"])
def test_a_keras_model_of_a_users_own_layer_is_refused_up_front(kind, tmp_path):
    """The converters reload the model in other processes, in safe mode, where neither a
    user's layer class nor a Lambda loads: every cell failed with Keras's "could not be
    deserialized properly"."""
    import keras

    from deploykit.errors import SourceError

    class Scale(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    x_in = keras.Input((4,))
    h = Scale()(x_in) if kind == "own-layer" else keras.layers.Lambda(lambda t: t * 2.0)(x_in)
    model = keras.Model(x_in, keras.layers.Dense(3)(h))
    words = "is Scale from test_export_api, not a Keras layer" if kind == "own-layer" else \
        "is a Lambda, which Keras reloads only outside its safe mode"
    with pytest.raises(SourceError, match=words):
        deploykit.export(model, "onnx", out=tmp_path / "b", quiet=True)
    assert not (tmp_path / "b").exists()


def test_a_tf_signature_of_a_fixed_batch_keeps_it_and_runs_in_chunks(tmp_path):
    """``tf.TensorSpec([1, 4])``: the ONNX (tf2onnx) and TF.js artifacts took one row, so
    parity on 7 rows failed ("batch size 7")."""
    import numpy as np
    import tensorflow as tf

    class OneRow(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
        def __call__(self, x):
            return tf.nn.softmax(x @ self.w)

    model, x = OneRow(), np.random.default_rng(1).normal(size=(40, 4)).astype(np.float32)
    r = deploykit.export(model, "onnx", out=tmp_path / "b", sample=x, quiet=True)
    assert r.ok, [c.reason for c in r.cells]
    assert any("fixes a batch of 1" in n for n in r.source["notes"]), r.source["notes"]
    with deploykit.load_bundle(tmp_path / "b") as bundle:
        assert bundle.artifact("onnx").batch == 1
        got = bundle.predict(x[:6], target="onnx").outputs["probabilities"]
    np.testing.assert_allclose(got, tf.nn.softmax(x[:6] @ model.w).numpy(), rtol=1e-5, atol=1e-6)
