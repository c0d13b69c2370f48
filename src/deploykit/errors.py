"""One exception tree for everything deploykit raises on purpose.

::

    DeploykitError                 base: catch this to catch every deploykit error
    ├── MissingDependencyError     an optional framework is not installed (names the extra)
    ├── DataError                  a dataset or data file cannot be used as asked
    ├── TrainingError              a training path failed or was asked for something it can't do
    ├── ModelFolderError           a saved model folder is missing, incomplete or not trusted
    ├── InputError                 inputs do not match a signature (shape, dtype, finiteness)
    ├── SourceError                export was given a model of a kind it does not know
    ├── ExportError                a converter (graph edge) failed; names the edge
    │   └── NoRouteError           no route to a target; names the reachable ones
    ├── BundleError                a bundle is missing, incomplete, tampered or unknown
    ├── RunnerError                an artifact could not be loaded or run by its runtime
    ├── ClusterError               a Ray cluster cannot be reached, or lost what a cell needed
    └── WorkerError                a worker process failed
        ├── WorkerCrashed          ... died from a signal or exited without a result
        └── WorkerTimeout          ... ran past its time limit and was killed

Every message says what went wrong and, where there is one, what to do about it.
The CLI prints the message of a ``DeploykitError`` and exits with status 2 instead of
showing a traceback.
"""

from __future__ import annotations


class DeploykitError(Exception):
    """Base class of every error deploykit raises deliberately."""


class MissingDependencyError(DeploykitError, ImportError):
    """An optional framework is needed but not installed.

    Attributes:
        module: the import name that failed (e.g. ``"tensorflow"``).
        extra: the deploykit extra that installs it (e.g. ``"tf"``).
    """

    def __init__(self, module: str, extra: str, purpose: str = "", install: str = "") -> None:
        self.module = module
        self.extra = extra
        why = f" (needed {purpose})" if purpose else ""
        how = install or f"Install it with: pip install 'deploykit[{extra}]'"
        super().__init__(f"'{module}' is not installed{why}. {how}")


class DataError(DeploykitError, ValueError):
    """A dataset or data file cannot be used as asked."""


class TrainingError(DeploykitError):
    """A training path failed or cannot handle the given data."""


class ModelFolderError(DeploykitError):
    """A saved model folder is missing, incomplete, or holds something not trusted."""


class InputError(DeploykitError, ValueError):
    """Inputs do not match a signature: wrong name, shape, dtype, or non-finite values."""


class WorkerError(DeploykitError):
    """A function run in a worker process raised; the message carries its error.

    Attributes:
        error_type: the exception's type name in the worker.
        traceback: the worker's traceback, when the function raised.
        log_tail: the last lines the job printed (framework messages included).
    """

    def __init__(self, message: str, *, error_type: str = "", traceback: str = "",
                 log_tail: str = "") -> None:
        self.error_type = error_type or type(self).__name__
        self.traceback = traceback
        self.log_tail = log_tail
        super().__init__(message)


class WorkerCrashed(WorkerError):
    """A worker process died (signal, ``os._exit``) without writing a result."""


class WorkerTimeout(WorkerError):
    """A worker process ran past its time limit and was killed."""


class ExportError(DeploykitError):
    """A converter (one edge of the conversion graph) failed; the message names the edge."""


class NoRouteError(ExportError):
    """No route in the conversion graph leads from the source to the requested target."""


class SourceError(DeploykitError, TypeError):
    """The model given to export is not a kind deploykit recognises, or lacks what it needs."""


class BundleError(DeploykitError):
    """A bundle folder is missing, incomplete, tampered with or of an unknown schema."""


class RunnerError(DeploykitError):
    """An artifact could not be loaded or run by its runtime."""


class ClusterError(DeploykitError):
    """A Ray cluster cannot be reached, or a cell's task was lost with no retry left."""


class ReportError(DeploykitError):
    """A report cannot be made: the folder holds neither a what-if report nor a bundle."""
