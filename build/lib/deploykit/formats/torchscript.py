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

node("torchscript", "torchscript", column=5, serve_rank=2, extra="torch",
     distributions=("torch",), description="TorchScript module (.pt)")
node("ptl", "ptl", column=6, serve_rank=4, extra="torch", distributions=("torch",),
     description="PyTorch mobile lite interpreter (.ptl, legacy)")


def _trace(module, ctx: EdgeContext):
    torch = require("torch")
    from deploykit.formats.torch_program import example_input

    with torch.no_grad():
        return torch.jit.trace(module, (example_input(ctx.signature, batch=7),),
                               check_trace=False)


def _program_module(src: Path):
    from deploykit.formats.torch_program import load_program

    return load_program(src).module()


def _save(traced, out: Path, lite: bool) -> dict[str, Any]:
    torch = require("torch")
    name = "model.ptl" if lite else "model.pt"
    if lite:
        traced._save_for_lite_interpreter(str(out / name))
    else:
        torch.jit.save(traced, str(out / name))
    return {"file": name, "versions": {"torch": torch.__version__}}


@edge("torch", "torchscript", requires=("torch",))
def torch_to_torchscript(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    return _save(_trace(_program_module(src), ctx), out, lite=False)


@edge("torch", "ptl", requires=("torch",))
def torch_to_ptl(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    return _save(_trace(_program_module(src), ctx), out, lite=True)


# Keras on torch is traced from the live Keras model, not from its torch.export program:
# tracing the program's module bakes Keras's reshape targets (batch included) into the trace.
@edge("keras", "torchscript", requires=("keras", "torch"), keras_backend="torch")
def keras_to_torchscript(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    from deploykit.formats.keras import as_torch_module

    return _save(_trace(as_torch_module(src), ctx), out, lite=False)


@edge("keras", "ptl", requires=("keras", "torch"), keras_backend="torch")
def keras_to_ptl(src: Path, out: Path, ctx: EdgeContext) -> dict[str, Any]:
    from deploykit.formats.keras import as_torch_module

    return _save(_trace(as_torch_module(src), ctx), out, lite=True)


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
