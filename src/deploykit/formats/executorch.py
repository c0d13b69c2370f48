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
    """Lower to XNNPACK with a dynamic batch; where lowering narrows the batch (a recurrent
    layer's loop, a Keras reshape), the program is lowered at a fixed batch of 1 instead,
    recorded in the manifest (phones run one row at a time anyway)."""
    require("executorch.exir", extra="mobile", purpose="PyTorch -> ExecuTorch")
    from deploykit.formats.torch_program import fixed_batch, load_program, with_batch

    module = load_program(src).module()
    info: dict[str, Any] = {"file": "model.pte"}
    try:
        lowered = _lower(module, ctx.signature)
    except _NarrowedBatch:
        lowered = _lower(module, with_batch(ctx.signature, 1))
        info["batch"] = 1
    if fixed_batch(ctx.signature):
        info["batch"] = fixed_batch(ctx.signature)
    (out / "model.pte").write_bytes(lowered.to_executorch().buffer)
    from importlib import metadata

    return {**info, "versions": {"executorch": metadata.version("executorch")}}


class _NarrowedBatch(ValueError):
    pass


def _lower(module, signature: dict[str, Any]):
    """Export at the standard example batch (see torch_program.EXAMPLE_BATCH) and lower.
    Constant propagation first (it lets XNNPACK take the weights), unless the program
    writes to a constant, which it then refuses."""
    exir = require("executorch.exir")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass

    from deploykit.formats.torch_program import MAX_BATCH, export_program

    for fold in (True, False):
        program = _drop_contiguous(export_program(module, signature))
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


def _drop_contiguous(program):
    """Remove ``aten.contiguous`` nodes: they never change values, but Keras-on-torch convs
    force channels-last layouts on their kernels that way, which keeps the weights from being
    constant-folded into XNNPACK and makes ExecuTorch's layout copy fail (error 0x12)."""
    torch = require("torch")
    graph = program.graph_module.graph
    for n in list(graph.nodes):
        if n.op == "call_function" and n.target == torch.ops.aten.contiguous.default:
            n.replace_all_uses_with(n.args[0])
            graph.erase_node(n)
    program.graph_module.recompile()
    return program


@register_runner("executorch")
class ExecutorchRunner(Runner):
    def _load(self) -> None:
        self.torch = require("torch")
        runtime = require("executorch.runtime", extra="mobile", purpose="to run a .pte")
        self.program = runtime.Runtime.get().load_program(str(self.path))
        self.method = self.program.load_method("forward")

    def _predict(self, inputs):
        args = [self.torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values()]
        return [o.numpy() for o in self.method.execute(args)]
