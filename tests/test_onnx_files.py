"""ONNX files as users bring them: saved at a fixed batch, with weights in an external-data
file, with int32 ids or inputs deploykit does not read. Each model is a small graph built here;
what it should answer comes from onnxruntime on the file itself."""

from __future__ import annotations

import numpy as np
import pytest
from zoo_check import in_process

import deploykit
from deploykit.errors import InputError, SourceError


def _save(path, nodes, inputs, outputs, weights, **save):
    import onnx
    from onnx import helper, numpy_helper

    graph = helper.make_graph(nodes, "user", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path), **save)
    return path


def _dense(path, batch, dtype=np.float32, **save):
    """x [batch, 6] -> relu(x W + b) [batch, 3]."""
    from onnx import helper

    rng, kind = np.random.default_rng(0), helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    return _save(path, [helper.make_node("MatMul", ["x", "W"], ["h"]),
                        helper.make_node("Add", ["h", "b"], ["z"]),
                        helper.make_node("Relu", ["z"], ["y"])],
                 [helper.make_tensor_value_info("x", kind, [batch, 6])],
                 [helper.make_tensor_value_info("y", kind, [batch, 3])],
                 {"W": rng.normal(size=(6, 3)).astype(dtype),
                  "b": rng.normal(size=3).astype(dtype)}, **save)


def _by_batch(path, batch):
    """x [batch, 6] reshaped to the constant [batch, 2, 3] and summed: the graph holds the
    batch, so it cannot take another."""
    from onnx import TensorProto, helper

    return _save(path, [helper.make_node("Reshape", ["x", "shape"], ["r"]),
                        helper.make_node("ReduceSum", ["r", "axes"], ["y"], keepdims=0)],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 6])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 2])],
                 {"shape": np.array([batch, 2, 3], np.int64), "axes": np.array([2], np.int64)})


def _ids(path, kind, rows=20):
    """ids [batch, 5] of ``kind`` indexing a table of ``rows`` x 4, averaged per row."""
    from onnx import TensorProto, helper

    return _save(path, [helper.make_node("Gather", ["table", "ids"], ["e"]),
                        helper.make_node("ReduceMean", ["e"], ["y"], axes=[1], keepdims=0)],
                 [helper.make_tensor_value_info("ids", kind, ["n", 5])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
                 {"table": np.random.default_rng(0).normal(size=(rows, 4)).astype(np.float32)})


def _ids_and_mask(path):
    """int64 ids [n, 5], flattened on their way to a 20-row table, and also compared with 0
    (a padding mask, a second output)."""
    from onnx import TensorProto, helper

    return _save(path, [helper.make_node("Flatten", ["ids"], ["flat"], axis=1),
                        helper.make_node("Gather", ["table", "flat"], ["e"]),
                        helper.make_node("ReduceMean", ["e"], ["y"], axes=[1], keepdims=0),
                        helper.make_node("Equal", ["ids", "pad"], ["is_pad"]),
                        helper.make_node("Cast", ["is_pad"], ["mask"], to=TensorProto.FLOAT)],
                 [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n", 5])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4]),
                  helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["n", 5])],
                 {"table": np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32),
                  "pad": np.array(0, np.int64)})


