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

node("executorch", "executorch", description="ExecuTorch program (.pte), XNNPACK")


@edge("torch", "executorch", requires=("torch", "executorch"))
def torch_to_executorch(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    exir = require("executorch.exir", extra="mobile", purpose="PyTorch -> ExecuTorch")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    from deploykit.formats.torch_program import load_program

    program = load_program(src)
    edge_program = exir.to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    config = exir.ExecutorchBackendConfig(sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass())
    pte = edge_program.to_executorch(config)
    (out / "model.pte").write_bytes(pte.buffer)
    from importlib import metadata

    return {"file": "model.pte", "versions": {"executorch": metadata.version("executorch")}}


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
