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
    :func:`_simplified` for the causes removed first), the program is lowered at a fixed
    batch of 1 instead, recorded in the manifest (phones run one row at a time anyway)."""
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

    from deploykit.formats.torch_program import MAX_BATCH

    for fold in (True, False):
        program = _simplified(_program_at(src, signature))
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


def _simplified(program):
    """The program without nodes that never change values, and without in-place ops.

    Keras-on-torch leaves an ``_assert_tensor_metadata`` and a same-dtype ``to`` per tensor
    conversion (two thirds of a compiled scikit-learn program's nodes); they slow every later
    pass, and each splits XNNPACK's partitions. ``aten.contiguous`` goes too: Keras-on-torch
    convs force channels-last kernels that way, which keeps the weights from folding and
    makes ExecuTorch's layout copy fail (error 0x12). ``torch.export`` keeps in-place ops,
    and Keras-on-torch BatchNorm computes its scale with them (``rsqrt_``, ``mul_``):
    constant propagation then refuses the program ("constant is mutated") and every weight
    stays a runtime input. Those on values nothing else reads become out-of-place ops
    (:func:`_out_of_place`); a program with others is functionalised (decompositions with an
    empty table: no op is decomposed) before copies are dropped. On MobileNetV3 this halved
    lowering time and the ``.pte``. Splits become slices (:func:`_slice_splits`), which
    keeps a recurrent layer's batch dynamic."""
    torch = require("torch")
    aten = torch.ops.aten

    def useless(n) -> bool:
        return ((n.target == aten._assert_tensor_metadata.default and not n.users)
                or (n.target in (aten.to.dtype, aten.to.dtype_layout, aten._to_copy.default)
                    and _same_dtype(n)))

    _drop(program, lambda n: n.target == aten.contiguous.default)
    _slice_splits(program)
    _out_of_place(program)
    if any(_mutable(n) for n in program.graph.nodes):
        program = program.run_decompositions({})  # first: an in-place op may write to a copy
    _drop(program, useless)
    return program


def _slice_splits(program) -> None:
    """Each ``chunk``/``split`` into pieces of static size becomes one ``slice`` per piece.

    ExecuTorch's edge-dialect check calls ``len()`` on the first piece of an op returning a
    list of tensors, which pins a dynamic first dimension to the example's: a GRU's gates
    (``chunk`` along the features of a ``(batch, 3 * units)`` matrix) narrowed the batch to
    16, and the program was lowered a second time at batch 1."""
    import operator

    aten = require("torch").ops.aten
    graph = program.graph_module.graph
    for n in list(graph.nodes):
        pieces = n.meta.get("val")
        if (n.op != "call_function" or n.target not in (
                aten.chunk.default, aten.split.Tensor, aten.split_with_sizes.default)
                or not isinstance(pieces, (list, tuple))
                or any(u.target is not operator.getitem for u in n.users)):
            continue
        dim = n.args[2] if len(n.args) > 2 else n.kwargs.get("dim", 0)
        sizes = [piece.shape[dim] for piece in pieces]
        if not all(isinstance(size, int) for size in sizes):
            continue
        starts = np.cumsum([0, *sizes]).tolist()
        for use in list(n.users):
            with graph.inserting_before(use):
                piece = graph.call_function(aten.slice.Tensor, (
                    n.args[0], dim, starts[use.args[1]], starts[use.args[1] + 1]))
            piece.meta = dict(use.meta)
            use.replace_all_uses_with(piece)
            graph.erase_node(use)
        graph.erase_node(n)
    program.graph_module.recompile()


def _mutable(node) -> bool:
    torch = require("torch")
    return (node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload)
            and node.target._schema.is_mutable)


def _out_of_place(program) -> None:
    """An in-place op on a value nothing else reads (``rsqrt_(var + eps)``, Keras-on-torch's
    BatchNorm) becomes its out-of-place twin, with the same value: functionalising the whole
    program for such ops took MobileNetV3 6 of its 36 CPU-seconds of lowering."""
    for n in program.graph.nodes:
        twin = _functional_twin(n) if _mutable(n) and n.args else None
        written = n.args[0] if twin is not None else None
        if (getattr(written, "op", None) == "call_function" and len(written.users) == 1
                and not _mutable(written) and _fresh(written)):
            n.target = twin
    program.graph_module.recompile()


def _functional_twin(node):
    """``aten.mul.Tensor`` for ``aten.mul_.Tensor``; None for other mutable ops."""
    name = node.target._schema.name.split("::")[-1]
    if not name.endswith("_"):
        return None
    twin = getattr(getattr(require("torch").ops.aten, name[:-1], None),
                   node.target._overloadname, None)
    return None if twin is None or twin._schema.is_mutable else twin


def _fresh(node) -> bool:
    """The op makes a new tensor (its result aliases none of its inputs)."""
    returns = getattr(getattr(node.target, "_schema", None), "returns", None)
    return returns is not None and all(r.alias_info is None for r in returns)


def _same_dtype(node) -> bool:
    arg = node.args[0]
    before, after = getattr(arg, "meta", {}).get("val"), node.meta.get("val")
    return before is not None and after is not None and before.dtype == after.dtype \
        and before.shape == after.shape


def _drop(program, useless) -> None:
    """Remove the call nodes ``useless(node)`` picks, passing each one's input through."""
    graph = program.graph_module.graph
    for n in list(graph.nodes):
        if n.op == "call_function" and useless(n):
            if n.users:
                n.replace_all_uses_with(n.args[0])
            graph.erase_node(n)
    program.graph_module.recompile()


@register_runner("executorch")
class ExecutorchRunner(Runner):
    def _load(self) -> None:
        self.torch = require("torch")
        runtime = require("executorch.runtime", extra="mobile", purpose="to run a .pte")
        if self.threads:  # the runtime's one thread pool (XNNPACK), for the whole process
            from executorch.extension.pybindings import portable_lib

            portable_lib._unsafe_reset_threadpool(self.threads)
        self.program = runtime.Runtime.get().load_program(str(self.path))
        self.method = self.program.load_method("forward")

    def _predict(self, inputs):
        args = [self.torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values()]
        return [o.numpy() for o in self.method.execute(args)]
