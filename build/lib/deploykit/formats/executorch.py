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
    exir = require("executorch.exir", extra="mobile", purpose="PyTorch -> ExecuTorch")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass

    from deploykit.formats.torch_program import MAX_BATCH, export_program, load_program

    # Re-export at the standard example batch (see torch_program.EXAMPLE_BATCH).
    program = _drop_contiguous(export_program(load_program(src).module(), ctx.signature))
    lowered = exir.to_edge_transform_and_lower(constant_prop_pass(program),
                                               partitioner=[XnnpackPartitioner()])
    ranges = list(lowered.exported_program().range_constraints.values())
    if ranges and int(ranges[0].upper) < MAX_BATCH:
        raise ValueError(f"lowering narrowed the dynamic batch to {ranges[0]}; the .pte would "
                         f"reject larger batches")
    (out / "model.pte").write_bytes(lowered.to_executorch().buffer)
    from importlib import metadata

    return {"file": "model.pte", "versions": {"executorch": metadata.version("executorch")}}


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
