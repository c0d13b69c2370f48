"""The ``torch.export`` program node (``.pt2``): PyTorch sources and Keras-on-torch meet here.

Every PyTorch edge (TorchScript, lite interpreter, ExecuTorch, ONNX, LiteRT) starts from this
program, so a model only has to be exportable once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deploykit._lazy import require
from deploykit.formats.base import Runner, register_runner
from deploykit.graph import node

node("torch", "torch_program", description="PyTorch torch.export program (.pt2)")

MAX_BATCH = 1024  # upper bound of the dynamic batch; ExecuTorch plans memory for it
# Example batch for torch.export. Not 0/1 (they specialise), and >= 16: with a smaller one a
# fake-tensor conv kernel check (input.size(0) >= 16 in use_mkldnn) adds a guard that narrows
# the batch range to [2, 15] during ExecuTorch lowering, which then plans memory for 15 rows.
EXAMPLE_BATCH = 16


def example_inputs(signature: dict[str, Any], batch: int = EXAMPLE_BATCH) -> tuple:
    """Zero tensors for every input of the signature, in its order (``batch`` rows unless the
    signature fixes the batch: then that many)."""
    torch = require("torch")
    return tuple(torch.zeros([batch if d is None else d for d in spec["shape"]],
                             dtype=getattr(torch, spec["dtype"]))
                 for spec in signature["inputs"])


def with_batch(signature: dict[str, Any], batch: int | None) -> dict[str, Any]:
    """The signature with every input's batch dimension set to ``batch`` (``None``: dynamic)."""
    return {**signature, "inputs": [{**spec, "shape": [batch, *spec["shape"][1:]]}
                                    for spec in signature["inputs"]]}


def fixed_batch(signature: dict[str, Any]) -> int | None:
    """The batch a fixed-batch program takes (``None``: any batch)."""
    return signature["inputs"][0]["shape"][0]


def with_dynamic_batch(program, specs: list[dict[str, Any]], batch: int):
    """Re-export a program exported at a fixed ``batch`` with a dynamic one, or ``None`` when
    its graph depends on that batch (then it stays fixed). Its guards are what pin the batch;
    the graph is traced again without them, must give the original's outputs on the
    original's rows and the same outputs for a part of them, and parity later proves every
    batch size against the original."""
    torch = require("torch")
    module = program.module(check_guards=False)
    signature = with_batch({"inputs": specs}, None)
    gen = torch.Generator().manual_seed(0)
    xs = tuple(torch.randn(x.shape, generator=gen) if x.is_floating_point() else x
               for x in example_inputs(signature, batch=batch))  # the batch the program takes
    try:
        dynamic = export_program(module, signature)
        run, want = dynamic.module(), program.module()
        with torch.no_grad():  # the original's rows, and the same rows in a smaller batch
            want = _flat(want(*xs))
            same = _close(run(*xs), want) and \
                _close(run(*(x[:3] for x in xs)), [w[:3] for w in want])
    except Exception:
        return None
    return dynamic if same else None


def _flat(out) -> list:
    """A module's output(s) as a list of tensors."""
    return list(out.values()) if isinstance(out, dict) else \
        list(out) if isinstance(out, (tuple, list)) else [out]


def _close(a, want: list) -> bool:
    torch = require("torch")
    a = _flat(a)
    return len(a) == len(want) and all(
        x.shape == y.shape and torch.allclose(x, y, rtol=1e-4, atol=1e-5)
        for x, y in zip(a, want, strict=True))


def export_program(module, signature: dict[str, Any], path: Path | None = None):
    """``torch.export`` a module with a dynamic batch dimension; save it when ``path`` is given."""
    torch = require("torch")
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    dynamic = (tuple({0: batch} for _ in signature["inputs"])
               if fixed_batch(signature) is None else None)
    if dynamic and _takes_varargs(module):  # forward(self, *xs): the inputs are one argument
        dynamic = (dynamic,)
    program = torch.export.export(module, example_inputs(signature), dynamic_shapes=dynamic,
                                  strict=False)
    if path is not None:
        torch.export.save(program, path)
    return program


def _takes_varargs(module) -> bool:
    import inspect

    return any(p.kind is p.VAR_POSITIONAL
               for p in inspect.signature(module.forward).parameters.values())


def load_program(path: Path):
    torch = require("torch", purpose="to load a torch.export program")
    return torch.export.load(path)


@register_runner("torch_program")
class TorchProgramRunner(Runner):
    def _load(self) -> None:
        if self.threads:  # torch's intra-op pool is one per process
            require("torch").set_num_threads(self.threads)
        self.module = load_program(self.path).module()

    def _predict(self, inputs):
        torch = require("torch")
        with torch.no_grad():
            out = self.module(*[torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values()])
        outs = out if isinstance(out, (tuple, list)) else [out]
        return [o.detach().numpy() for o in outs]
