"""Every path trains on digits to a real accuracy bar, saves, and reloads identically."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shared

from deploykit.flows import FLOWS
from deploykit.training import load_model, predict_in_worker, read_test_split, train
from deploykit.training.common import CARD

pytestmark = pytest.mark.slow  # trains every flow

MATRIX = list(FLOWS)
# Acceptance bars from the foundation issue: every path >= 0.95, sklearn and Keras >= 0.97.
BAR = {"sklearn": 0.97, "keras-tensorflow": 0.97, "keras-torch": 0.97,
       "tensorflow": 0.95, "torch": 0.95}


def test_every_path_has_a_case():
    assert set(BAR) == set(MATRIX)


@pytest.mark.parametrize("path", MATRIX)
def test_path_trains_on_digits_saves_and_reloads(path):
    """On the digits model the tests share (trained by deploykit.train from this source)."""
    folder = shared.digits([path])[path]["model"]
    card = json.loads((folder / CARD).read_text())
    assert card["flow"] == path and card["dataset"]["name"] == "digits"
    acc = card["metrics"]["test"]["accuracy"]
    assert acc >= BAR[path], f"{path}: test accuracy {acc:.4f} < {BAR[path]}"
    assert card["task"]["labels"] == [str(i) for i in range(10)]
    assert card["signature"]["inputs"] == [{"name": "x", "dtype": "float32", "shape": [None, 64]}]
    if path == "sklearn":
        families = [c["family"] for c in card["selection"]["candidates"]]
        assert card["model"]["kind"] in families and len(families) >= 4
        assert card["selection"]["cv_score"] == max(c["cv_score"] for c in
                                                    card["selection"]["candidates"])
    else:
        assert card["model"]["kind"] == "cnn"  # digits are 8x8x1 images
    assert card["versions"]["numpy"] and card["seed"] == 0
    assert not list(folder.parent.glob(f".{folder.name}.partial-*")), "work folder left behind"
    X, y, ref = read_test_split(folder)
    assert len(X) == card["split"]["n_test"] == len(y)
    # Reload in a fresh process (Keras under the backend it was trained with) and predict.
    again = predict_in_worker(folder, X)
    assert set(again) == set(ref)
    for k in ref:
        np.testing.assert_allclose(again[k], ref[k], rtol=1e-5, atol=1e-6, err_msg=k)
    key = "label" if "label" in ref else "probabilities"
    pred = ref[key] if key == "label" else ref[key].argmax(axis=1)
    assert np.mean(pred == y) == pytest.approx(acc)


def test_torch_export_program_matches_state_dict_model(tmp_path):
    from deploykit.training import torch_path

    train("torch", "iris", tmp_path / "m", quiet=True, epochs=5)
    X, _, ref = read_test_split(tmp_path / "m")
    program = torch_path.load_program(tmp_path / "m")
    import torch

    for n in (1, 3, len(X)):  # dynamic batch: any size works
        out = program(torch.from_numpy(X[:n])).detach().numpy()
        np.testing.assert_allclose(out, ref["probabilities"][:n], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("path", MATRIX)
def test_regression_on_diabetes(path, tmp_path):
    r = train(path, "diabetes", tmp_path / "m", quiet=True)
    m = r.metrics["test"]
    assert set(m) == {"r2", "mae", "rmse"}
    assert m["r2"] >= 0.3, f"{path}: r2 {m['r2']:.3f}"
    _, y, ref = read_test_split(tmp_path / "m")
    assert ref["predictions"].shape == (len(y), 1)
    # the model predicts in raw target units (un-scaling is inside the model)
    assert abs(ref["predictions"].mean() - y.mean()) < 0.25 * y.std()


def test_tabular_classification_uses_an_mlp(tmp_path):
    r = train("torch", "wine", tmp_path / "m", quiet=True)
    assert r.card["model"]["kind"] == "mlp" and r.metrics["test"]["accuracy"] >= 0.9
    m = load_model(tmp_path / "m")
    X, _, ref = read_test_split(tmp_path / "m")
    np.testing.assert_allclose(m.predict(X)["probabilities"], ref["probabilities"], rtol=1e-5)
