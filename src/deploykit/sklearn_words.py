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
from deploykit.words import WordColumn

UNKNOWN = -1.0  # a OneHotEncoder that ignores unknown words gives zeros for it, as for any


@dataclass
class Words:
    """A model's word columns, the copy of it that takes their codes, and each column's
    categories as the user's model has them (to turn codes back into its words)."""

    model: Any
    columns: tuple[WordColumn, ...]
    categories: dict[int, list[Any]]
    gaps: dict[int, Any]  # what NaN, the code of a missing value an imputer fills, stands for


@dataclass
class _Chain:
    """Steps a set of input columns goes through first (a ColumnTransformer's branch)."""

    steps: list[Any]
    put: Callable[[int, Any], None]  # replaces steps[i] in the model
    columns: list[int]


def words_of(model, names: list[str]) -> Words | None:
    """The model's word columns and a copy of it taking codes; None when it takes no words.

    Args:
        model: a fitted estimator whose ColumnTransformers select columns by position.
        names: its input's column names.

    Raises:
        SourceError: words going where deploykit cannot make codes of them.
    """
    if not any(_word_categories(e) for e in _parts(model)):
        return None
    model = copy.deepcopy(model)
    found: dict[int, tuple[WordColumn, list[Any], Any]] = {}
    for chain in _chains(model, list(range(model.n_features_in_))):
        for column, cats, gap in _recode(chain, names):
            if column.column in found and found[column.column][0] != column:
                raise SourceError(f"column '{column.name}' goes to two encoders of different "
                                  f"words; deploykit gives each column one set of words")
            found[column.column] = (column, cats, gap)
    left = [e for e in _parts(model) if _word_categories(e)]
    if left:
        raise SourceError(f"a {type(left[0]).__name__} of words sits after other steps, where "
                          f"deploykit cannot give it codes; put it first, in a "
                          f"ColumnTransformer on the DataFrame's columns")
    ordered = sorted(found)
    return Words(model, tuple(found[j][0] for j in ordered), {j: found[j][1] for j in ordered},
                 {j: found[j][2] for j in ordered})


def decoded(words: Words, rows: np.ndarray, names: list[str] | None):
    """``rows`` of codes as the words the user's model takes (an unknown word's code as a
    word it does not know, NaN as NaN): a DataFrame of ``names``, or an array of objects for
    a model fitted on one (``names`` None)."""
    table = rows.astype(object)
    for j, cats in words.categories.items():
        table[:, j] = [_word(c, cats, words.gaps[j]) for c in rows[:, j]]
    if names is None:
        return table
    import pandas as pd

    return pd.DataFrame({name: table[:, j] if j in words.categories else rows[:, j]
                         for j, name in enumerate(names)})


def _word(code: float, cats: list[Any], gap: Any) -> Any:
    if math.isnan(code):
        return gap
    at = int(code)
    return cats[at] if at == code and 0 <= at < len(cats) else "\x00 not a word it knows"


def _parts(est) -> list[Any]:
    """The estimator and the fitted ones inside it: a Pipeline's steps, a ColumnTransformer's
    fitted branches (``get_params`` has its unfitted ones)."""
    inner = [s for _, s in est.steps] if type(est).__name__ == "Pipeline" else \
        [t for _, t, _ in est.transformers_] if type(est).__name__ == "ColumnTransformer" else []
    return [est, *(p for s in inner if not isinstance(s, str) for p in _parts(s))]


def _word_categories(est) -> bool:
    return type(est).__name__ in ("OneHotEncoder", "OrdinalEncoder") and any(
        np.asarray(c).dtype == object for c in getattr(est, "categories_", ()))


def _chains(est, columns: list[int]) -> Iterator[_Chain]:
    """The first steps each group of input columns meets: a Pipeline's first step, a
    ColumnTransformer's branches (on their columns), or steps of a branch's Pipeline."""
    name = type(est).__name__
    if name == "Pipeline":
        first = est.steps[0][1]
        if type(first).__name__ in ("Pipeline", "ColumnTransformer"):
            yield from _chains(first, columns)
        else:
            yield _Chain([s for _, s in est.steps], _step_setter(est), columns)
    elif name == "ColumnTransformer":
        for i, (_, trans, cols) in enumerate(est.transformers_):
            if isinstance(trans, str):
                continue
            picked = [columns[j] for j in np.arange(len(columns))[_selection(cols)]]
            if type(trans).__name__ in ("Pipeline", "ColumnTransformer"):
                yield from _chains(trans, picked)
            else:
                yield _Chain([trans], _branch_setter(est, i), picked)


