"""TorchScript (``.pt``) and the PyTorch mobile lite interpreter (``.ptl``): nodes, edges, runners.

Both are traced from the ``torch.export`` program's module; tracing may bake in shapes, which
the parity check's batch sizes 1 / odd / full would catch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deploykit._lazy import require
from deploykit.formats.base import Runner, register_runner
from deploykit.graph import EdgeContext, edge, node

node("torchscript", "torchscript", description="TorchScript module (.pt)")
node("ptl", "ptl", description="PyTorch mobile lite interpreter (.ptl, legacy)")


def _trace(src: Path, ctx: EdgeContext):
    torch = require("torch")
    from deploykit.formats.torch_program import example_input, load_program

    module = load_program(src).module()
    with torch.no_grad():
        traced = torch.jit.trace(module, (example_input(ctx.signature),), check_trace=False)
    return torch, traced


@edge("torch", "torchscript", requires=("torch",))
def torch_to_torchscript(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    torch, traced = _trace(src, ctx)
    torch.jit.save(traced, str(out / "model.pt"))
    return {"file": "model.pt", "versions": {"torch": torch.__version__}}


@edge("torch", "ptl", requires=("torch",))
def torch_to_ptl(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    torch, traced = _trace(src, ctx)
    traced._save_for_lite_interpreter(str(out / "model.ptl"))
    return {"file": "model.ptl", "versions": {"torch": torch.__version__}}


def _outputs(out) -> list[np.ndarray]:
    outs = out if isinstance(out, (tuple, list)) else [out]
    return [o.detach().numpy() for o in outs]


@register_runner("torchscript")
class TorchScriptRunner(Runner):
    def _load(self) -> None:
        self.torch = require("torch", purpose="to run TorchScript")
        self.module = self.torch.jit.load(str(self.path)).eval()

    def _predict(self, inputs):
        with self.torch.no_grad():
            return _outputs(self.module(*[self.torch.from_numpy(np.ascontiguousarray(v))
                                          for v in inputs.values()]))


@register_runner("ptl")
class LiteInterpreterRunner(Runner):
    def _load(self) -> None:
        self.torch = require("torch", purpose="to run a .ptl")
        from torch.jit.mobile import _load_for_lite_interpreter

        self.module = _load_for_lite_interpreter(str(self.path))

    def _predict(self, inputs):
        with self.torch.no_grad():
            return _outputs(self.module(*[self.torch.from_numpy(np.ascontiguousarray(v))
                                          for v in inputs.values()]))
