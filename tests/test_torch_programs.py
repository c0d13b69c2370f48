"""torch.export programs exported at a fixed batch (no ``dynamic_shapes``, what most people
do): made dynamic only when that keeps the original's outputs, else kept at their batch,
with the reference always computed by the user's own program."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deploykit.sources import detect


class RowWise(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(6, 3)

    def forward(self, x):
        return torch.softmax(self.fc(x).flatten(1), dim=1)


class BatchMean(RowWise):
    """Each row minus the batch's mean: its output for a row depends on the batch."""

    def forward(self, x):
        h = self.fc(x)
        return torch.softmax(h - h.mean(0, keepdim=True), dim=1)


def _program(module):
    return torch.export.export(module.eval(), (torch.zeros(4, 6),))


def test_a_row_wise_program_at_a_fixed_batch_becomes_dynamic():
    x = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    src = detect(_program(RowWise()), sample=x)
    assert src.fixed_batch is None and "re-exported it with a dynamic batch" in src.notes[0]
    with torch.no_grad():
        want = RowWise()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(src.reference["probabilities"], want, rtol=1e-6, atol=1e-7)


def test_a_program_whose_rows_depend_on_the_batch_stays_fixed():
    x = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    src = detect(_program(BatchMean()), sample=x)
    assert src.fixed_batch == 4 and "depends on that batch" in src.notes[0]
    with torch.no_grad():  # the reference is the program's own, four rows at a time
        want = np.concatenate([BatchMean()(torch.from_numpy(x[i:i + 4])).numpy()
                               for i in range(0, 40, 4)])
    np.testing.assert_allclose(src.reference["probabilities"], want, rtol=1e-6, atol=1e-7)


class TwoHeads(RowWise):
    """Logits and their softmax: a tuple of two outputs."""

    def forward(self, x):
        return self.fc(x), torch.softmax(self.fc(x), dim=1)


def test_several_outputs_keep_their_order_and_the_probabilities_are_found():
    x = np.random.default_rng(0).normal(size=(20, 6)).astype(np.float32)
    src = detect(TwoHeads(), sample=x)
    assert src.task == "classification"  # its second output sums to one per row
    assert [s.name for s in src.signature.outputs] == ["output_0", "probabilities"]
    with torch.no_grad():
        want = TwoHeads()(torch.from_numpy(x))
    for name, w in zip(["output_0", "probabilities"], want, strict=True):
        np.testing.assert_allclose(src.reference[name], w.numpy(), rtol=1e-6, atol=1e-7)
    src = detect(TwoHeads(), sample=x, task="regression")  # the user's word wins
    assert [s.name for s in src.signature.outputs] == ["output_0", "output_1"]


def test_a_dict_of_outputs_keeps_its_keys_and_names_its_scores():
    class Named(RowWise):
        def forward(self, x):
            return {"probs": torch.softmax(self.fc(x), dim=1), "hidden": torch.tanh(self.fc(x))}

    x = np.random.default_rng(0).normal(size=(20, 6)).astype(np.float32)
    src = detect(Named(), sample=x, labels=["a", "b", "c"])
    assert src.task == "classification" and src.labels == ["a", "b", "c"]
    assert [s.name for s in src.signature.outputs] == ["probs", "hidden"]
    assert src.signature.scores == "probs"
    with torch.no_grad():
        want = Named()(torch.from_numpy(x))
    np.testing.assert_allclose(src.reference["probs"], want["probs"].numpy(), rtol=1e-6)
    np.testing.assert_allclose(src.reference["hidden"], want["hidden"].numpy(), rtol=1e-6)


def test_a_dict_of_outputs_traces_to_torchscript_and_ptl(tmp_path):
    """Tracing refuses a dict at the output ("Encountering a dict at the output of the
    tracer"): both TorchScript targets failed on such a program."""
    import deploykit

    class Named(RowWise):
        def forward(self, x):
            return {"probs": torch.softmax(self.fc(x), dim=1), "hidden": torch.tanh(self.fc(x))}

    x = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    r = deploykit.export(Named(), ["torchscript", "ptl"], out=tmp_path / "b", sample=x,
                         quiet=True)
    assert r.ok, {c.target: c.reason for c in r.cells}
    with torch.no_grad():
        want = Named()(torch.from_numpy(x[:9]))
    with deploykit.load_bundle(tmp_path / "b") as b:
        for target in ("torchscript", "ptl"):
            got = b.predict(x[:9], target=target).outputs
            np.testing.assert_allclose(got["probs"], want["probs"].numpy(), rtol=1e-5)
            np.testing.assert_allclose(got["hidden"], want["hidden"].numpy(), rtol=1e-5)


