"""Datasets: scikit-learn's bundled ones (no downloads), user CSV and NPZ files, splits.

``load_dataset("digits")`` returns a :class:`Dataset`; ``load_dataset("my.csv",
label_column="price")`` reads a CSV with a header row; ``load_dataset("arrays.npz")`` reads
arrays ``X`` and ``y``. :func:`split_dataset` makes a stratified (for classification)
train/validation/test split with a fixed seed. Anything unusable raises
:class:`~deploykit.errors.DataError` saying what and where.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploykit.errors import DataError
from deploykit.words import (
    GAP_MARKERS,
    READ_AS_MISSING,
    FilledColumn,
    WordColumn,
    listed,
    spelled,
    spells_number,
)

TASKS = ("classification", "regression")
# name -> (sklearn loader, task, image shape of one sample or None)
BUILTIN: dict[str, tuple[str, str, tuple[int, int, int] | None]] = {
    "digits": ("load_digits", "classification", (8, 8, 1)),
    "iris": ("load_iris", "classification", None),
    "wine": ("load_wine", "classification", None),
    "breast_cancer": ("load_breast_cancer", "classification", None),
    "diabetes": ("load_diabetes", "regression", None),
}
# A column of numbers with fewer other cells than this share of its filled ones is numbers
# with typos (an error naming one), not a column of words (a ticket: "3101", "PC 17599").
STRAY = 0.05
# A number written with thousands separators or as a percentage: 1,234 and 45%.
NUMBERISH = re.compile(r"[-+]?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?%?|[-+]?\.\d+%")
# An integer-valued numeric target with at most this many distinct values is read as
# class labels when the task is not given; anything else is regression.
MAX_AUTO_CLASSES = 20


@dataclass(frozen=True)
class Dataset:
    """Features and target of one dataset, ready for training.

    Attributes:
        name: short name (builtin name or file stem).
        X: float32 features, shape ``[n, n_features]``.
        y: int64 class indices (classification) or float32 targets (regression).
        task: ``"classification"`` or ``"regression"``.
        feature_names: one name per column of ``X``.
        labels: class names, indexed by class id (empty for regression).
        image_shape: ``(h, w, c)`` when each row is an image (digits: 8x8x1), else None.
        source: where it came from: ``builtin:digits`` or a file path.
        words: a CSV's columns of words: ``X`` holds each word's code there (its position
            in the column's sorted words; an empty cell is the word ``""``, missing), and
            every model trained on it takes these codes (:mod:`deploykit.words`).
        label_column: a CSV's column of what to predict (None for other sources).
        filled: a CSV's columns of numbers with gaps: ``X`` holds the column's median there,
            and every model trained on it takes a missing value there as that median.
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    task: str
    feature_names: tuple[str, ...]
    labels: tuple[str, ...] = ()
    image_shape: tuple[int, int, int] | None = None
    source: str = ""
    words: tuple[WordColumn, ...] = ()
    label_column: str | None = None
    filled: tuple[FilledColumn, ...] = ()

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def columns(self) -> tuple[str, ...] | None:
        """The names a model trained on it takes its features by (rows of ``{column:
        value}``, a DataFrame): a CSV's header; None for arrays."""
        return self.feature_names if self.source.lower().endswith(".csv") else None

    @property
    def note(self) -> str:
        """What a run says about a table's columns of words and gaps ("" when it has none)."""
        said = [f"columns of words: {listed(self.words)}; models train on each word's position "
                f"among its column's sorted words and take the words"] if self.words else []
        ids = [w.name for w in self.words if len(w.words) > len(self.X) / 2]
        if ids:
            said.append(f"nearly a word per row in {', '.join(ids[:3])} (a name, an id?): a "
                        f"new row's word there will be unknown to the models; drop such a "
                        f"column")
        if self.filled:
            gaps = ", ".join(f"{f.name} ({f.value:g})" for f in self.filled[:5])
            said.append(f"gaps filled with their column's median: {gaps}"
                        f"{', …' if len(self.filled) > 5 else ''}; models take a missing value "
                        f"there as that median")
        return "\n".join(said)

    @property
    def n_outputs(self) -> int:
        """Width of the model output: number of classes, or 1 for regression."""
        return len(self.labels) if self.task == "classification" else 1


PROBE_MIN_ROWS = 128


@dataclass(frozen=True)
class Split:
    """A train/validation/test split of one dataset (the dataset's metadata included)."""

    dataset: Dataset
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    seed: int

    @property
    def X_probe(self) -> np.ndarray:
        """The rows exports are verified on: the test rows, topped up from the validation
        and then the training rows to :data:`PROBE_MIN_ROWS` when the test split is smaller
        (int8's 99 % label agreement is only resolved by 100 rows; iris tests on 30)."""
        return self._probe(self.X_test, self.X_val, self.X_train)

    @property
    def y_probe(self) -> np.ndarray:
        return self._probe(self.y_test, self.y_val, self.y_train)

    def _probe(self, test: np.ndarray, *more: np.ndarray) -> np.ndarray:
        short = max(0, PROBE_MIN_ROWS - len(test))
        return np.concatenate([test, *more])[:len(test) + short]


def load_dataset(spec: str | Path, *, label_column: str | None = None,
                 task: str | None = None) -> Dataset:
    """Load a builtin dataset by name, or a ``.csv`` / ``.npz`` file.

    Args:
        spec: ``digits``, ``iris``, ``wine``, ``breast_cancer``, ``diabetes``, or a path.
        label_column: the CSV column holding what to predict (required for CSV).
        task: ``classification`` or ``regression``; inferred from that column when omitted.

    Returns:
        The :class:`Dataset`.

    Raises:
        DataError: an unknown name, a missing or malformed file (says what and where).
    """
    if task is not None and task not in TASKS:
        raise DataError(f"unknown task '{task}': use one of {', '.join(TASKS)}")
    name = str(spec)
    if label_column is not None and not name.lower().endswith(".csv"):  # was ignored
        raise DataError(f"a label column is for CSV files; {name} names its own (an .npz "
                        f"holds X and y): leave out --label-column")
    if name in BUILTIN:
        return _check(_load_builtin(name, task))
    path = Path(name)
    if path.suffix.lower() not in (".csv", ".npz"):
        raise DataError(f"unknown dataset '{name}': use a builtin one "
                        f"({', '.join(BUILTIN)}) or a .csv / .npz file")
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if path.suffix.lower() == ".csv":
        return _check(_load_csv(path, label_column, task))
    return _check(_load_npz(path, task))


def _load_builtin(name: str, task: str | None) -> Dataset:
    from sklearn import datasets

    loader, default_task, image_shape = BUILTIN[name]
    bunch = getattr(datasets, loader)()
    if (task or default_task) != default_task:
        raise DataError(f"builtin '{name}' is a {default_task} dataset, not {task}")
    X = np.asarray(bunch.data, dtype=np.float32)
    if default_task == "classification":
        labels = tuple(str(t) for t in bunch.target_names)
        y = np.asarray(bunch.target, dtype=np.int64)
    else:
        labels, y = (), np.asarray(bunch.target, dtype=np.float32)
    given = getattr(bunch, "feature_names", None)
    names = tuple(str(f) for f in (given if given is not None else
                                   [f"x{i}" for i in range(X.shape[1])]))
    return Dataset(name, X, y, default_task, names, labels, image_shape, f"builtin:{name}")


def _load_csv(path: Path, label_column: str | None, task: str | None) -> Dataset:
    header, body, lines = _read_rows(path)
    label_column = label_column.strip() if label_column is not None else None
    if label_column is None:
        raise DataError(f"{path}: say which column holds the labels with --label-column "
                        f"(columns: {', '.join(header)})")
    if label_column not in header:
        other = next((c for c in ";\t|" if len(header) == 1 and c in header[0]), None)
        hint = f"; the file looks separated by {other!r}: deploykit reads commas" if other else ""
        raise DataError(f"{path}: no column '{label_column}' (columns: {', '.join(header)})"
                        f"{hint}")
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise DataError(f"{path}: the header names {', '.join(map(repr, twice))} more than "
                        f"once; each column needs a name of its own")
    t = header.index(label_column)
    features = [c for j, c in enumerate(header) if j != t]
    if not features:
        raise DataError(f"{path}: no feature columns besides the label column '{label_column}'")
    X = np.empty((len(body), len(features)), dtype=np.float32)
    words, gaps = [], []
    for j_out, j in enumerate(j for j in range(len(header)) if j != t):
        cells = [r[j].strip() for r in body]
        column = _word_column(path, j_out, header[j], cells, lines)
        if column is None:
            X[:, j_out], gap = _numeric_column(path, j_out, header[j], cells, lines)
            gaps += [gap] if gap else []
        else:
            X[:, j_out] = [column.code(c) for c in cells]
            words.append(column)
    y, labels, task = _labels(path, label_column, [r[t].strip() for r in body], task, lines)
    return Dataset(path.stem, X, y, task, tuple(features), labels, None, str(path),
                   tuple(words), label_column, tuple(gaps))


def _read_rows(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """A CSV file's header, its rows and the file line each row ends on (blank rows and
    trailing empty columns, as spreadsheets export them, dropped)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line} is not UTF-8 text; save the file as UTF-8 "
                        f"(Excel: 'CSV UTF-8')") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    rows, lines = [], []
    for r in reader:
        if any(c.strip() for c in r):
            rows.append(r)
            lines.append(reader.line_num)
    if not rows:
        raise DataError(f"{path}: the file is empty")
    header = [c.strip() for c in rows[0]]
    while header and not header[-1] and all(len(r) < len(header) or not r[len(header) - 1]
                                            .strip() for r in rows[1:]):
        header.pop()  # "x,y,," with nothing below: a spreadsheet's trailing columns
    body = [r[:len(header)] if len(r) > len(header) and not any(
        c.strip() for c in r[len(header):]) else r for r in rows[1:]]
    if not body:
        raise DataError(f"{path}: has a header row but no data rows")
    for row, line in zip(body, lines[1:], strict=True):
        if len(row) != len(header):
            raise DataError(f"{path}: line {line} has {len(row)} fields, the header has "
                            f"{len(header)}")
    return header, body, lines[1:]


def _word_column(path: Path, at: int, name: str, cells: list[str], lines: list[int]
                 ) -> WordColumn | None:
    """A column of words (None: of numbers): one with cells that are neither numbers nor
    gap markers (``n/a``, ``?``; see :func:`_numeric_column`), unless they are so few
    (:data:`STRAY`) that they are typos, an error. Its words are sorted, an
    empty cell is the word ``""``, which a missing value (None, NaN) stands for too (unless
    another word is one pandas reads as missing, such as ``NA``), and a word not among them
    is refused."""
    if all(not c or c.lower() in GAP_MARKERS for c in cells):
        shown = ", ".join(repr(c) for c in sorted(set(cells))[:4])
        raise DataError(f"{path}: column '{name}' holds nothing but gaps ({shown}): drop it")
    text = [i for i, c in enumerate(cells) if c and not spells_number(c)
            and c.lower() not in GAP_MARKERS]
    if not text:
        return None
    if len(text) < STRAY * sum(map(bool, cells)):  # a typo in a column of numbers
        i = text[0]
        raise DataError(f"{path}: column '{name}', line {lines[i]} is {cells[i]!r} in a column "
                        f"of numbers: correct it, or leave it empty (a gap)")
    if all(not c or NUMBERISH.fullmatch(c) or c.lower() in GAP_MARKERS for c in cells):
        i = text[0]
        raise DataError(f"{path}: column '{name}' holds numbers written with ',' or '%' (line "
                        f"{lines[i]}: {cells[i]!r}): write them as plain numbers (1234, 0.45)")
    known = tuple(sorted(set(cells)))
    # a missing value stands for the empty cell, unless pandas would read a word as missing
    gap = "" in known and not READ_AS_MISSING & set(known) - {""}
    return WordColumn(at, name, known, missing=float(known.index("")) if gap else None)


def _numeric_column(path: Path, at: int, name: str, cells: list[str], lines: list[int]
                    ) -> tuple[np.ndarray, FilledColumn | None]:
    """A column of numbers, and how its gaps are filled (None: it has none). A gap (an
    empty cell, ``n/a``, ``?``) takes the median of the column's numbers, here and in every
    model's inputs later (:class:`~deploykit.words.FilledColumn`); the median is of all the
    rows, the test split's too, as a fill is nearly the same either way."""
    out = np.empty(len(cells), dtype=np.float64)
    top = float(np.finfo(np.float32).max)
    for i, cell in enumerate(cells):
        out[i] = np.nan if not cell or cell.lower() in GAP_MARKERS else float(cell)
        if abs(out[i]) > top:  # Inf, or past float32 (the models' input type)
            raise DataError(f"{path}: column '{name}', line {lines[i]} is {cell!r}: infinite or "
                            f"beyond float32's range (rescale the column)")
    holes = np.isnan(out)
    if not holes.any():
        return out, None
    value = float(np.float32(np.median(out[~holes])))
    out[holes] = value
    return out, FilledColumn(at, name, value)


def _labels(path: Path, name: str, cells: list[str], task: str | None,
            lines: list[int] | None = None):
    """Encode the label column; returns ``(y, labels, task)``."""
    line = (lambda i: lines[i]) if lines else (lambda i: i + 2)
    numbers = all(spells_number(c) for c in cells if c and c.lower() not in GAP_MARKERS)
    gaps = [i for i, c in enumerate(cells) if not c or numbers and c.lower() in GAP_MARKERS
            and not spells_number(c)]  # "n/a" may be a class; among numbers it is a gap
    if gaps:
        raise DataError(f"{path}: label column '{name}', line {line(gaps[0])} is "
                        f"{cells[gaps[0]]!r}, a row without a label: drop such rows")
    try:
        values = np.array([float(c) for c in cells])
    except ValueError:
        values = None
    if task is None:
        few_ints = values is not None and np.all(values == np.round(values)) and \
            len(np.unique(values)) <= MAX_AUTO_CLASSES
        task = "classification" if values is None or few_ints else "regression"
    if task == "regression":
        if values is None:
            raise DataError(f"{path}: label column '{name}' is not numeric, so it can't be regressed "
                            f"(use --task classification)")
        return values.astype(np.float32), (), task
    if values is not None:  # numbers are classes by value: "1" and "1.0" are one class
        keys, y = np.unique(values, return_inverse=True)
        return y.astype(np.int64), tuple(spelled(k) for k in keys), task
    keys = sorted(set(cells))
    index = {k: i for i, k in enumerate(keys)}
    return np.array([index[c] for c in cells], dtype=np.int64), tuple(keys), task


def _load_npz(path: Path, task: str | None) -> Dataset:
    import zipfile

    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:  # object arrays would need pickle: refuse them
        raise DataError(f"{path}: cannot read arrays without pickle ({e})") from None
    except Exception as e:  # zipfile.BadZipFile, OSError, ... : all mean "not an npz"
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    x_key = next((k for k in ("X", "x", "features") if k in arrays), None)
    y_key = next((k for k in ("y", "target") if k in arrays), None)
    if x_key is None or y_key is None:
        raise DataError(f"{path}: expected arrays 'X' and 'y', found {sorted(arrays) or 'none'}")
    X, y_raw = arrays[x_key], arrays[y_key]
    if X.ndim != 2 or X.dtype.kind not in "biuf":
        raise DataError(f"{path}: 'X' must be a 2-D numeric array, got {X.ndim}-D {X.dtype}")
    if y_raw.ndim != 1 or len(y_raw) != len(X):
        raise DataError(f"{path}: 'y' must be 1-D with one value per row of X "
                        f"(X has {len(X)} rows, y has shape {y_raw.shape})")
    y, labels, task = _labels(path, "y", [str(v) for v in y_raw.tolist()], task)
    if "labels" in arrays and task == "classification":
        given = tuple(str(v) for v in arrays["labels"].tolist())
        labels = given if len(given) == len(labels) else labels
    names = tuple(str(v) for v in arrays["feature_names"].tolist()) \
        if "feature_names" in arrays else tuple(f"x{i}" for i in range(X.shape[1]))
    return Dataset(path.stem, X.astype(np.float32), y, task, names, labels, None, str(path))


def _check(ds: Dataset) -> Dataset:
    if len(ds.X) == 0:
        raise DataError(f"{ds.source}: no samples")
    if not np.isfinite(ds.X).all():
        raise DataError(f"{ds.source}: features contain NaN or Inf")
    if ds.task == "classification" and len(ds.labels) < 2:
        raise DataError(f"{ds.source}: only one class ({ds.labels[0] if ds.labels else '?'}); "
                        f"classification needs at least two")
    if ds.task == "regression" and not np.isfinite(ds.y).all():
        raise DataError(f"{ds.source}: target contains NaN or Inf")
    return ds


def split_dataset(ds: Dataset, *, seed: int = 0, test_size: float = 0.2,
                  val_size: float = 0.15) -> Split:
    """Split into train/validation/test, stratified by class for classification.

    Args:
        ds: the dataset.
        seed: the same seed gives the same split.
        test_size: the test split's share of the data.
        val_size: the validation split's share; the rest is for training.

    Returns:
        The :class:`Split`.

    Raises:
        DataError: a class has too few rows to appear in every split.
    """
    from sklearn.model_selection import train_test_split

    strat = ds.y if ds.task == "classification" else None
    if strat is not None:
        counts = np.bincount(ds.y, minlength=len(ds.labels))
        if counts.min() < 3:
            rare = ds.labels[int(counts.argmin())]
            raise DataError(f"{ds.source}: class '{rare}' has {counts.min()} samples; "
                            f"a stratified train/validation/test split needs at least 3 per class")
    try:
        X_rest, X_test, y_rest, y_test = train_test_split(
            ds.X, ds.y, test_size=test_size, random_state=seed, stratify=strat)
        X_train, X_val, y_train, y_val = train_test_split(
            X_rest, y_rest, test_size=val_size / (1 - test_size), random_state=seed,
            stratify=y_rest if strat is not None else None)
    except ValueError as e:
        raise DataError(f"{ds.source}: cannot split {len(ds.X)} samples ({e})") from None
    return Split(ds, X_train, y_train, X_val, y_val, X_test, y_test, seed)


def describe_builtins() -> list[tuple[str, str]]:
    """``(name, task)`` of each builtin dataset, for ``deploykit datasets``."""
    return [(name, task) for name, (_, task, _) in BUILTIN.items()]