def _file_answers(path, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _rows(n=40):
    return np.random.default_rng(1).normal(size=(n, 6)).astype(np.float32)


@pytest.mark.parametrize("batch", [1, 4])
def test_a_file_saved_at_a_fixed_batch_is_opened_to_any_batch(batch, tmp_path):
    """torch.onnx.export without dynamic axes fixes the batch: such a file was an "internal
    error" (onnxruntime refused the probe's 64 rows)."""
    x = _rows()
    path = _dense(tmp_path / "m.onnx", batch)
    want = np.concatenate([_file_answers(path, x[i:i + batch]) for i in range(0, len(x), batch)])
    r = deploykit.export(path, "onnx", out=tmp_path / "b", sample=x, quiet=True)
    assert r.ok, [c.reason for c in r.cells]
    assert any("opened it to any batch" in n for n in r.source["notes"]), r.source["notes"]
    with deploykit.load_bundle(tmp_path / "b") as bundle:
        assert bundle.artifact("onnx").batch is None
        np.testing.assert_allclose(bundle.predict(x).outputs["y"], want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # a TFLite conversion
def test_a_file_whose_graph_holds_its_batch_keeps_it_and_runs_in_chunks(tmp_path):
    x = _rows(41)
    path = _by_batch(tmp_path / "m.onnx", 4)
    padded = np.concatenate([x, np.repeat(x[-1:], 3, axis=0)])
    want = np.concatenate([_file_answers(path, padded[i:i + 4]) for i in range(0, 44, 4)])[:41]
    r = deploykit.export(path, "onnx,tflite", out=tmp_path / "b", sample=x, quiet=True)
    assert r.ok, [c.reason for c in r.cells]
    assert any("depends on that batch" in n for n in r.source["notes"]), r.source["notes"]
    with deploykit.load_bundle(tmp_path / "b") as bundle:
        for target in ("onnx", "tflite"):
            assert bundle.artifact(target).batch == 4
            got = bundle.predict(x[:7], target=target).outputs["y"]
            np.testing.assert_allclose(got, want[:7], rtol=1e-5, atol=1e-5, err_msg=target)


def test_weights_in_an_external_data_file_go_into_the_bundle(tmp_path):
    """The bundle held model.onnx without its weights: every target failed ("External data
    path does not exist")."""
    x = _rows()
    (tmp_path / "user").mkdir()
    path = _dense(tmp_path / "user" / "m.onnx", None, save_as_external_data=True,
                  location="m.weights", size_threshold=0)
    assert (tmp_path / "user" / "m.weights").is_file()
    want = _file_answers(path, x)
    r = deploykit.export(path, "onnx", out=tmp_path / "b", sample=x, quiet=True)
    assert r.ok, [c.reason for c in r.cells]
    (tmp_path / "user" / "m.weights").unlink()  # the bundle stands on its own
    with deploykit.load_bundle(tmp_path / "b") as bundle:
        np.testing.assert_allclose(bundle.predict(x).outputs["y"], want, rtol=1e-6)


def test_int32_ids_keep_their_type_and_their_table_bounds_them(tmp_path):
    """An int32 input was fed float32 (an "internal error"); ids past the table gave a 500 in
    the server (onnxruntime's Gather error) and -1 was silently the last row."""
    from onnx import TensorProto

    path = _ids(tmp_path / "m.onnx", TensorProto.INT32)
    r = deploykit.export(path, "onnx", out=tmp_path / "b", quiet=True)  # no sample: ids drawn in
    assert r.ok, [c.reason for c in r.cells]                            # the table's range
    ids = np.random.default_rng(2).integers(0, 20, (30, 5)).astype(np.int32)
    with deploykit.load_bundle(tmp_path / "b") as bundle:
        spec = bundle.signature.inputs[0]
        assert (spec.dtype, spec.range) == ("int32", (0, 19))
        np.testing.assert_allclose(bundle.predict(ids).outputs["y"], _file_answers(path, ids),
                                   rtol=1e-6)
        for bad in (20, -1):
            with pytest.raises(InputError, match=r"ids must be in \[0, 19\]"):
                bundle.predict(np.full((1, 5), bad, np.int32))
    code, text = in_process()("inspect", str(tmp_path / "b"))
    assert code == 0 and "inputs x int32 [batch, 5] (ids 0..19)" in text, text


def test_an_input_type_deploykit_does_not_read_is_named(tmp_path):
    from onnx import TensorProto, helper

    path = _save(tmp_path / "m.onnx", [helper.make_node("Cast", ["pixels"], ["y"], to=1)],
                 [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["n", 5])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])], {})
    with pytest.raises(SourceError, match=r"input 'pixels' is a tensor\(uint8\); deploykit reads "
                                          r"ONNX models whose input is float16, float32"):
        deploykit.export(path, "onnx", out=tmp_path / "b", quiet=True)


