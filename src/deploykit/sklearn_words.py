"""A scikit-learn model fitted on a DataFrame with columns of words, made to take codes.

A OneHotEncoder or OrdinalEncoder fitted on text (``categories_`` of strings), alone or after
a SimpleImputer, in a ColumnTransformer or first in a Pipeline, is where a table's words end.
:func:`words_of` finds each such column and returns a copy of the model that takes, in its
place, the word's position in the encoder's categories (its code): the OneHotEncoder's
categories become 0..k-1, an OrdinalEncoder becomes the identity (its codes are its output),
the imputer fills in the code of its word. Every converter then sees a model of numbers, and
the :class:`~deploykit.words.WordColumn` list tells every runner how to turn words into codes.
The user's model is untouched; parity compares the artifacts with it, fed the words.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from deploykit.errors import SourceError
from deploykit.words import WordColumn, is_missing

UNKNOWN = -1.0  # a OneHotEncoder that ignores unknown words gives zeros for it, as for any


@dataclass
class Words:
    """A model's word columns, the copy of it that takes their codes, and for each column the
    categories as the user's model has them, in code order, and what a missing value is to it
    (to turn codes back into the values it takes)."""

    model: Any
    columns: tuple[WordColumn, ...]
    categories: dict[int, list[Any]]
    gaps: dict[int, Any]


@dataclass
class _Chain:
    """Steps a set of input columns goes through first (a ColumnTransformer's branch)."""

    steps: list[Any]
    put: Callable[[int, Any], None]  # replaces steps[i] in the model
    columns: list[int]


def words_of(model, names: list[str], text: frozenset[int] = frozenset()) -> Words | None:
    """The model's word columns and a copy of it taking codes; None when it takes no words.

    Args:
        model: a fitted estimator whose ColumnTransformers select columns by position.
        names: its input's column names.
        text: the columns a sample holds text in: those the model drops take any value.

    Raises:
        SourceError: words going where deploykit cannot make codes of them.
    """
    if not text and not any(_word_categories(e) for e in fitted_parts(model)):
        return None
    model = copy.deepcopy(model)
    found: dict[int, tuple[WordColumn, list[Any], Any]] = {}
    dropped: set[int] = set()
    for chain in _chains(model, list(range(model.n_features_in_))):
        if chain.steps == ["drop"]:
            dropped.update(chain.columns)
        for column, cats, gap in _recode(chain, names):
            if column.column in found and found[column.column][0] != column:
                raise SourceError(f"column '{column.name}' goes to two encoders of different "
                                  f"words; deploykit gives each column one set of words")
            found[column.column] = (column, cats, gap)
    for j in sorted(text & dropped - set(found)):  # read by nothing: any value will do
        found[j] = (WordColumn(j, names[j], (), 0.0, 0.0), [], "")
    left = [e for e in fitted_parts(model) if _word_categories(e)]
    if left:
        raise SourceError(f"a {type(left[0]).__name__} of words sits after other steps, where "
                          f"deploykit cannot give it codes; put it first, in a "
                          f"ColumnTransformer on the DataFrame's columns")
    if not found:
        return None
    for ct in (e for e in fitted_parts(model) if type(e).__name__ == "ColumnTransformer"):
        ct.transformers = [(n, t, c) for n, t, c in ct.transformers_  # its fitted branches:
                           if n != "remainder"]  # the unfitted ones may hold pd.NA, which
    ordered = sorted(found)  # skops writes and cannot read back
    return Words(model, tuple(found[j][0] for j in ordered), {j: found[j][1] for j in ordered},
                 {j: found[j][2] for j in ordered})


def decoded(words: Words, rows: np.ndarray, names: list[str] | None):
    """``rows`` of codes as the values the user's model takes: words, its missing value for a
    missing one, a word it does not know for an unknown one.

    Args:
        words: the model's word columns.
        rows: a table of codes (and numbers in the other columns).
        names: the columns' names for a DataFrame; None for an array of objects (a model
            fitted on one).
    """
    table = rows.astype(object)
    for w in words.columns:
        j = w.column
        table[:, j] = [_word(c, w, words.categories[j], words.gaps[j]) for c in rows[:, j]]
    if names is None:
        return table
    from deploykit._lazy import require

    pd = require("pandas", purpose="for a model fitted on a DataFrame")
    return pd.DataFrame({name: pd.Series(table[:, j], dtype=object)  # None stays None
                         if j in words.categories else rows[:, j] for j, name in enumerate(names)})


def _word(code: float, column: WordColumn, cats: list[Any], gap: Any) -> Any:
    if math.isnan(code) or code == column.missing:
        return gap
    at = int(code)
    return cats[at] if at == code and 0 <= at < len(cats) else "\x00 not a word it knows"


def fitted_parts(est) -> list[Any]:
    """The estimator and the fitted ones inside it: a Pipeline's steps, a ColumnTransformer's
    fitted branches (``get_params`` has its unfitted ones)."""
    inner = [s for _, s in est.steps] if type(est).__name__ == "Pipeline" else \
        [t for _, t, _ in est.transformers_] if type(est).__name__ == "ColumnTransformer" else []
    return [est, *(p for s in inner if not isinstance(s, str) for p in fitted_parts(s))]


def _word_categories(est) -> bool:
    return type(est).__name__ in ("OneHotEncoder", "OrdinalEncoder") and any(
        np.asarray(c).dtype == object for c in getattr(est, "categories_", ()))


def _chains(est, columns: list[int]) -> Iterator[_Chain]:
    """The first steps each group of input columns meets: a Pipeline's first step, a
    ColumnTransformer's branches (on their columns; ``["drop"]`` for those it drops), or
    steps of a branch's Pipeline."""
    name = type(est).__name__
    if name == "Pipeline":
        first = est.steps[0][1]
        if type(first).__name__ in ("Pipeline", "ColumnTransformer"):
            yield from _chains(first, columns)
        else:
            yield _Chain([s for _, s in est.steps], _step_setter(est), columns)
    elif name == "ColumnTransformer":
        for i, (_, trans, cols) in enumerate(est.transformers_):
            picked = [columns[j] for j in np.arange(len(columns))[_selection(cols)]]
            if isinstance(trans, str):
                if trans == "drop":
                    yield _Chain(["drop"], _branch_setter(est, i), picked)
            elif type(trans).__name__ in ("Pipeline", "ColumnTransformer"):
                yield from _chains(trans, picked)
            else:
                yield _Chain([trans], _branch_setter(est, i), picked)


def _selection(cols):
    cols = cols if isinstance(cols, slice) else np.asarray(cols)
    if isinstance(cols, np.ndarray) and not cols.size:  # an empty remainder
        return cols.astype(int)
    if isinstance(cols, np.ndarray) and cols.dtype.kind not in "biu":
        raise SourceError("a ColumnTransformer selects its columns in a way deploykit does not "
                          "follow; select them by position or by name")
    return cols


def _step_setter(pipe) -> Callable[[int, Any], None]:
    def put(i: int, step: Any) -> None:
        pipe.steps[i] = (pipe.steps[i][0], step)
    return put


def _branch_setter(ct, i: int) -> Callable[[int, Any], None]:
    def put(_: int, trans: Any) -> None:
        name, _old, cols = ct.transformers_[i]
        ct.transformers_[i] = (name, trans, cols)
    return put


def _recode(chain: _Chain, names: list[str]) -> Iterator[tuple[WordColumn, list[Any], Any]]:
    """Make the chain's encoder of words take codes; yield its word columns, each with its
    categories in code order and what a missing value is to the user's model."""
    at = next((i for i, s in enumerate(chain.steps) if _word_categories(s)), None)
    if at is None:
        return
    enc, imputer = chain.steps[at], chain.steps[at - 1] if at else None
    _check_chain(chain, at, enc, imputer)
    ordinal = type(enc).__name__ == "OrdinalEncoder"
    unknown = _unknown(enc, ordinal)
    codes_of = [_codes(enc, list(c), ordinal) for c in enc.categories_]
    marker = None if imputer is None else imputer.missing_values  # before it becomes NaN
    fills = imputer is not None and _recode_imputer(imputer, enc, codes_of, unknown)
    for k, cats in enumerate(enc.categories_):
        if np.asarray(cats).dtype != object:
            continue
        kept = [c for c in cats if not (ordinal and _is_nan(c))]  # NaN is no code to it
        at_gap = next((i for i, c in enumerate(cats) if _text(c) is None), None)
        if at_gap is not None:  # the encoder's own category of missing values
            missing, gap = codes_of[k][at_gap], cats[at_gap]
        else:
            missing, gap = (math.nan, marker) if fills else (unknown, np.nan)
        column = chain.columns[k]
        yield WordColumn(column, names[column], tuple(_text(c) for c in kept), unknown,
                         missing), kept, gap
    if ordinal:
        chain.put(at, _identity(len(enc.categories_)))
    else:
        enc.categories_ = [np.arange(len(c), dtype=np.float64) if np.asarray(c).dtype == object
                           else c for c in enc.categories_]
        if unknown is not None:  # without infrequent categories, "infrequent_if_exist" and
            enc.handle_unknown = "ignore"  # "warn" ignore one; skl2onnx knows "ignore" only


def _check_chain(chain: _Chain, at: int, enc, imputer) -> None:
    """Refuse what deploykit cannot give codes, by name."""
    if at > 1 or imputer is not None and type(imputer).__name__ != "SimpleImputer":
        raise SourceError(f"the {type(enc).__name__} of words comes after "
                          f"{type(chain.steps[at - 1]).__name__}; deploykit takes words into "
                          f"an encoder first, or after a SimpleImputer")
    if imputer is not None and imputer.add_indicator:
        raise SourceError("a SimpleImputer(add_indicator=True) before an encoder of words is "
                          "not supported: put the indicator in a branch of its own, or drop it")
    if imputer is not None and isinstance(imputer.missing_values, str):
        raise SourceError(f"a SimpleImputer of words marking missing values as "
                          f"{imputer.missing_values!r} is not supported: mark them None or NaN")
    if getattr(enc, "_infrequent_enabled", False):
        raise SourceError(f"{type(enc).__name__} with min_frequency or max_categories on "
                          f"words is not supported yet: fit it without them")
    if type(enc).__name__ == "OrdinalEncoder" and any(
            np.asarray(c).dtype != object for c in enc.categories_):
        raise SourceError("an OrdinalEncoder of words and numbers together is not supported: "
                          "give the numbers a ColumnTransformer branch of their own")


def _codes(enc, cats: list[Any], ordinal: bool) -> list[float]:
    """Each category's code: its position; to an OrdinalEncoder, whose codes are its output,
    NaN (its last category when fitted on one) is ``encoded_missing_value``."""
    return [float(enc.encoded_missing_value) if ordinal and _is_nan(c) else float(i)
            for i, c in enumerate(cats)]


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _text(category: Any) -> str | None:
    return None if is_missing(category) else str(category)


def _unknown(enc, ordinal: bool) -> float | None:
    """The code of a word the encoder was not fitted on (None: the user's model refuses it)."""
    if ordinal:
        return float(enc.unknown_value) if enc.handle_unknown == "use_encoded_value" else None
    return UNKNOWN if enc.handle_unknown != "error" else None


def _recode_imputer(imputer, enc, codes_of: list[list[float]], unknown: float | None) -> bool:
    """Make a SimpleImputer before the encoder fill in codes: NaN marks a missing value, and
    the value it fills in (a word; a missing value when that was the most frequent) becomes
    its code. Returns whether missing values are then taken (not when the imputer fills in a
    word the encoder refuses)."""
    stats, takes = [], True
    for word, cats, codes in zip(imputer.statistics_, enc.categories_, codes_of, strict=True):
        if np.asarray(cats).dtype != object:
            stats.append(float(word))  # a column of numbers in the same encoder
            continue
        text = [_text(c) for c in cats]
        if _text(word) in text:
            stats.append(codes[text.index(_text(word))])
        else:
            takes = takes and unknown is not None  # else the user's model fails on one too
            stats.append(0.0 if unknown is None else unknown)
    imputer.statistics_ = np.asarray(stats, dtype=np.float64)
    if imputer.strategy == "constant":  # skl2onnx reads fill_value (one word for all
        imputer.strategy, imputer.fill_value = "most_frequent", None  # columns), not each
    imputer.missing_values = np.nan  # column's code in statistics_; scikit-learn reads these
    imputer._fit_dtype = np.dtype(np.float64)
    return takes


def _identity(width: int):
    """What a fitted ColumnTransformer holds for ``"passthrough"``: skl2onnx and the compiler
    take it."""
    from sklearn.preprocessing import FunctionTransformer

    return FunctionTransformer(accept_sparse=True, check_inverse=False,
                               feature_names_out="one-to-one").fit(np.zeros((1, width)))
