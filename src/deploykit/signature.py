"""Input and output specifications with a dynamic batch dimension.

A :class:`Signature` names a model's inputs and outputs with their dtypes and shapes;
``None`` in a shape is a dynamic dimension (the batch, by default). Runners validate
inputs against it before predicting, so a wrong shape is a clear :class:`InputError`
instead of a crash deep inside a runtime.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from deploykit.errors import InputError
from deploykit.words import FilledColumn, WordColumn, coded, filled

Shape = tuple[int | None, ...]


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: dtype and shape (``None`` = dynamic dimension), for inputs that
    index a table (token ids; floats too, which Keras's Embedding truncates) the inclusive
    ``range`` of valid values, and the
    ``open_axes`` the model takes at any size although ``shape`` fixes them (a sequence
    length fixed at the sample's for the converters that need static shapes), and for a
    table of ``[rows, features]`` the ``columns`` it was fitted on (a DataFrame's names), so
    a DataFrame is taken by name, in any column order. ``missing``: NaN marks a missing value,
    which the model fills (an imputer, HistGradientBoosting), so NaN is let through.
    ``words``: the table's columns of words, which every artifact takes as codes
    (:mod:`deploykit.words`); ``filled``: its columns of numbers whose missing values
    become the training data's median before any artifact sees them."""

    name: str
    dtype: str
    shape: Shape
    range: tuple[int, int] | None = None
    open_axes: tuple[int, ...] = ()
    opened_from: Shape | None = None  # set by opened(): the longest sizes of the open axes
    columns: tuple[str, ...] | None = None
    missing: bool = False
    words: tuple[WordColumn, ...] = ()
    filled: tuple[FilledColumn, ...] = ()

    def __post_init__(self) -> None:
        np.dtype(self.dtype)  # raises TypeError on a dtype numpy does not know
        for d in self.shape:
            if d is not None and (not isinstance(d, int) or d < 0):
                raise ValueError(f"tensor '{self.name}': bad dimension {d!r} in {self.shape}")
        if self.columns is not None and (len(self.shape) != 2 or
                                         self.shape[1] != len(self.columns)):
            raise ValueError(f"tensor '{self.name}': {len(self.columns)} column names for "
                             f"shape {self.shape}")
        if self.range is not None and (np.dtype(self.dtype).kind not in "iuf"
                                       or len(self.range) != 2 or self.range[0] > self.range[1]):
            raise ValueError(f"tensor '{self.name}': bad value range {self.range!r} for "
                             f"{self.dtype}")
        # worked out once: validate() runs on every request, where a microsecond shows
        rest = self.shape[1:]
        table = (*self.words, *self.filled)
        if table and (len(self.shape) != 2 or self.shape[1] is None or
                      any(not 0 <= c.column < self.shape[1] for c in table)):
            raise ValueError(f"tensor '{self.name}': word and filled columns need a table of "
                             f"known width, got shape {self.shape}")
        fast = None not in rest and not self.opened_from and self.range is None and not table
        object.__setattr__(self, "_np", np.dtype(self.dtype))
        object.__setattr__(self, "_plain", (len(self.shape), self.shape[0], rest) if fast else None)

    def validate(self, value: Any, *, require_finite: bool = True) -> np.ndarray:
        """Return ``value`` as an array of this spec's dtype or raise :class:`InputError`.

        Integers are accepted for a float spec (cast safely) and for a narrower integer spec
        when every value fits; floats are never silently truncated to integers.
        """
        plain = self._plain
        if plain is not None and type(value) is np.ndarray and value.dtype == self._np and \
                value.ndim == plain[0] and value.shape[1:] == plain[2] and \
                (plain[1] is None or value.shape[0] == plain[1]):
            arr = value  # the common case, checked in a few hundred nanoseconds
        else:
            arr = self._as_dtype(np.asarray(self.coded(self.ordered(value))))
            self._check_shape(arr)
            if self.filled and arr.dtype.kind == "f":
                arr = filled(self.filled, arr)
        if require_finite and arr.dtype.kind == "f" and not np.isfinite(arr).all() and (
                not self.missing or np.isinf(arr).any()):
            raise InputError(f"input '{self.name}': contains "
                             f"{'Inf' if self.missing else 'NaN or Inf'}{self._where(arr)}")
        return arr

    def _where(self, arr: np.ndarray) -> str:
        """Where the first NaN or Inf is (that :meth:`validate` refuses), for its message."""
        at = np.argwhere(np.isinf(arr) if self.missing else ~np.isfinite(arr))[0]
        if self.columns is not None and arr.ndim == 2:
            return f" (column '{self.columns[at[1]]}', row {at[0]})"
        return f" (at {list(map(int, at))})"

    def ordered(self, frame: Any) -> Any:
        """A pandas DataFrame's columns in this spec's order (its booleans as 0/1, as
        scikit-learn takes them), and rows of ``{column: value}`` or one row as a pandas
        Series, as rows of values, when this spec names its columns; anything else as it
        is."""
        if self.columns is not None and isinstance(frame, list) and frame and \
                all(isinstance(r, Mapping) for r in frame):
            return [self._row(r, i) for i, r in enumerate(frame)]
        if self.columns is not None and type(frame).__name__ == "Series" and \
                hasattr(frame, "to_dict"):  # one row of a DataFrame (df.iloc[0])
            return [self._row({str(k): v for k, v in frame.to_dict().items()}, 0)]
        if self.columns is None or type(frame).__name__ != "DataFrame" or \
                not hasattr(frame, "columns"):  # pandas' or polars'
            return frame
        spaced = {c: str(c).strip() for c in frame.columns  # a .csv's "city, size" header
                  if str(c) not in self.columns and str(c).strip() in self.columns}
        if spaced and hasattr(frame, "rename"):
            frame = frame.rename(columns=spaced)
        flags = [c for c, t in getattr(frame, "dtypes", {}).items() if t == np.bool_]
        if flags and hasattr(frame, "astype"):
            frame = frame.astype({c: np.float64 for c in flags})
        given = [str(c) for c in frame.columns]
        missing = [c for c in self.columns if c not in given]
        unknown = [c for c in given if c not in self.columns]
        if missing or unknown or len(given) != len(set(given)):
            twice = sorted({c for c in given if given.count(c) > 1})
            raise InputError(f"input '{self.name}': the DataFrame's columns do not match the "
                             f"model's: missing {missing[:5] or 'none'}, unknown "
                             f"{unknown[:5] or 'none'}" + (f", twice {twice[:5]}" if twice else ""))
        try:
            return frame[list(self.columns)]  # the model's names are strings (scikit-learn's)
        except (TypeError, KeyError, ValueError) as e:
            raise InputError(f"input '{self.name}': cannot take the columns {self.columns[:3]}"
                             f"... of this {type(frame).__module__} DataFrame by name ({e}); "
                             f"pass a pandas DataFrame or an array") from None

    def coded(self, value: Any) -> Any:
        """``value`` with its word columns' words as codes (:func:`deploykit.words.coded`),
        and a missing value (None) elsewhere as NaN where the spec fills it.

        Raises:
            InputError: a word or a number a column does not take.
        """
        if not self.words and not self.filled:
            return value
        names = self.columns or tuple(f"{self.name}[:, {j}]" for j in range(self.shape[1]))
        return coded(self.words, names, value)

    def _row(self, row: Mapping[str, Any], i: int) -> list[Any]:
        """One ``{column: value}`` row as values in this spec's column order."""
        if set(row) != set(self.columns):
            row = {k if k in self.columns else str(k).strip(): v for k, v in row.items()}
        if set(row) != set(self.columns):
            missing = [c for c in self.columns if c not in row][:5]
            unknown = sorted(set(row) - set(self.columns))[:5]
            raise InputError(f"instance {i}: features do not match the model's: missing "
                             f"{missing or 'none'}, unknown {unknown or 'none'}")
        return [row[c] for c in self.columns]

    def _as_dtype(self, arr: np.ndarray) -> np.ndarray:
        want = np.dtype(self.dtype)
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise InputError(f"input '{self.name}': expected numbers of dtype {want}, got {arr.dtype}")
        if self.range is not None and arr.dtype.kind in "iuf" and arr.size:  # before any cast
            lo, hi = self.range
            if arr.min() < lo or arr.max() > hi:
                raise InputError(f"input '{self.name}': ids must be in [{lo}, {hi}] (the "
                                 f"model's table has {hi - lo + 1} rows); got values from "
                                 f"{arr.min()} to {arr.max()}")
        if arr.dtype == want:
            return arr
        if not np.can_cast(arr.dtype, want, casting="same_kind") or (
            want.kind in "iu" and arr.dtype.kind == "f"
        ):
            raise InputError(f"input '{self.name}': expected dtype {want}, got {arr.dtype}")
        if not fits(arr, want):
            raise InputError(f"input '{self.name}': values from {arr.min()} to {arr.max()} do "
                             f"not fit {want}")
        return arr.astype(want)

    def _check_shape(self, arr: np.ndarray) -> None:
        if arr.ndim != len(self.shape) or any(
            d is not None and d != a for d, a in zip(self.shape, arr.shape, strict=False)
        ):
            raise InputError(
                f"input '{self.name}': expected shape {format_shape(self.shape)}, "
                f"got {format_shape(arr.shape)}"
            )
        for axis in self.open_axes if self.opened_from else ():
            if self.opened_from[axis] and not 1 <= arr.shape[axis] <= self.opened_from[axis]:
                raise InputError(f"input '{self.name}': axis {axis} takes 1 to "
                                 f"{self.opened_from[axis]} steps, got {arr.shape[axis]}")

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.range is not None:
            d["range"] = list(self.range)
        if self.open_axes:
            d["open_axes"] = list(self.open_axes)
        if self.columns is not None:
            d["columns"] = list(self.columns)
        if self.missing:
            d["missing"] = True
        if self.words:
            d["words"] = [w.to_dict() for w in self.words]
        if self.filled:
            d["filled"] = [f.to_dict() for f in self.filled]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        rng, columns = d.get("range"), d.get("columns")
        return cls(str(d["name"]), str(d["dtype"]), tuple(d["shape"]),
                   (int(rng[0]), int(rng[1])) if rng is not None else None,
                   tuple(int(a) for a in d.get("open_axes", ())),
                   columns=None if columns is None else tuple(map(str, columns)),
                   missing=bool(d.get("missing", False)),
                   words=tuple(WordColumn.from_dict(w) for w in d.get("words", ())),
                   filled=tuple(FilledColumn.from_dict(f) for f in d.get("filled", ())))

    def opened(self) -> TensorSpec:
        """This spec with its ``open_axes`` taking any size from 1 up to the fixed one (the
        sample's length: longer was never checked, and a position table may end there)."""
        shape = tuple(None if i in self.open_axes else d for i, d in enumerate(self.shape))
        return replace(self, shape=shape, opened_from=self.shape)


