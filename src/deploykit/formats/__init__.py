"""One module per format: its node (with its facts), the edges into it, and its Runner.

:func:`load` imports the built-in format modules and every module registered under the
entry-point group ``deploykit.formats``, so a third-party package adds a format by shipping
a module and declaring, in its ``pyproject.toml``::

    [project.entry-points."deploykit.formats"]
    myformat = "mypackage.deploykit_format"

No format module imports a framework at top level, so loading stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from deploykit.artifact import Artifact
from deploykit.bundle import Bundle
from deploykit.errors import RunnerError
from deploykit.formats.base import RUNNERS, Runner
from deploykit.signature import Signature

BUILTIN = ("sklearn", "keras", "torch_program", "saved_model", "onnx", "tflite", "torchscript",
           "executorch", "tfjs", "web")
ENTRY_POINTS = "deploykit.formats"
_loaded = False


def load() -> None:
    """Register every format: the built-in ones, then the entry points' (once per process).

    Raises:
        RunnerError: a plug-in's module failed to import (named, with its error).
    """
    global _loaded
    if _loaded:
        return
    for name in BUILTIN:
        importlib.import_module(f"deploykit.formats.{name}")
    for ep in metadata.entry_points(group=ENTRY_POINTS):
        try:
            ep.load()
        except Exception as e:  # a broken plug-in names itself instead of breaking everything
            raise RunnerError(f"format plug-in '{ep.name}' ({ep.value}) failed to load: "
                              f"{type(e).__name__}: {e}") from e
    _loaded = True


def preference() -> list[str]:
    """Targets in the order a default artifact is picked, by the server and by
    ``Bundle.predict`` (the nodes' ``serve_rank``: light runtimes first)."""
    from deploykit import graph

    load()
    ranked = [n for n in graph.NODES.values() if n.serve_rank is not None]
    return [n.name for n in sorted(ranked, key=lambda n: n.serve_rank)]


def runner_class(runtime: str) -> type[Runner]:
    """The Runner registered for ``runtime``.

    Raises:
        RunnerError: no format registers a runner for it.
    """
    load()
    if runtime not in RUNNERS:
        raise RunnerError(f"no runner for runtime '{runtime}' (known: {sorted(RUNNERS)})")
    module, _, name = RUNNERS[runtime].partition(":")
    return getattr(importlib.import_module(module), name)


def open_runner(runtime: str, path: str | Path, signature: Signature,
                outputs: Sequence[str] | None = None, *, threads: int | None = None) -> Runner:
    """Load the artifact at ``path`` in ``runtime``'s runner (see :class:`Runner`).

    Args:
        runtime: the runner's name (a node's ``runtime``).
        path: the artifact file or folder.
        signature: the artifact's signature (its batch may be fixed).
        outputs: the runtime's output names in signature order, when they differ.
        threads: the runtime's math threads (default: the runtime's own choice).

    Returns:
        The loaded runner; ``predict(inputs)`` gives named outputs, ``close()`` frees it.

    Raises:
        RunnerError: no runner for ``runtime``, or the runtime cannot load the artifact.
        MissingDependencyError: the runtime is not installed.
    """
    return runner_class(runtime)(path, signature, outputs, threads=threads)


def open_artifact(bundle: Bundle, art: Artifact | str, *, threads: int | None = None) -> Runner:
    """Load one of ``bundle``'s artifacts in its runtime.

    Args:
        bundle: a loaded bundle.
        art: the artifact, or its target name.
        threads: the runtime's math threads (see :func:`open_runner`).

    Returns:
        The loaded runner (see :func:`open_runner`).

    Raises:
        BundleError: the bundle has no such artifact. RunnerError: see :func:`open_runner`.
    """
    a = bundle.artifact(art) if isinstance(art, str) else art
    return open_runner(a.runtime, bundle.root / a.path, a.signature(bundle.signature), a.outputs,
                       threads=threads)
