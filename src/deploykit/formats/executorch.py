"""ExecuTorch (``.pte``, XNNPACK delegate): node, edge from a ``torch.export`` program, runner.

The batch stays dynamic up to :data:`~deploykit.formats.torch_program.MAX_BATCH`: memory is
planned for that upper bound, so any batch up to it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deploykit._lazy import require
from deploykit.formats.base import Runner, register_runner
from deploykit.graph import EdgeContext, edge, node

node("executorch", "executorch", column=7, serve_rank=3, devices=("android", "ios"),
     extra="mobile", distributions=("executorch",),
     description="ExecuTorch program (.pte), XNNPACK")


@edge("torch", "executorch", requires=("torch", "executorch"))
def torch_to_executorch(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    """Lower to XNNPACK with a dynamic batch; where lowering still narrows the batch (see
    :func:`~deploykit.formats.torch_program.simplified` for the causes removed first), the
    program is lowered at a fixed batch of 1 instead, recorded in the manifest (phones run
    one row at a time anyway)."""
    require("executorch.exir", extra="mobile", purpose="PyTorch -> ExecuTorch")
    from deploykit.formats.torch_program import fixed_batch, with_batch

    info: dict[str, Any] = {"file": "model.pte"}
    try:
        lowered = _lower(src, ctx.signature)
    except _NarrowedBatch:
        lowered = _lower(src, with_batch(ctx.signature, 1))
        info["batch"] = 1
    if fixed_batch(ctx.signature):
        info["batch"] = fixed_batch(ctx.signature)
    (out / "model.pte").write_bytes(lowered.to_executorch().buffer)
    from importlib import metadata

    return {**info, "versions": {"executorch": metadata.version("executorch")}}


class _NarrowedBatch(ValueError):
    pass


def _lower(src: Path, signature: dict[str, Any]):
    """Lower the program at the signature's batch (see :func:`_program_at`). Constant
    propagation first (it lets XNNPACK take the weights), unless the program writes to a
    constant, which it then refuses."""
    exir = require("executorch.exir")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass

    from deploykit.formats.torch_program import MAX_BATCH, simplified

    for fold in (True, False):
        program = _grus_decomposed(_pooled_over_last_dims(simplified(_program_at(src, signature))))
        try:
            lowered = exir.to_edge_transform_and_lower(
                constant_prop_pass(program) if fold else program,
                partitioner=[XnnpackPartitioner()])
            break
        except RuntimeError as e:
            if not fold or "is mutated" not in str(e):
                raise
    ranges = list(lowered.exported_program().range_constraints.values())
    if signature["inputs"][0]["shape"][0] is None and ranges and int(ranges[0].upper) < MAX_BATCH:
        raise _NarrowedBatch(f"lowering narrowed the dynamic batch to {ranges[0]}")
    return lowered


def _grus_decomposed(program):
    """The program with each ``aten.gru`` as the ops it is made of, its gates' splits as
    slices (:func:`~deploykit.formats.torch_program.simplified` does that for the splits
    already there). ExecuTorch decomposes a GRU itself, after those splits were made slices,
    and its edge-dialect check then pinned the batch to the example's: the program was
    lowered again at a fixed batch of 1 (14 s of the 24 s the zoo's GRU -> LSTM took)."""
    torch = require("torch")
    from torch._decomp import get_decompositions

    from deploykit.formats.torch_program import _slice_splits

    grus = [torch.ops.aten.gru.input, torch.ops.aten.gru.data]
    if not any(n.target in grus for n in program.graph.nodes):
        return program
    program = program.run_decompositions(get_decompositions(grus))
    _slice_splits(program)
    return program


def _program_at(src: Path, signature: dict[str, Any]):
    """The saved program when its batch is the signature's (fixed, or dynamic from 1 to
    MAX_BATCH, as deploykit's own exports are), else exported again at the standard example
    batch (see torch_program.EXAMPLE_BATCH). Exporting again costs as much as the first
    export: 18 s for a compiled scikit-learn program of every estimator."""
    from deploykit.formats.torch_program import MAX_BATCH, export_program, fixed_batch, load_program

    program = load_program(src)
    want = fixed_batch(signature) or (1, MAX_BATCH)
    batches = {_batch(program, node) for node in program.graph.nodes
               if node.op == "placeholder" and node.name in program.graph_signature.user_inputs}
    return program if batches == {want} else export_program(program.module(), signature)


def _batch(program, placeholder) -> int | tuple[int, int] | None:
    """A program input's batch: its size, or the range of its dynamic size."""
    shape = getattr(placeholder.meta.get("val"), "shape", ())
    if not shape:
        return None
    dim = shape[0]
    if isinstance(dim, int):
        return dim
    bounds = program.range_constraints.get(dim.node.expr)
    try:
        return int(bounds.lower), int(bounds.upper)
    except (AttributeError, TypeError, OverflowError):  # no range, or no upper bound
        return None


def _pooled_over_last_dims(program):
    """Each mean over the middle dimensions of a 4-D tensor (``dim=[1, 2]``: a channels-last
    global average pool, as Keras-on-torch writes ``GlobalAveragePooling2D`` and every
    squeeze-excite block) becomes a mean over the last two of its transpose to channels-first
    (kept, then transposed back or squeezed), with the same values. XNNPACK takes only that
    form, so each such mean ran outside the delegate and split it: MobileNetV3 lowered to 12
    delegate calls and 10 portable means, and now to 2 calls, 12 % faster at batch 1 and
    25-30 % at batch 64 (one measurement each, outputs identical)."""
    aten = require("torch").ops.aten
    graph = program.graph_module.graph
    for n in list(graph.nodes):
        if n.op != "call_function" or n.target != aten.mean.dim or len(n.args) < 2 \
                or not n.args[1]:
            continue
        x = n.args[0]
        if len(getattr(x.meta.get("val"), "shape", ())) != 4 \
                or sorted(d % 4 for d in n.args[1]) != [1, 2]:
            continue
        keep = n.args[2] if len(n.args) > 2 else n.kwargs.get("keepdim", False)
        with graph.inserting_before(n):
            first = graph.call_function(aten.permute.default, (x, [0, 3, 1, 2]))
            first.meta["val"] = x.meta["val"].permute(0, 3, 1, 2)
            pooled = graph.call_function(aten.mean.dim, (first, [2, 3], True), {
                k: v for k, v in n.kwargs.items() if k != "keepdim"})
            pooled.meta["val"] = first.meta["val"].mean(dim=[2, 3], keepdim=True)
            if keep:  # [N, C, 1, 1] back to [N, 1, 1, C]
                out = graph.call_function(aten.permute.default, (pooled, [0, 2, 3, 1]))
                out.meta["val"] = pooled.meta["val"].permute(0, 2, 3, 1)
            else:  # to [N, C]
                out = graph.call_function(aten.squeeze.dims, (pooled, [2, 3]))
                out.meta["val"] = pooled.meta["val"].squeeze(3).squeeze(2)
        n.replace_all_uses_with(out)
        graph.erase_node(n)
    program.graph_module.recompile()
    return program


def _runtime_without_compiler():
    """``executorch.runtime``, without importing the compiler it does not use.

    Its Python bindings import ``executorch.exir._warnings`` for one decorator, and that runs
    ``executorch.exir``'s ``__init__``: the whole compiler (torch._dynamo, torchao), 3 of the
    4 s of CPU opening a ``.pte`` costs and torchao's load messages, in every process that
    only runs one (``deploykit verify`` of a bundle with 11 artifacts spent a quarter of its
    time there). An empty package stands in for ``executorch.exir`` while the runtime imports;
    both names leave ``sys.modules`` afterwards, so a later conversion in this process
    imports the real compiler as usual (a thread importing it for the first time during
    those milliseconds would get the stand-in: deploykit converts in worker processes).
    """
    import importlib.util
    import sys

    if "executorch.exir" in sys.modules or "executorch.runtime" in sys.modules:
        return require("executorch.runtime", extra="mobile", purpose="to run a .pte")
    try:
        spec = importlib.util.find_spec("executorch.exir")
    except ModuleNotFoundError:  # no executorch at all: require says which extra to install
        spec = None
    if spec is not None:
        sys.modules["executorch.exir"] = importlib.util.module_from_spec(spec)
    try:
        return require("executorch.runtime", extra="mobile", purpose="to run a .pte")
    finally:
        for name in ("executorch.exir._warnings", "executorch.exir"):
            sys.modules.pop(name, None)
        if "executorch" in sys.modules:
            vars(sys.modules["executorch"]).pop("exir", None)


@register_runner("executorch")
class ExecutorchRunner(Runner):
    def _load(self) -> None:
        self.torch = require("torch")
        runtime = _runtime_without_compiler()
        if self.threads:  # the runtime's one thread pool (XNNPACK), for the whole process
            from executorch.extension.pybindings import portable_lib

            portable_lib._unsafe_reset_threadpool(self.threads)
        self.program = runtime.Runtime.get().load_program(str(self.path))
        self.method = self.program.load_method("forward")

    def _predict(self, inputs):
        args = [self.torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values()]
        return [o.numpy() for o in self.method.execute(args)]