def test_nested_outputs_are_refused_with_a_typed_error():
    import pytest

    from deploykit.errors import SourceError

    class Nested(RowWise):
        def forward(self, x):
            return self.fc(x), (self.fc(x), self.fc(x))

    with pytest.raises(SourceError, match="a flat tuple, list or dict of tensors"):
        detect(Nested(), sample=np.zeros((20, 6), np.float32))


def test_a_fixed_batch_program_with_two_outputs_becomes_dynamic_on_both():
    x = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    src = detect(_program(TwoHeads()), sample=x)
    assert src.fixed_batch is None and "re-exported it with a dynamic batch" in src.notes[0]
    with torch.no_grad():
        want = TwoHeads()(torch.from_numpy(x))
    np.testing.assert_allclose(src.reference["probabilities"], want[1].numpy(), rtol=1e-6,
                               atol=1e-7)


class MeanOverSteps(RowWise):
    """Any number of steps of 6 features: the mean step, then a linear layer."""

    def forward(self, x):
        return torch.softmax(self.fc(x.mean(1)), dim=1)


def _any_length_program():
    dims = ({0: torch.export.Dim("batch", max=512), 1: torch.export.Dim("steps", max=64)},)
    return torch.export.export(MeanOverSteps().eval(), (torch.zeros(4, 5, 6),),
                               dynamic_shapes=dims)


def test_a_dynamic_sequence_length_is_fixed_at_the_samples():
    x = np.random.default_rng(0).normal(size=(40, 9, 6)).astype(np.float32)
    src = detect(_any_length_program(), sample=x)
    assert src.signature.inputs[0].shape == (None, 9, 6)
    assert "takes [batch, ?, 6]" in src.notes[0] and "[batch, 9, 6]" in src.notes[0]
    with torch.no_grad():
        want = MeanOverSteps()(torch.from_numpy(x)).numpy()
        shorter = MeanOverSteps()(torch.from_numpy(x[:, :7])).numpy()  # 9 less a quarter
    np.testing.assert_allclose(src.reference["probabilities"], want, rtol=1e-6, atol=1e-7)
    assert src.signature.inputs[0].open_axes == (1,)
    np.testing.assert_array_equal(src.shorter.inputs["x"], x[:, :7])
    np.testing.assert_allclose(src.shorter.reference["probabilities"], shorter, rtol=1e-6,
                               atol=1e-7)


class PositionalMean(RowWise):
    """A learned position table sliced to the length, then the mean step: a tracer that
    reads the length as a constant bakes it in."""

    def __init__(self):
        super().__init__()
        self.pos = torch.nn.Parameter(torch.randn(64, 6))

    def forward(self, x):
        h = x + self.pos[:x.shape[1]]
        return torch.softmax(self.fc(h.sum(1) / x.shape[1]), dim=1)


def test_server_side_artifacts_that_prove_a_shorter_length_take_any_length(tmp_path):
    """ONNX keeps the program's open length and proves it; the traced TorchScript does not.
    The ONNX runner then answers a length neither probe used as the program does, and
    verify refuses an artifact whose manifest claims any length it does not take."""
    import json

    import pytest

    import deploykit
    from deploykit import formats
    from deploykit.bundle import SELF_DIGEST, manifest_digest
    from deploykit.errors import InputError

    dims = ({0: torch.export.Dim("batch", max=512), 1: torch.export.Dim("steps", max=64)},)
    module = PositionalMean().eval()
    program = torch.export.export(module, (torch.zeros(4, 5, 6),), dynamic_shapes=dims)
    x = np.random.default_rng(0).normal(size=(40, 9, 6)).astype(np.float32)
    r = deploykit.export(program, ["onnx", "torchscript"], sample=x, out=tmp_path / "b",
                         quiet=True)
    assert r.ok, [c.reason for c in r.cells]
    b = deploykit.load_bundle(r.bundle)
    assert {a.target: a.any_length for a in b.artifacts} == {"onnx": True, "torchscript": False}
    onnx = b.artifact("onnx")
    runner = formats.open_runner("onnx", b.root / onnx.path, onnx.signature(b.signature))
    x4 = x[:5, :4]
    with torch.no_grad():
        want = module(torch.from_numpy(x4)).numpy()
    np.testing.assert_allclose(runner.predict({"x": x4})["probabilities"], want, atol=1e-5)
    with pytest.raises(InputError, match="axis 1 takes 1 to 9 steps, got 10"):
        runner.predict({"x": np.zeros((2, 10, 6), np.float32)})  # longer was never proved
    runner.close()
    assert deploykit.verify(r.bundle).ok
    manifest = json.loads((r.bundle / "manifest.json").read_text())
    next(a for a in manifest["artifacts"] if a["target"] == "torchscript")["any_length"] = True
    manifest[SELF_DIGEST] = manifest_digest(manifest)  # as a converter's bug would write it
    (r.bundle / "manifest.json").write_text(json.dumps(manifest))
    failed = [res for res in deploykit.verify(r.bundle).results if not res]
    assert [f.target for f in failed] == ["torchscript"]
    assert "disagrees at a shorter one" in failed[0].failures[0]


