"""Input columns of words (``"paris"``, ``"rome"``): a table column that a model encodes itself,
as a scikit-learn OneHotEncoder fitted on a DataFrame's text column does.

No runtime but onnxruntime takes text (LiteRT, TF.js and ExecuTorch take numbers), so every
artifact of such a model takes each word as a number, its *code*, and the signature carries
the words of each column (:class:`WordColumn`): ``Bundle.predict``, the server and ``verify``
turn words into codes before any runtime sees them, and rows of numbers are taken as codes
already (checked). :mod:`deploykit.sklearn_words` makes a scikit-learn model take codes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deploykit.errors import InputError

SHOWN = 8  # words listed in an error
# What pandas' read_csv reads as a missing value by default (its STR_NA_VALUES): once pandas
# has read a file, such a word and an empty cell are one NaN.
READ_AS_MISSING = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN",
                             "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN",
                             "None", "n/a", "nan", "null"})
# Cells that mark a gap in a column of numbers (compared in lower case), rather than words.
GAP_MARKERS = frozenset({w.lower() for w in READ_AS_MISSING} | {"?", "-", "--", "missing",
                                                                "unknown"})


@dataclass(frozen=True, eq=False)
class WordColumn:
    """One column of words: code ``i`` stands for ``words[i]``.

    ``unknown`` is the code of a word the model was not fitted on (None: refused), and
    ``missing`` the code of a missing value, None or NaN (NaN: the model fills it; None:
    refused); ``words`` may hold None for the encoder's own category of missing values. A
    column of no words is one the model does not read (dropped): it takes any value.

    A number is a code, except in a column whose words are numbers (``"1"``, ``"2"``, as a
    .csv file gives them), where it is the word it spells.
    """

    column: int
    name: str
    words: tuple[str | None, ...]
    unknown: float | None = None
    missing: float | None = None
    _index: dict[str, int] = field(init=False, repr=False)
    _values: dict[float, int] = field(init=False, repr=False)  # words that are numbers
    _spelled: bool = field(init=False, repr=False)  # its words are numbers

    def __post_init__(self) -> None:
        index = {w: i for i, w in enumerate(self.words) if w is not None}
        values: dict[float, int] = {}
        for w, i in index.items():  # "1.0" and "1" are the number 1: the first one's code
            if spells_number(w):
                values.setdefault(float(w), i)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_spelled", bool(values))

    def _key(self) -> tuple:
        codes = tuple("nan" if c is not None and math.isnan(c) else c
                      for c in (self.unknown, self.missing))
        return self.column, self.name, self.words, codes

    def __eq__(self, other: object) -> bool:  # NaN codes are equal here
        return isinstance(other, WordColumn) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def code(self, value: Any) -> float:
        """The code of one cell: a word, a missing value, or a code.

        Raises:
            InputError: an unknown word or a missing value the model refuses, a number that is
                no code, or neither a word nor a number.
        """
        if not self.words:
            return 0.0  # the model does not read this column
        if is_missing(value):
            if self.missing is None:
                raise InputError(f"column '{self.name}': a missing value, which this model "
                                 f"does not fill; send one of its words ({self.known()})"
                                 f"{self._read_as_missing()}")
            return self.missing
        if isinstance(value, (bool, np.bool_)):  # pandas reads a column of true/false so
            value = next((w for w in _spellings(bool(value)) if w in self._index), value)
        number = isinstance(value, (int, float, np.number)) and \
            not isinstance(value, (bool, np.bool_))
        if number and not self._spelled:
            self.check_codes(np.array([value], dtype=np.float64))
            return float(value)
        if not number and not isinstance(value, str):
            raise InputError(f"column '{self.name}' takes words ({self.known()}), got "
                             f"{_shown(value)}")
        at = self._at(value)
        if at is not None:
            return float(at)
        value = value if isinstance(value, str) else spelled(value)
        if self.unknown is None:
            raise InputError(f"column '{self.name}': unknown word {value[:40]!r}; the model "
                             f"knows {self.known()}")
        return self.unknown

    def _at(self, value: str | float) -> int | None:
        """The code of a word, or of a number in a column whose words are numbers (by value:
        ``1``, ``1.0`` and ``"1.0"`` are the word "1"); a .csv's spaces around it dropped."""
        if isinstance(value, str):
            at = self._index.get(value, self._index.get(value.strip()))
            if at is not None or not self._spelled or not spells_number(value):
                return at
        return self._values.get(float(value))

    def _read_as_missing(self) -> str:
        """A hint when pandas may have made the missing value out of one of the words."""
        read = [w for w in self.words if w and w in READ_AS_MISSING]
        return (f" (its words include {read[0]!r}, which pandas' read_csv reads as missing: "
                f"read the file with keep_default_na=False)") if read else ""

    def check_codes(self, codes: np.ndarray) -> None:
        """Refuse numbers in this column that are no code: the positions of its words, the
        unknown word's code, NaN where the model fills missing values.

        Raises:
            InputError: naming the first number that is no code.
        """
        if not self.words:
            return
        allowed = np.arange(len(self.words), dtype=np.float64)
        extra = [c for c in (self.unknown, self.missing) if c is not None]
        ok = np.isin(codes, np.concatenate([allowed, extra])) | (
            np.isnan(codes) & any(math.isnan(c) for c in extra))
        if not ok.all():
            bad = codes[~ok][0]
            raise InputError(f"column '{self.name}' takes words ({self.known()}) or their "
                             f"codes 0 to {len(self.words) - 1}, got {float(bad):g}")

    def word(self, code: float) -> str | None:
        """The word a code stands for (None: a missing value, or a word the model does not
        know)."""
        at = int(code) if not math.isnan(code) and code == int(code) else -1
        return self.words[at] if 0 <= at < len(self.words) else None

    def known(self) -> str:
        """The words, for a message: the first few, and how many."""
        shown = [w for w in self.words if w is not None]
        if not self.words:
            return "any value: the model does not read this column"
        more = f", … ({len(shown)} words)" if len(shown) > SHOWN else ""
        return ", ".join(w or '""' for w in shown[:SHOWN]) + more

    def to_dict(self) -> dict[str, Any]:
        """For the manifest: JSON has no NaN, so a NaN code is the string ``"nan"``."""
        d: dict[str, Any] = {"column": self.column, "name": self.name, "words": list(self.words)}
        for key in ("unknown", "missing"):
            value = getattr(self, key)
            if value is not None:
                d[key] = "nan" if math.isnan(value) else value
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WordColumn:
        """The inverse of :meth:`to_dict`."""
        def code(key: str) -> float | None:
            value = d.get(key)
            return None if value is None else float(value)  # float("nan") is NaN

        return cls(int(d["column"]), str(d["name"]),
                   tuple(None if w is None else str(w) for w in d["words"]),
                   code("unknown"), code("missing"))