@dataclass(frozen=True)
class Signature:
    """A model's named inputs and outputs; for a classifier, ``scores`` names the output of
    class scores (``probabilities`` when one is so named, else the model's own name for it)."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...] = field(default_factory=tuple)
    scores: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "_one", self.inputs[0] if len(self.inputs) == 1 else None)
        names = [s.name for s in self.outputs]
        if self.scores is None and "probabilities" in names:
            object.__setattr__(self, "scores", "probabilities")
        if self.scores is not None and names and self.scores not in names:
            raise ValueError(f"scores output '{self.scores}' is not one of the outputs {names}")

    def validate(self, inputs: Mapping[str, Any] | Any) -> dict[str, np.ndarray]:
        """Check inputs against the signature; a bare array is taken for a single input.

        Returns:
            The inputs as arrays of the declared dtypes, keyed by input name.
        Raises:
            InputError: a missing or unknown input, or a wrong dtype, shape or value.
        """
        if self._one is not None and type(inputs) is dict and len(inputs) == 1 and \
                self._one.name in inputs:  # the common case, without the set work below
            return {self._one.name: self._one.validate(inputs[self._one.name])}
        if type(inputs) is not dict and not isinstance(inputs, Mapping):
            if len(self.inputs) != 1:
                names = ", ".join(s.name for s in self.inputs)
                raise InputError(f"this model takes {len(self.inputs)} inputs ({names}); pass a dict")
            inputs = {self.inputs[0].name: inputs}
        known = {s.name for s in self.inputs}
        one = self._one
        if one is not None and one.columns and inputs.keys() == set(one.columns) and \
                one.name not in inputs:  # one row of {column: value}
            return {one.name: one.validate([inputs])}
        if inputs.keys() != known:
            unknown, missing = sorted(set(inputs) - known), sorted(known - set(inputs))
            raise InputError(
                f"inputs do not match the signature: missing {missing or 'none'}, "
                f"unknown {unknown or 'none'} (expected {sorted(known)})"
            )
        out = {s.name: s.validate(inputs[s.name]) for s in self.inputs}
        if len(out) == 1:
            return out
        batches = {a.shape[0] for a in out.values() if a.ndim}
        if len(batches) > 1:
            raise InputError(f"inputs disagree on the batch size: {sorted(batches)}")
        return out

    @property
    def fixed_batch(self) -> int | None:
        """The batch every input declares, when it is a fixed size (None when dynamic)."""
        first = {s.shape[0] if s.shape else None for s in self.inputs}
        return first.pop() if len(first) == 1 and isinstance(next(iter(first)), int) else None

    def any_batch(self) -> Signature:
        """The same signature with a dynamic batch."""
        def opened(s: TensorSpec) -> TensorSpec:
            return replace(s, shape=(None, *s.shape[1:])) if s.shape else s
        return replace(self, inputs=tuple(map(opened, self.inputs)),
                       outputs=tuple(map(opened, self.outputs)))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"inputs": [s.to_dict() for s in self.inputs],
                             "outputs": [s.to_dict() for s in self.outputs]}
        if self.scores is not None:
            d["scores"] = self.scores
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Signature:
        return cls(tuple(TensorSpec.from_dict(s) for s in d["inputs"]),
                   tuple(TensorSpec.from_dict(s) for s in d.get("outputs", ())), d.get("scores"))

    @classmethod
    def single(cls, n_features: int, outputs: Sequence[TensorSpec] = (),
               name: str = "x", dtype: str = "float32",
               columns: Sequence[str] | None = None, missing: bool = False,
               words: Sequence[WordColumn] = (), filled: Sequence[FilledColumn] = ()
               ) -> Signature:
        """A one-input signature ``[batch, n_features]`` with a dynamic batch (``columns``,
        ``missing``, ``words``, ``filled``: see :class:`TensorSpec`)."""
        return cls((TensorSpec(name, dtype, (None, n_features), missing=missing,
                               columns=None if columns is None else tuple(columns),
                               words=tuple(words), filled=tuple(filled)),),
                   tuple(outputs))


def fits(arr: np.ndarray, dtype: Any) -> bool:
    """Whether casting ``arr`` to ``dtype`` keeps every value: a narrowing integer cast wraps
    them silently (an id into another id), a narrowing float cast makes large ones Inf.
    Other kinds always fit."""
    want = np.dtype(dtype)
    if not arr.size or arr.dtype.itemsize <= want.itemsize and arr.dtype.kind == want.kind:
        return True
    if want.kind == "f" and arr.dtype.kind == "f":  # NaN and Inf are the caller's to name
        return not ((np.abs(arr) > np.finfo(want).max) & np.isfinite(arr)).any()
    if want.kind not in "iu" or arr.dtype.kind not in "iu":
        return True
    return bool(arr.min() >= np.iinfo(want).min and arr.max() <= np.iinfo(want).max)


def format_shape(shape: Sequence[int | None]) -> str:
    """``(None, 64)`` -> ``[batch, 64]``; other dynamic dims show as ``?``."""
    parts = ["batch" if d is None and i == 0 else "?" if d is None else str(d)
             for i, d in enumerate(shape)]
    return "[" + ", ".join(parts) + "]"
