"""Token ids: an integer input that indexes an embedding table gets the table's valid ids
``[0, rows - 1]`` on its spec, read from the model; the probe set stays inside it and an id
past it is refused by name (the server's 400 on the zoo's token models is in zoo_check)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deploykit.errors import InputError
from deploykit.signature import Signature, TensorSpec
from deploykit.sources import detect


class Tokens(torch.nn.Module):
    """int64 ids -> embedding -> mean over the sequence -> softmax; a mask multiplies."""

    def __init__(self, rows: int = 10, cast: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(rows, 4)
        self.fc = torch.nn.Linear(4, 3)
        self.cast = cast

    def forward(self, ids, mask):
        if self.cast:  # int32 ids, cast and flattened on the way to the table
            ids = ids.long().reshape(-1)
            h = self.emb(ids).reshape(mask.shape[0], mask.shape[1], 4)
        else:
            h = self.emb(ids)
        h = (h * mask.unsqueeze(-1)).mean(1)
        return torch.softmax(self.fc(h), dim=1)


def _program(module: Tokens, dtype=torch.int64):
    ids, mask = torch.zeros(4, 6, dtype=dtype), torch.ones(4, 6, dtype=torch.int64)
    batch = torch.export.Dim("batch", min=1, max=1024)
    return torch.export.export(module.eval(), (ids, mask),
                               dynamic_shapes=({0: batch}, {0: batch}), strict=False)


@pytest.mark.parametrize("cast", [False, True], ids=["direct", "cast-and-reshaped"])
def test_ids_get_the_range_of_the_table_they_index_and_a_mask_none(cast):
    module = Tokens(rows=17, cast=cast)
    dtype = torch.int32 if cast else torch.int64
    rng = np.random.default_rng(0)
    sample = {"ids": rng.integers(0, 5, (30, 6)).astype(str(dtype).removeprefix("torch.")),
              "mask": np.ones((30, 6), np.int64)}
    ids, mask = detect(_program(module, dtype), sample=sample).signature.inputs
    assert ids.range == (0, module.emb.num_embeddings - 1)
    assert mask.range is None


def test_without_a_sample_the_probe_draws_ids_inside_the_table():
    module = Tokens(rows=13)

    class IdsOnly(torch.nn.Module):
        def forward(self, ids):
            return module(ids, torch.ones_like(ids))

    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(IdsOnly().eval(), (torch.zeros(4, 6, dtype=torch.int64),),
                                  dynamic_shapes=({0: batch},), strict=False)
    src = detect(program)  # no sample: an integer input with no table would be refused
    ids = src.probe_inputs["ids"]
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() <= 12
    assert len(np.unique(ids)) > 6  # spread over the table, not one id
    with torch.no_grad():
        want = IdsOnly()(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(src.reference["probabilities"], want, rtol=1e-6, atol=1e-7)


def test_an_out_of_vocabulary_sample_is_one_line_naming_the_range(tmp_path):
    from zoo_check import in_process

    module = Tokens(rows=10)
    torch.export.save(_program(module), tmp_path / "model.pt2")
    ids = np.random.default_rng(0).integers(0, 10, (20, 6))
    ids[3, 2] = 10
    np.savez(tmp_path / "sample.npz", ids=ids, mask=np.ones((20, 6), np.int64))
    code, text = in_process()("export", str(tmp_path / "model.pt2"), "--to", "onnx", "--sample",
                              str(tmp_path / "sample.npz"), "--out", str(tmp_path / "b"))
    assert code == 2 and "input 'ids': ids must be in [0, 9]" in text, text
    assert "Traceback" not in text and not (tmp_path / "b").exists()


def test_a_range_is_checked_kept_through_json_and_refused_on_floats():
    sig = Signature((TensorSpec("ids", "int32", (None, 3), range=(0, 4)),))
    assert Signature.from_dict(sig.to_dict()) == sig
    assert "range" not in TensorSpec("x", "int32", (None, 3)).to_dict()  # bundles before it
    sig.validate(np.array([[0, 4, 2]]))
    for bad, seen in (([[0, 5, 1]], "from 0 to 5"), ([[-1, 0, 0]], "from -1 to 0")):
        with pytest.raises(InputError, match=rf"'ids': ids must be in \[0, 4\].*{seen}"):
            sig.validate(np.array(bad))
    with pytest.raises(ValueError, match="bad value range"):
        TensorSpec("x", "bool", (None, 3), range=(0, 4))


def test_float_ids_into_a_keras_embedding_get_its_range():
    """``keras.Input((10,))`` (float32, the default) into an Embedding, as many tutorials
    write it: the ids had no range, so a random probe of normal floats truncated to ids 0
    and -1, and an id past the table was a 500 from the runtime in the server."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((10,))
    out = keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Embedding(40, 3)(inp)))
    model = keras.Model(inp, out)
    src = detect(model)  # no sample: the probe draws ids from the table
    (x,) = src.signature.inputs
    assert (x.dtype, x.range) == ("float32", (0, 39))
    probe = src.probe_inputs["x"]
    assert probe.min() >= 0 and probe.max() <= 39 and len(np.unique(probe)) > 20
    np.testing.assert_allclose(next(iter(src.reference.values())), model.predict(probe, verbose=0),
                               rtol=1e-5, atol=1e-6)
    for bad in (40.0, -1.0):
        with pytest.raises(InputError, match=r"ids must be in \[0, 39\]"):
            x.validate(np.full((1, 10), bad, np.float32))


def test_ids_are_checked_before_a_narrowing_cast_could_wrap_them():
    ranged = TensorSpec("ids", "int32", (None, 3), range=(0, 99))
    with pytest.raises(InputError, match=r"ids must be in \[0, 99\]"):
        ranged.validate(np.array([[2**32 + 5, 1, 2]]))  # int64 that int32 would make 5
    with pytest.raises(InputError, match="do not fit int32"):
        TensorSpec("codes", "int32", (None, 3)).validate(np.array([[2**40, 1, 2]]))
    assert TensorSpec("codes", "int32", (None, 3)).validate(np.array([[7, 1, 2]])).dtype == \
        np.int32
