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


TRACE_BATCH = 13  # a batch no model dimension is likely to equal (see _generalises)


def _trace(module, ctx: EdgeContext) -> tuple[Any, dict[str, Any]]:
    """Trace at :data:`TRACE_BATCH`; when the trace does not carry over to another batch
    (the module computes a shape from the batch size, such as a recurrent layer's zero
    state, which tracing records as a constant), trace at a fixed batch of 1 instead and
    say so (``batch`` in the returned facts)."""
    torch = require("torch")
    from deploykit.formats.torch_program import example_inputs, fixed_batch

    if fixed_batch(ctx.signature):
        with torch.no_grad():
            return torch.jit.trace(module, example_inputs(ctx.signature),
                                   check_trace=False), {"batch": fixed_batch(ctx.signature)}
    with torch.no_grad():
        traced = torch.jit.trace(module, example_inputs(ctx.signature, batch=TRACE_BATCH),
                                 check_trace=False)
        if _generalises(traced, module, example_inputs(ctx.signature, batch=3)):
            return traced, {}
        one = torch.jit.trace(module, example_inputs(ctx.signature, batch=1),
                              check_trace=False)
    return one, {"batch": 1}


def _generalises(traced, module, xs: tuple) -> bool:
    """No constant equal to the trace batch in the graph (running a trace whose recurrent
    state was sized for it on a larger batch can crash the process), and the same outputs
    as the module on another batch."""
    torch = require("torch")
    if f"prim::Constant[value={TRACE_BATCH}]" in str(traced.inlined_graph):
        return False
    xs = tuple(x + torch.rand_like(x) if x.is_floating_point() else x for x in xs)
    try:
        got, want = traced(*xs), module(*xs)
    except RuntimeError:
        return False
    got = got if isinstance(got, (tuple, list)) else [got]
    want = want if isinstance(want, (tuple, list)) else [want]
    return all(g.shape == w.shape and torch.allclose(g, w, rtol=1e-4, atol=1e-5)
               for g, w in zip(got, want, strict=False))


def _program_module(src: Path):
    """The program as a module whose outputs trace: a dict becomes a tuple of its values in
    the program's order, the order the artifact's outputs are named in (tracing refuses
    a dict: "Encountering a dict at the output of the tracer")."""
    torch = require("torch")
    from deploykit.formats.torch_program import load_program

    program = load_program(src)
    module = program.module()
    if program.call_spec.out_spec is None or program.call_spec.out_spec.type is not dict:
        return module

    class Values(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, *xs):
            return tuple(self.inner(*xs).values())

    return Values()


def _save(trace: tuple[Any, dict[str, Any]], out: Path, lite: bool) -> dict[str, Any]:
    torch = require("torch")
    traced, facts = trace
    name = "model.ptl" if lite else "model.pt"
    if lite:
        traced._save_for_lite_interpreter(str(out / name))
    else:
        torch.jit.save(traced, str(out / name))
    return {"file": name, **facts, "versions": {"torch": torch.__version__}}


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
        if self.threads:  # torch's intra-op pool is one per process
            self.torch.set_num_threads(self.threads)
        self.module = self.torch.jit.load(str(self.path)).eval()

    def _predict(self, inputs):
        with self.torch.no_grad():
            return _outputs(self.module(*[self.torch.from_numpy(np.ascontiguousarray(v))
                                          for v in inputs.values()]))


@register_runner("ptl")
class LiteInterpreterRunner(Runner):
    def _load(self) -> None:
        self.torch = require("torch", purpose="to run a .ptl")
        if self.threads:
            self.torch.set_num_threads(self.threads)
        from torch.jit.mobile import _load_for_lite_interpreter

        self.module = _load_for_lite_interpreter(str(self.path))

    def _predict(self, inputs):
        with self.torch.no_grad():
            return _outputs(self.module(*[self.torch.from_numpy(np.ascontiguousarray(v))
                                          for v in inputs.values()]))
