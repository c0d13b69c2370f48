"""The "need deep learning?" decision, and the model folder's safety properties."""

from __future__ import annotations

import json

import numpy as np
import pytest

import deploykit
from deploykit.errors import ModelFolderError, TrainingError
from deploykit.training import load_model, train
from deploykit.training.common import CARD

pytestmark = pytest.mark.slow  # trains along auto


def test_auto_keeps_classical_when_it_meets_the_target(tmp_path):
    r = train("auto", "iris", tmp_path / "m", quiet=True)
    d = r.decision
    assert d["chosen"] == "sklearn" and r.card["flow"] == "sklearn"
    assert d["validation_scores"]["sklearn"] >= 0.95
    assert "deep learning is not needed" in d["reason"]
    assert list(d["validation_scores"]) == ["sklearn"]  # no deep model was trained


def test_auto_picks_deep_when_it_beats_classical(tmp_path):
    # An unreachable target and a negative margin force the deep branch deterministically.
    r = train("auto", "iris", tmp_path / "m", quiet=True, target_score=1.01, margin=-1.0,
              deep_flow="torch", epochs=3)
    assert r.decision["chosen"] == "torch" and r.card["framework"] == "torch"
    assert set(r.decision["validation_scores"]) == {"sklearn", "torch"}
    assert not list(tmp_path.glob(".m.partial-*")), "the losing model's folder was left behind"


def test_auto_keeps_classical_when_deep_does_not_beat_it_by_the_margin(tmp_path):
    r = train("auto", "diabetes", tmp_path / "m", quiet=True, margin=0.5,
              deep_flow="torch", epochs=3)
    d = r.decision
    assert d["chosen"] == "sklearn" and set(d["validation_scores"]) == {"sklearn", "torch"}
    assert "simpler classical model is kept" in d["reason"]


def test_auto_rejects_unknown_deep_flow(tmp_path):
    with pytest.raises(TrainingError, match="--deep-flow"):
        train("auto", "iris", tmp_path / "m", deep_flow="jax")


def test_failed_training_leaves_nothing_behind(tmp_path, monkeypatch):
    from deploykit.training import sklearn_path

    def boom(*a, **k):
        raise RuntimeError("interrupted mid-training")

    monkeypatch.setattr(sklearn_path, "fit", boom)
    with pytest.raises(RuntimeError):
        train("sklearn", "iris", tmp_path / "m", quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_replaces_a_model_folder_but_not_other_folders(tmp_path):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"x")
    with pytest.raises(TrainingError, match="not a deploykit model folder"):
        train("sklearn", "iris", other, quiet=True)
    assert (other / "cat.jpg").exists()
    first = train("sklearn", "iris", tmp_path / "m", quiet=True)
    second = train("sklearn", "wine", tmp_path / "m", quiet=True)
    assert second.card["dataset"]["name"] == "wine" != first.card["dataset"]["name"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "photos"]


def test_skops_loader_refuses_foreign_types(tmp_path):
    import os

    import skops.io as sio
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from deploykit.training.sklearn_path import load_estimator

    train("sklearn", "iris", tmp_path / "m", quiet=True)
    evil = Pipeline([("f", FunctionTransformer(os.system))])
    sio.dump(evil, tmp_path / "evil.skops")  # a .skops file given to export, or a swapped one
    with pytest.raises(ModelFolderError, match="does not trust"):
        load_estimator(tmp_path / "evil.skops")
    (tmp_path / "m" / "model.skops").write_bytes((tmp_path / "evil.skops").read_bytes())
    with pytest.raises(ModelFolderError, match="was changed after training"):
        load_model(tmp_path / "m")


def test_card_problems_are_clear(tmp_path):
    with pytest.raises(ModelFolderError, match="not a deploykit model folder"):
        load_model(tmp_path)
    train("sklearn", "iris", tmp_path / "m", quiet=True)
    card = json.loads((tmp_path / "m" / CARD).read_text())
    # a damaged model file: each export target failed on its own (BadZipFile) before
    for damaged in ("model.skops", "test_split.npz"):
        good = (tmp_path / "m" / damaged).read_bytes()
        (tmp_path / "m" / damaged).write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
        with pytest.raises(ModelFolderError, match=f"{damaged} is missing or was changed "
                                                   f"after training"):
            deploykit.export(tmp_path / "m", "onnx", out=tmp_path / "b", quiet=True)
        (tmp_path / "m" / damaged).write_bytes(good)
    assert load_model(tmp_path / "m").flow == "sklearn"
    (tmp_path / "m" / "model.skops").unlink()
    with pytest.raises(ModelFolderError, match="missing model files"):
        load_model(tmp_path / "m")
    card["schema"] = "deploykit.model/99"
    (tmp_path / "m" / CARD).write_text(json.dumps(card))
    with pytest.raises(ModelFolderError, match="unsupported schema"):
        load_model(tmp_path / "m")


def test_loaded_model_validates_inputs(tmp_path):
    from deploykit.errors import InputError

    train("sklearn", "iris", tmp_path / "m", quiet=True)
    m = load_model(tmp_path / "m")
    with pytest.raises(InputError, match="expected shape \\[batch, 4\\]"):
        m.predict(np.zeros((2, 5), np.float32))
    assert m.predict(np.zeros((2, 4)))["probabilities"].shape == (2, 3)