@dataclass(frozen=True)
class FilledColumn:
    """A column of numbers with gaps in the data a model was trained on: a missing value
    there (None, NaN) becomes ``value``, the column's median in that data, before any
    runtime sees it, as the training data's gaps did."""

    column: int
    name: str
    value: float

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "name": self.name, "value": self.value}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FilledColumn:
        return cls(int(d["column"]), str(d["name"]), float(d["value"]))


def filled(columns: Sequence[FilledColumn], arr: np.ndarray) -> np.ndarray:
    """``arr`` (rows of a table) with NaN in ``columns`` replaced by their values (a copy
    when any is)."""
    gaps = np.isnan(arr[:, [c.column for c in columns]])
    if not gaps.any():
        return arr
    arr = arr.copy()  # the caller's rows stay as they are
    for c, at in zip(columns, gaps.T, strict=True):
        arr[at, c.column] = c.value
    return arr


def _spellings(flag: bool) -> tuple[str, ...]:
    """How a .csv file writes a boolean: True, true, TRUE."""
    return str(flag), str(flag).lower(), str(flag).upper()


def spells_number(text: str) -> bool:
    """Whether ``text`` is a number as Python reads one (``"3"``, ``"2.5"``, ``"nan"``)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def spelled(number: Any) -> str:
    """A number as a word: ``3`` and ``3.0`` as ``"3"``, ``0.5`` as ``"0.5"``."""
    value = float(number)
    return str(int(value)) if value.is_integer() else repr(value)


def coded(columns: Sequence[WordColumn], names: Sequence[str], value: Any) -> Any:
    """``value``'s rows with each word column's words as codes (float64); numbers as they are,
    their word columns checked to hold codes.

    Args:
        columns: the input's word columns.
        names: the input's column names, in order.
        value: rows (a DataFrame in the input's column order, an array, nested lists).

    Raises:
        InputError: a word a column does not know, text in a column of numbers.
    """
    width = len(names)
    frame = type(value).__name__ == "DataFrame" and hasattr(value, "to_numpy")
    if not frame:
        arr = np.asarray(value) if not isinstance(value, list) else None
        if arr is not None and arr.dtype.kind in "biuf":
            return _codes(columns, arr) if arr.ndim == 2 and arr.shape[1] == width else arr
    try:
        table = np.asarray(value.to_numpy() if frame else value, dtype=object)
    except (ValueError, TypeError):
        raise InputError("rows must be lists of one length") from None
    if table.ndim != 2 or table.shape[1] != width:
        shown = ", ".join(names[:6]) + (", …" if width > 6 else "")
        raise InputError(f"expected rows of {width} values ({shown}), got an array of shape "
                         f"{list(table.shape)}")
    out = np.empty(table.shape, dtype=np.float64)
    by_column = {c.column: c for c in columns}
    for j in range(width):
        word = by_column.get(j)
        out[:, j] = [word.code(v) for v in table[:, j]] if word else \
            [_number(v, names[j]) for v in table[:, j]]
    return out


def _codes(columns: Sequence[WordColumn], arr: np.ndarray) -> np.ndarray:
    """Rows of numbers, their word columns checked to hold codes; NaN there (a missing value)
    becomes the column's code for one."""
    for c in columns:
        gaps = np.isnan(arr[:, c.column]) if arr.dtype.kind == "f" else None
        if gaps is not None and gaps.any() and c.missing is not None and \
                not math.isnan(c.missing):
            arr = arr.astype(np.float64)  # a copy: the caller's rows stay as they are
            arr[gaps, c.column] = c.missing
        c.check_codes(arr[:, c.column].astype(np.float64))
    return arr


def _number(value: Any, name: str) -> float:
    """A cell of a column of numbers: missing (NaN) when it is None, NaN, empty or a gap
    marker, a number also when it is text (pandas reads a .csv column with a gap marker in
    it as text)."""
    if isinstance(value, str):
        text = value.strip()
        if not text or text.lower() in GAP_MARKERS:
            return math.nan
        if spells_number(text):
            return float(text)
    if is_missing(value):
        return math.nan
    if not isinstance(value, (bool, int, float, np.number, np.bool_)):
        raise InputError(f"column '{name}' takes numbers, got {_shown(value)}")
    return float(value)  # True is 1.0, as scikit-learn takes it


def _shown(value: Any) -> str:
    """A value for a message: text quoted, anything else as Python writes it, cut short."""
    return repr(value[:40]) if isinstance(value, str) else repr(value)[:40]


def listed(columns: Sequence[WordColumn], shown: int = 5) -> str:
    """Columns of words for a message: ``city (4 words), kind (2 words)``."""
    named = ", ".join(f"{w.name} ({len(w.words)} words)" for w in columns[:shown])
    return named + (", …" if len(columns) > shown else "")


def is_missing(value: Any) -> bool:
    """None, NaN, pandas' NA and NaT: what a DataFrame holds for a missing cell (and an
    encoder's category of missing values)."""
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    return type(value).__name__ in ("NAType", "NaTType")