def test_a_dynamic_sequence_length_needs_a_sample():
    import pytest

    from deploykit.errors import SourceError

    with pytest.raises(SourceError, match=r"dynamic dimensions \[batch, \?, 6\].*--sample"):
        detect(_any_length_program())


class TwoInputs(torch.nn.Module):
    """Features and a per-row weight, by name."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(6, 3)

    def forward(self, features, weight):
        return torch.softmax(self.fc(features) * weight, dim=1)


def test_several_named_inputs_keep_their_names_and_order():
    rng = np.random.default_rng(0)
    sample = {"features": rng.normal(size=(40, 6)).astype(np.float32),
              "weight": rng.uniform(0.5, 2, (40, 1)).astype(np.float32)}
    src = detect(TwoInputs(), sample=sample)
    assert [(s.name, s.shape) for s in src.signature.inputs] == [("features", (None, 6)),
                                                                  ("weight", (None, 1))]
    with torch.no_grad():
        want = TwoInputs()(*map(torch.from_numpy, sample.values())).numpy()
    np.testing.assert_allclose(src.reference["probabilities"], want, rtol=1e-6, atol=1e-7)
    program = torch.export.export(TwoInputs().eval(), tuple(map(torch.from_numpy,
                                                                sample.values())))
    src = detect(program, sample=sample)  # a program names its inputs after forward's
    assert [s.name for s in src.signature.inputs] == ["features", "weight"]


def test_a_bare_array_for_several_inputs_is_refused_by_name():
    import pytest

    from deploykit.errors import SourceError

    program = torch.export.export(TwoInputs().eval(), (torch.zeros(4, 6), torch.ones(4, 1)))
    with pytest.raises(SourceError, match=r"takes 2 inputs \(features, weight\): pass one "
                                          r"sample array per input name \(an .npz"):
        detect(program, sample=np.zeros((40, 6), np.float32))


class InPlace(torch.nn.Module):
    """An in-place op on a value nothing else reads (as Keras-on-torch's BatchNorm writes
    them), and one on a value read again afterwards."""

    def forward(self, x):
        scale = (x * x + 1).rsqrt_()
        y = x * 2
        before = y + 1
        y.mul_(3)
        return scale + y + before


def test_executorch_lowering_drops_in_place_ops_and_keeps_the_values():
    from deploykit.formats import torch_program

    program = torch.export.export(InPlace(), (torch.randn(4, 6),))
    mutable = [str(n.target) for n in program.graph.nodes if torch_program._mutable(n)]
    assert mutable == ["aten.rsqrt_.default", "aten.mul_.Tensor"], mutable
    torch_program._out_of_place(program)  # in place, on the program
    kept = [str(n.target) for n in program.graph.nodes if torch_program._mutable(n)]
    assert kept == ["aten.mul_.Tensor"], kept  # `y` is read after it is written
    simple = torch_program.simplified(program)
    assert not any(torch_program._mutable(n) for n in simple.graph.nodes)
    x = torch.randn(4, 6)
    torch.testing.assert_close(simple.module()(x), InPlace()(x))


class Gates(torch.nn.Module):
    """A recurrent cell's gates: one projection chunked along the features."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(4, 9)

    def forward(self, x):
        z, r, h = self.fc(x).chunk(3, dim=1)
        return torch.sigmoid(z) * torch.tanh(h) + r


