"""The Runner: load one artifact in its own runtime and predict named numpy outputs.

Subclasses implement ``_load`` and ``_predict`` only; validation against the artifact's
signature and the mapping of the runtime's outputs onto the signature's names live here.
:func:`deploykit.formats.open_runner` finds the runner registered for a runtime.
"""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from deploykit._runlog import native_output_logged
from deploykit.errors import DeploykitError, RunnerError
from deploykit.signature import Signature

RUNNERS: dict[str, str] = {}  # runtime name -> "module:Class", filled by format modules


def register_runner(runtime: str):
    """Register a Runner subclass for ``runtime`` (a class decorator)."""

    def deco(cls):
        RUNNERS[runtime] = f"{cls.__module__}:{cls.__name__}"
        cls.runtime = runtime
        return cls
    return deco


class Runner(ABC):
    """Base class. ``predict(inputs) -> {output name: array}`` in signature order.

    Args:
        path: the artifact (file or folder).
        signature: the artifact's signature (its batch may be fixed, e.g. ``[1, 64]``).
        outputs: the runtime's output names in signature order, when they differ.
        threads: the runtime's math threads (intra-op); None keeps the runtime's default.
            The server passes 1 per worker process: a runtime's own pool spinning between
            calls fights the web server for the cores.
    """

    runtime: ClassVar[str] = ""
    # Whether one loaded artifact may serve concurrent predict() calls; the others are run
    # one call at a time (a TFLite interpreter or a Node pipe must not be entered twice at
    # once: threads sharing a Bundle got "at least 1 reference to internal data", or another
    # row's answer)
    thread_safe: ClassVar[bool] = False
    _first_run = True

    def __init__(self, path: str | Path, signature: Signature,
                 outputs: Sequence[str] | None = None, *, threads: int | None = None) -> None:
        if threads is not None and (type(threads) is not int or threads < 1):
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        self.path = Path(path).resolve()  # runtimes in other processes have other cwds
        self.signature = signature
        # an artifact of a fixed batch takes any batch here, run in chunks of its own
        self.batch = signature.fixed_batch
        self._accepts = signature.any_batch() if self.batch else signature
        self.output_names = list(outputs) if outputs else None
        self.threads = threads
        self._signature_outputs = [s.name for s in signature.outputs]
        self._one_at_a_time = contextlib.nullcontext() if self.thread_safe else threading.Lock()
        try:
            with native_output_logged():  # runtimes announce themselves on stderr
                self._load()
        except DeploykitError:
            raise
        except Exception as e:
            raise RunnerError(f"{self.runtime}: cannot load {self.path}: "
                              f"{type(e).__name__}: {e}") from e

    def predict(self, inputs: Mapping[str, Any] | Any) -> dict[str, np.ndarray]:
        """Named outputs for ``inputs`` (a dict by input name, or a bare array for a model of
        one input), any batch size: an artifact of a fixed batch runs in chunks of it, the
        last one padded.

        Raises:
            InputError: the inputs do not fit the signature.
            RunnerError: the runtime failed on them.
        """
        arrays = self._accepts.validate(inputs)
        with self._one_at_a_time:
            if self.batch:
                from deploykit.parity import chunked

                return chunked(self._run, arrays, self.batch, pad=True)
            return self._run(arrays)

    def _run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            if self._first_run:  # some runtimes announce themselves on their first run
                with native_output_logged():
                    raw = self._predict(arrays)
                self._first_run = False
            else:
                raw = self._predict(arrays)
        except DeploykitError:
            raise
        except Exception as e:
            shapes = {k: v.shape for k, v in arrays.items()}
            raise RunnerError(f"{self.runtime}: running {self.path.name} on {shapes} failed: "
                              f"{type(e).__name__}: {str(e).strip()[:500]}") from e
        return self._name_outputs(raw)

    def _name_outputs(self, raw: Mapping[str, np.ndarray] | Sequence[np.ndarray]
                      ) -> dict[str, np.ndarray]:
        names = self._signature_outputs
        if type(raw) is list or type(raw) is tuple:
            values = raw
        elif isinstance(raw, Mapping):
            values = self._by_name(raw, names)
        else:
            values = list(raw)
        if len(values) != len(names):
            raise RunnerError(f"{self.runtime}: artifact gives {len(values)} outputs, the "
                              f"signature expects {len(names)} ({names})")
        return {n: v if type(v) is np.ndarray else np.asarray(v) for n, v in zip(names, values)}

    def _by_name(self, raw: Mapping[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
        """Recorded names first; else exact names, then the rest by position among the rest."""
        if self.output_names:
            lost = [k for k in self.output_names if k not in raw]
            if lost:
                raise RunnerError(f"{self.runtime}: outputs {lost} missing (has {list(raw)})")
            return [raw[k] for k in self.output_names]
        rest = [k for k in raw if k not in names]
        values = []
        for n in names:
            if n in raw:
                values.append(raw[n])
            elif rest:
                values.append(raw[rest.pop(0)])
        return values

    @staticmethod
    def _feed(runtime_names: Sequence[str], inputs: dict[str, np.ndarray]
              ) -> dict[str, np.ndarray]:
        """Inputs keyed by the runtime's names: by name when the artifact kept the signature's
        names, otherwise by position (converters keep the signature's input order)."""
        if len(runtime_names) == 1 == len(inputs):  # one input: whatever it is called
            return {runtime_names[0]: next(iter(inputs.values()))}
        if set(runtime_names) == set(inputs):
            return dict(inputs)
        return dict(zip(runtime_names, inputs.values(), strict=True))

    def close(self) -> None:  # noqa: B027  (an optional hook, not an abstract method)
        """Release the runtime (a no-op unless the runner holds a process or handle)."""

    # -- for subclasses ---------------------------------------------------------------
    @abstractmethod
    def _load(self) -> None:
        """Load the artifact from ``self.path`` with this runner's runtime."""

    @abstractmethod
    def _predict(self, inputs: dict[str, np.ndarray]
                 ) -> Mapping[str, np.ndarray] | Sequence[np.ndarray]:
        """Run validated inputs; return outputs by runtime name or in signature order."""