@pytest.mark.slow  # converts towards TFLite
def test_a_float64_file_reaches_onnx_and_tflite_says_why_not(tmp_path):
    """TFLite's converter said only "Could not translate MLIR to FlatBuffer"."""
    x = _rows().astype(np.float64)
    path = _dense(tmp_path / "m.onnx", "n", np.float64)
    r = deploykit.export(path, "onnx,tflite", out=tmp_path / "b", sample=x, quiet=True)
    onnx_cell, tflite_cell = r.cells
    assert onnx_cell.status == "pass", onnx_cell.reason
    assert tflite_cell.status == "error"
    assert "TFLite has no float64 tensors, and input 'x' is float64" in tflite_cell.reason


def test_a_float16_file_keeps_its_type_and_says_what_its_conversions_compute_in(tmp_path):
    """A float16 input was fed float32 (an "internal error")."""
    x = _rows().astype(np.float16)
    path = _dense(tmp_path / "m.onnx", "n", np.float16)
    r = deploykit.export(path, "onnx", out=tmp_path / "b", sample=x, quiet=True)
    assert r.ok, [c.reason for c in r.cells]
    assert any("computes in float16" in n for n in r.source["notes"]), r.source["notes"]
    with deploykit.load_bundle(tmp_path / "b") as bundle:
        assert bundle.signature.inputs[0].dtype == "float16"
        np.testing.assert_array_equal(bundle.predict(x).outputs["y"], _file_answers(path, x))


def test_ids_reshaped_on_their_way_and_also_masked_get_the_tables_range(tmp_path):
    """A padding mask (``ids == 0``) beside the table, and a reshape before it, as
    transformer exports have: no range was found, so an export without a sample was refused."""
    path = _ids_and_mask(tmp_path / "m.onnx")
    r = deploykit.export(path, "onnx", out=tmp_path / "b", quiet=True)
    assert r.ok, [c.reason for c in r.cells]
    with deploykit.load_bundle(tmp_path / "b") as bundle:
        assert bundle.signature.inputs[0].range == (0, 19)


def test_an_output_without_its_batch_axis_is_refused_by_name(tmp_path):
    """torch.onnx.export at a batch of 1 of a model that squeezes it away: the rows' outputs
    were joined end to end into one long vector, read as a regression."""
    from onnx import TensorProto, helper

    path = _save(tmp_path / "m.onnx", [helper.make_node("Squeeze", ["x", "axes"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6])],
                 {"axes": np.array([0], np.int64)})
    with pytest.raises(SourceError, match=r"output 'y' has no row per input row \(shape \[240\] "
                                          r"for 40 rows\)"):
        deploykit.export(path, "onnx", out=tmp_path / "b", sample=_rows(), quiet=True)


@pytest.mark.slow  # converts through the ONNX-to-Keras bridge
def test_outputs_named_after_ops_are_renamed_and_reach_tflite(tmp_path):
    """torch.onnx.export without output_names names outputs after ops ("onnx::Relu_3",
    "5"): Keras refused them as layer scopes, so every bridged target failed."""
    from onnx import TensorProto, helper

    path = _save(tmp_path / "m.onnx", [helper.make_node("Relu", ["x"], ["onnx::Relu_3"]),
                                       helper.make_node("Neg", ["onnx::Relu_3"], ["5"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])],
                 [helper.make_tensor_value_info("onnx::Relu_3", TensorProto.FLOAT, ["n", 6]),
                  helper.make_tensor_value_info("5", TensorProto.FLOAT, ["n", 6])], {})
    x = _rows()
    r = deploykit.export(path, "onnx,tflite", out=tmp_path / "b", sample=x, quiet=True)
    assert r.ok, [c.reason for c in r.cells]
    with deploykit.load_bundle(tmp_path / "b") as bundle:
        assert [s.name for s in bundle.signature.outputs] == ["output_0", "output_1"]
        got = bundle.predict(x, target="tflite").outputs
    np.testing.assert_allclose(got["output_1"], -np.maximum(x, 0), rtol=1e-6)