def test_executorch_lowering_keeps_the_batch_of_a_chunked_projection():
    """ExecuTorch's edge check pinned the batch of a chunk's pieces to the example's (16)."""
    from executorch import exir

    from deploykit.formats import torch_program
    from deploykit.formats.torch_program import EXAMPLE_BATCH, MAX_BATCH

    program = torch.export.export(Gates().eval(), (torch.zeros(EXAMPLE_BATCH, 4),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", max=MAX_BATCH)},))
    simple = torch_program.simplified(program)
    assert "chunk" not in str(simple.graph)
    x = torch.randn(EXAMPLE_BATCH, 4)
    torch.testing.assert_close(simple.module()(x), Gates()(x))
    edge = exir.to_edge(simple).exported_program()
    assert [int(r.upper) for r in edge.range_constraints.values()] == [MAX_BATCH]


class Attention(torch.nn.Module):
    """Self-attention as users write it: ``nn.MultiheadAttention`` (batch first), whose heads
    are ``transpose(...).contiguous()`` then ``view``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp, self.head = torch.nn.Linear(6, 16), torch.nn.Linear(16, 3)
        self.mha = torch.nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x):
        h = self.inp(x)
        return torch.softmax(self.head((h + self.mha(h, h, h)[0]).mean(1)), -1)


def test_simplifying_keeps_the_copy_attention_views_its_heads_through():
    """Every ``contiguous`` was dropped, so at a dynamic batch the heads' view failed
    ("Cannot view a tensor with shape [10, s77, 16] ...") and ExecuTorch could not lower
    an attention model users bring."""
    from deploykit.formats import torch_program

    program = torch.export.export(Attention().eval(), (torch.randn(4, 10, 6),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", max=1024)},))
    simple = torch_program.simplified(program)
    x = torch.randn(5, 10, 6)
    torch.testing.assert_close(simple.module()(x), Attention().eval()(x))


class SqueezeExcite(torch.nn.Module):
    """Channels-last global average pools, as Keras-on-torch writes them: kept dims (a
    squeeze-excite gate) and dropped ones (the classifier's pool)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.gate = torch.nn.Linear(8, 8)

    def forward(self, x):  # x: [batch, height, width, channels]
        scale = torch.sigmoid(self.gate(x.mean(dim=(1, 2), keepdim=True)))
        return (x * scale).mean(dim=[-3, -2])


@pytest.mark.slow  # lowers a program with XNNPACK (6 s)
def test_executorch_lowering_keeps_channels_last_pools_inside_xnnpack():
    """XNNPACK takes a mean over the last two dimensions only: each channels-last pool split
    the delegate and ran in ExecuTorch's portable kernels."""
    from executorch import exir
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    from deploykit.formats import executorch

    x = torch.randn(3, 5, 6, 8)
    program = torch.export.export(SqueezeExcite().eval(), (x,))
    pooled = executorch._pooled_over_last_dims(program)
    torch.testing.assert_close(pooled.module()(x), SqueezeExcite()(x))
    lowered = exir.to_edge_transform_and_lower(pooled, partitioner=[XnnpackPartitioner()])
    calls = [str(n.target) for n in lowered.exported_program().graph.nodes
             if n.op == "call_function"]
    assert calls.count("executorch_call_delegate") == 1 and not any("mean" in c for c in calls), \
        calls


RUN_PTE_THEN_LOWER = """
import sys, numpy as np, torch
import deploykit
from deploykit import formats
x = np.load(sys.argv[2])
got = formats.open_artifact(deploykit.load_bundle(sys.argv[1]), "executorch").predict(x)
np.save(sys.argv[3], next(iter(got.values())))
print("compiler imported:", "executorch.exir" in sys.modules)
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir import to_edge_transform_and_lower
from executorch.runtime import Runtime
class Twice(torch.nn.Module):
    def forward(self, v):
        return v * 2
pte = to_edge_transform_and_lower(torch.export.export(Twice(), (torch.ones(2, 3),)),
                                  partitioner=[XnnpackPartitioner()]).to_executorch().buffer
out = Runtime.get().load_program(pte).load_method("forward").execute([torch.ones(2, 3)])[0]
print("lowered after:", out.numpy().tolist())
"""


@pytest.mark.slow  # exports to ExecuTorch, then a fresh process opens it and lowers a program
def test_running_a_pte_leaves_the_compiler_unimported_and_importable(tmp_path):
    """Opening a .pte imported ExecuTorch's whole compiler (3 s of CPU in every process that
    only runs one); the runtime now loads without it, and the compiler still imports and
    lowers afterwards in the same process."""
    import subprocess
    import sys

    from sources_for_tests import sample, torch_model

    import deploykit

    model, x = torch_model().eval(), sample()
    assert deploykit.export(model, ["executorch"], out=tmp_path / "b", sample=x, quiet=True).ok
    np.save(tmp_path / "x.npy", x)
    r = subprocess.run([sys.executable, "-c", RUN_PTE_THEN_LOWER, str(tmp_path / "b"),
                        str(tmp_path / "x.npy"), str(tmp_path / "got.npy")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "compiler imported: False" in r.stdout, r.stdout
    assert "lowered after: [[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]" in r.stdout, r.stdout
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "got.npy"), want, atol=1e-5, rtol=1e-4)


def test_whole_numbers_scaling_a_float_tensor_quantise_to_int8(tmp_path):
    """``x * 2 - 1`` and ``y * 100 + 150`` (the usual input scaling and output unscaling):
    the int8 quantiser made each integer an int64 constant and failed to calibrate it
    ("histogram_cpu" not implemented for 'Long'). The artifact now follows the module."""
    import deploykit

    torch.manual_seed(0)
    X = np.random.default_rng(0).normal(size=(200, 10)).astype(np.float32)

    class Scaled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(),
                                           torch.nn.Linear(16, 1))

        def forward(self, x):
            return self.net(x * 2 - 1) * 100 + 150

    model = Scaled().eval()
    r = deploykit.export(model, "tflite-int8", out=tmp_path / "b", sample=X, quiet=True)
    assert r.ok, r.cells[0].reason
    with torch.no_grad():
        want = model(torch.from_numpy(X)).numpy()
    with deploykit.load_bundle(tmp_path / "b") as b:
        assert b.artifact("tflite-int8").route[-2:] == ("torch", "tflite-int8")
        got = b.predict(X, target="tflite-int8").outputs["predictions"]
    assert np.abs(got - want).max() < 0.05 * np.ptp(want), (np.abs(got - want).max(), np.ptp(want))


def test_a_model_failing_on_its_sample_is_one_error_naming_what_it_was_given(capfd):
    """A sample of the wrong width or dtype reached torch.export, whose error blamed the
    module ("make its forward traceable") after 38 lines of its log on stderr, or escaped as
    the framework's own RuntimeError/ValueError; now one SourceError says what failed on
    what. (A pipeline selecting columns by name, once refused here, now exports: its
    reference is the model's own prediction on the named columns.)"""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from deploykit.errors import SourceError

    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    for bad, given in ((x[:, :3], "x: float32 of shape [40, 3]"),
                       (x.astype(np.int64), "x: int64 of shape [40, 4]")):
        with pytest.raises(SourceError, match="the model fails on the sample") as e:
            detect(net, sample=bad)
        assert given in str(e.value) and "RuntimeError" in str(e.value), e.value
    assert capfd.readouterr().err == ""
    frame = pd.DataFrame(x[:, :3], columns=["age", "plan", "usage"])
    named = make_pipeline(ColumnTransformer([("s", StandardScaler(), ["age", "usage"])]),
                          LogisticRegression()).fit(frame, np.arange(40) % 2)
    source = detect(named, sample=frame.to_numpy())
    np.testing.assert_array_equal(source.reference["label"], named.predict(frame))
    assert source.signature.inputs[0].columns == ("age", "plan", "usage")


def test_the_frameworks_warnings_while_reading_a_model_go_to_the_log_not_the_terminal(caplog):
    """torch.export warns about an nn.GRU's ``_flat_weights`` on every such module: the line
    reached the user's stderr, also with ``quiet=True``."""
    import logging
    import warnings

    class Gru(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.rnn = torch.nn.GRU(4, 8, batch_first=True)
            self.fc = torch.nn.Linear(8, 3)

        def forward(self, x):
            return torch.softmax(self.fc(self.rnn(x)[1][-1]), dim=1)

    x = np.random.default_rng(0).normal(size=(20, 10, 4)).astype(np.float32)
    with warnings.catch_warnings(record=True) as shown, \
            caplog.at_level(logging.DEBUG, logger="deploykit.native"):
        warnings.simplefilter("always")
        detect(Gru().eval(), sample=x)
    assert not [w for w in shown if "_flat_weights" in str(w.message)]
    assert any("_flat_weights" in r.getMessage() for r in caplog.records)