def _selection(cols):
    cols = cols if isinstance(cols, slice) else np.asarray(cols)
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
    categories and what a NaN code stands for in them."""
    at = next((i for i, s in enumerate(chain.steps) if _word_categories(s)), None)
    if at is None:
        return
    enc, imputer = chain.steps[at], chain.steps[at - 1] if at else None
    if at > 1 or imputer is not None and type(imputer).__name__ != "SimpleImputer":
        raise SourceError(f"the {type(enc).__name__} of words comes after "
                          f"{type(chain.steps[at - 1]).__name__}; deploykit takes words into "
                          f"an encoder first, or after a SimpleImputer")
    if getattr(enc, "_infrequent_enabled", False):
        raise SourceError(f"{type(enc).__name__} with min_frequency or max_categories on "
                          f"words is not supported yet: fit it without them")
    ordinal = type(enc).__name__ == "OrdinalEncoder"
    cats_of = [list(c) for c in enc.categories_]
    if ordinal and any(np.asarray(c).dtype != object for c in enc.categories_):
        raise SourceError("an OrdinalEncoder of words and numbers together is not supported: "
                          "give the numbers a ColumnTransformer branch of their own")
    unknown = _unknown(enc, ordinal)
    gap = np.nan if imputer is None else imputer.missing_values  # before it becomes NaN
    fills = imputer is not None and _recode_imputer(imputer, cats_of, unknown)
    for k, cats in enumerate(cats_of):
        if np.asarray(enc.categories_[k]).dtype != object:
            continue
        column = chain.columns[k]
        yield WordColumn(column, names[column], tuple(_text(c) for c in cats), unknown,
                         _missing(enc, cats, ordinal, fills, unknown)), cats, gap
    if ordinal:
        chain.put(at, _identity(len(cats_of)))
    else:
        enc.categories_ = [np.arange(len(c), dtype=np.float64) if np.asarray(c).dtype == object
                           else c for c in enc.categories_]


def _text(category: Any) -> str | None:
    return None if category is None or isinstance(category, float) and math.isnan(category) \
        else str(category)


def _unknown(enc, ordinal: bool) -> float | None:
    """The code of a word the encoder was not fitted on (None: the user's model refuses it)."""
    if ordinal:
        return float(enc.unknown_value) if enc.handle_unknown == "use_encoded_value" else None
    return UNKNOWN if enc.handle_unknown != "error" else None


def _missing(enc, cats: list[Any], ordinal: bool, fills: bool, unknown: float | None
             ) -> float | None:
    """The code of a missing value (None or NaN, as a DataFrame holds one, JSON's null):
    NaN when an imputer fills it, else the code of the category the encoder was fitted on for
    it (an OrdinalEncoder gives NaN its ``encoded_missing_value``, but None is a category like
    any word to it), else what the encoder does with a value it does not know."""
    if fills:
        return math.nan
    at = next((i for i, c in enumerate(cats) if _text(c) is None), None)
    if at is None:
        return unknown
    if ordinal and cats[at] is not None:  # NaN
        return float(enc.encoded_missing_value)
    return float(at)


def _recode_imputer(imputer, cats_of: list[list[Any]], unknown: float | None) -> bool:
    """Make a SimpleImputer before the encoder fill in codes: NaN marks a missing value, and
    the imputer's word becomes its code. Returns whether missing values are then taken (not
    when the imputer fills in a word the encoder refuses)."""
    if isinstance(imputer.missing_values, str):
        raise SourceError(f"a SimpleImputer of words marking missing values as "
                          f"{imputer.missing_values!r} is not supported: mark them None or NaN")
    stats, takes = [], True
    for word, cats in zip(imputer.statistics_, cats_of, strict=True):
        text = [_text(c) for c in cats]
        if isinstance(word, str) and word in text:
            stats.append(float(text.index(word)))
        elif isinstance(word, str):
            takes = takes and unknown is not None  # else the user's model fails on one too
            stats.append(0.0 if unknown is None else unknown)
        else:
            stats.append(float(word))  # a column of numbers in the same encoder
    imputer.statistics_ = np.asarray(stats, dtype=np.float64)
    imputer.missing_values = np.nan
    imputer._fit_dtype = np.dtype(np.float64)
    if getattr(imputer, "indicator_", None) is not None:
        imputer.indicator_.missing_values = np.nan
        imputer.indicator_._precomputed = False
    return takes


def _identity(width: int):
    """What a fitted ColumnTransformer holds for ``"passthrough"``: skl2onnx and the compiler
    take it."""
    from sklearn.preprocessing import FunctionTransformer

    return FunctionTransformer(accept_sparse=True, check_inverse=False,
                               feature_names_out="one-to-one").fit(np.zeros((1, width)))
