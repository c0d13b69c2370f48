"""Decision trees and their ensembles as one ``trees`` instruction (see :mod:`.program`).

Leaf assignments match scikit-learn's exactly. scikit-learn compares a float32 feature value
(HistGradientBoosting: the same value as float64) with a float64 threshold; the program
compares float32 with float32, so each threshold becomes the largest float32 ``v`` for which
scikit-learn would still go left. When per-feature scalers come right before the trees in a
Pipeline, they are folded into the thresholds the same way: ``v`` is found on the raw input's
float32 grid by running the scalers' own ``transform`` (a binary search over the float32
values in order), so their float64 rounding cannot move a row to another leaf either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from deploykit.sklearn_compile.base import name_of, unsupported
from deploykit.sklearn_compile.program import Program

CLASSIFIERS = ("DecisionTreeClassifier", "ExtraTreeClassifier", "RandomForestClassifier",
               "ExtraTreesClassifier", "GradientBoostingClassifier",
               "HistGradientBoostingClassifier")
REGRESSORS = ("DecisionTreeRegressor", "ExtraTreeRegressor", "RandomForestRegressor",
              "ExtraTreesRegressor", "GradientBoostingRegressor", "HistGradientBoostingRegressor")


@dataclass
class Tree:
    """One tree, nodes numbered from 0 (the root); a leaf has ``left == -1``."""

    feature: np.ndarray
    threshold: np.ndarray  # float64, scikit-learn's own
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray  # [nodes, outputs]
    depth: int
    missing_left: np.ndarray | None = None  # where a missing value (NaN) goes at each node


@dataclass
class Ensemble:
    trees: list[Tree]
    scale: float  # the sum of the trees' leaf values times scale, plus offset
    offset: np.ndarray
    link: str  # then: identity, binary (sigmoid of one logit), softmax, exp


def _sk_tree(t, value: np.ndarray) -> Tree:
    missing = getattr(t, "missing_go_to_left", None)
    return Tree(t.feature.copy(), t.threshold.copy(), t.children_left.copy(),
                t.children_right.copy(), value, int(t.max_depth),
                None if missing is None else np.asarray(missing, bool))


def _hgb_tree(pred, column: int, width: int) -> Tree:
    n = pred.nodes
    if n["is_categorical"].any():
        unsupported(pred, "categorical features in HistGradientBoosting")
    value = np.zeros((len(n), width))
    value[:, column] = n["value"]
    leaf = n["is_leaf"].astype(bool)
    left, right = (np.where(leaf, -1, n[k].astype(np.int64)) for k in ("left", "right"))
    return Tree(n["feature_idx"].astype(np.int64), n["num_threshold"].astype(np.float64), left,
                right, value, int(n["depth"].max()), n["missing_go_to_left"].astype(bool))


def _proba_values(t) -> np.ndarray:
    v = t.value[:, 0, :]
    return v / v.sum(axis=1, keepdims=True)


def ensemble(est: Any) -> Ensemble:
    """The trees of ``est`` and how their sum becomes its output."""
    n = name_of(est)
    zero = np.zeros(1)
    if n in ("DecisionTreeClassifier", "ExtraTreeClassifier"):
        return Ensemble([_sk_tree(est.tree_, _proba_values(est.tree_))], 1.0, zero, "identity")
    if n in ("DecisionTreeRegressor", "ExtraTreeRegressor"):
        return Ensemble([_sk_tree(est.tree_, est.tree_.value[:, :, 0])], 1.0, zero, "identity")
    if n in ("RandomForestClassifier", "ExtraTreesClassifier"):
        trees = [_sk_tree(e.tree_, _proba_values(e.tree_)) for e in est.estimators_]
        return Ensemble(trees, 1.0 / len(trees), zero, "identity")
    if n in ("RandomForestRegressor", "ExtraTreesRegressor"):
        trees = [_sk_tree(e.tree_, e.tree_.value[:, :, 0]) for e in est.estimators_]
        return Ensemble(trees, 1.0 / len(trees), zero, "identity")
    if n.startswith("GradientBoosting"):
        return _gradient_boosting(est)
    return _hist_gradient_boosting(est)


def _gradient_boosting(est) -> Ensemble:
    stages, width = est.estimators_.shape
    trees = []
    for stage in est.estimators_:
        for k, e in enumerate(stage):
            value = np.zeros((e.tree_.node_count, width))
            value[:, k] = e.tree_.value[:, 0, 0]
            trees.append(_sk_tree(e.tree_, value))
    offset = est._raw_predict_init(np.zeros((1, est.n_features_in_), np.float32))[0]
    classify = hasattr(est, "classes_")
    return Ensemble(trees, float(est.learning_rate), offset,
                    ("binary" if width == 1 else "softmax") if classify else "identity")


def _hist_gradient_boosting(est) -> Ensemble:
    width = est._baseline_prediction.shape[-1] if est._baseline_prediction.ndim > 1 else 1
    trees = [_hgb_tree(pred, k, width) for stage in est._predictors
             for k, pred in enumerate(stage)]
    link = type(est._loss.link).__name__
    if hasattr(est, "classes_"):
        post = "binary" if width == 1 else "softmax"
    elif link in ("IdentityLink", "LogLink"):
        post = "identity" if link == "IdentityLink" else "exp"
    else:
        unsupported(est, f"the {link} link")
    return Ensemble(trees, 1.0, np.ravel(est._baseline_prediction), post)


# -- thresholds -----------------------------------------------------------------------------------
def _key(v: np.ndarray) -> np.ndarray:
    """float32 values -> integers in the same order."""
    i = np.asarray(v, np.float32).view(np.int32).astype(np.int64)
    return np.where(i < 0, -(i & 0x7FFFFFFF), i)


def _value(k: np.ndarray) -> np.ndarray:
    bits = np.where(k < 0, (-k) | 0x80000000, k).astype(np.uint32)
    return bits.view(np.float32)


def float32_thresholds(feature: np.ndarray, threshold: np.ndarray, n_features: int,
                       before: Any = None) -> np.ndarray:
    """For each (feature, float64 threshold): the largest float32 ``v`` whose value after
    ``before`` (a fitted transformer acting feature by feature, non-decreasing; None: as is)
    is ``<= threshold`` as scikit-learn compares it; -inf when there is none."""
    rows = np.arange(len(feature))

    def ok(k: np.ndarray) -> np.ndarray:
        v = _value(k)
        if before is None:
            return v.astype(np.float64) <= threshold
        grid = np.zeros((len(feature), n_features), np.float32)
        grid[rows, feature] = v
        with np.errstate(over="ignore"):  # the search starts at the float32 extremes
            return before.transform(grid)[rows, feature].astype(np.float64) <= threshold

    lo = np.full(len(feature), _key(np.float32(-np.finfo(np.float32).max)))
    hi = np.full(len(feature), _key(np.float32(np.finfo(np.float32).max)) + 1)
    none = ~ok(lo)
    while np.any(hi - lo > 1):
        mid = (lo + hi) // 2
        good = ok(mid)
        lo, hi = np.where(good, mid, lo), np.where(good, hi, mid)
    return np.where(none, -np.inf, _value(lo)).astype(np.float32)


GEMM_MAX_DEPTH = 4  # shallower ensembles run as three matrix products (see _gemm)


def compile_ensemble(est: Any, p: Program, x: int, before: Any = None) -> int:
    """The instruction for ``est``'s trees and its link: ``trees_gemm`` for shallow trees
    (boosting's usual depth 3; a few products instead of a gather per level), else ``trees``
    (level by level); ``before`` as in :func:`float32_thresholds`."""
    e = ensemble(est)
    thresholds = float32_thresholds(
        np.concatenate([t.feature[t.left >= 0] for t in e.trees]),
        np.concatenate([t.threshold[t.left >= 0] for t in e.trees]), est.n_features_in_, before)
    inner = np.cumsum([0] + [int((t.left >= 0).sum()) for t in e.trees])
    for t, lo, hi in zip(e.trees, inner[:-1], inner[1:], strict=True):
        t.threshold = np.zeros(len(t.feature), np.float32)
        t.threshold[t.left >= 0] = thresholds[lo:hi]
    common = {"scale": p.const([e.scale]), "offset": p.const(e.offset)}
    if p.missing and any(t.missing_left is None for t in e.trees):
        unsupported(est, "missing values (NaN) with this scikit-learn version's trees")
    if max(t.depth for t in e.trees) <= GEMM_MAX_DEPTH:
        out = p.add("trees_gemm", x, **_gemm(e.trees, est.n_features_in_, p), **common)
    else:
        out = p.add("trees", x, **_walk(e.trees, p), n_features=int(est.n_features_in_),
                    **common)
    return out if e.link == "identity" else p.add("activation", out, kind=e.link)


def _walk(trees: list[Tree], p: Program) -> dict[str, Any]:
    """The arrays of the level-by-level walk (see the ``trees`` op)."""
    sizes = [len(t.feature) for t in trees]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    ids = np.concatenate([np.arange(n) + s for n, s in zip(sizes, starts, strict=True)])
    leaf = np.concatenate([t.left < 0 for t in trees])
    left = np.concatenate([t.left + s for t, s in zip(trees, starts, strict=True)])
    right = np.concatenate([t.right + s for t, s in zip(trees, starts, strict=True)])
    out = {"feature": p.const(np.where(leaf, 0, np.concatenate([t.feature for t in trees])),
                              "int32"),
           "threshold": p.const(np.concatenate([t.threshold for t in trees])),
           "left": p.const(np.where(leaf, ids, left), "int32"),
           "right": p.const(np.where(leaf, ids, right), "int32"),
           "roots": p.const(starts, "int32"), "value": p.const(np.concatenate(
               [t.value for t in trees])), "depth": max(t.depth for t in trees)}
    if p.missing:  # 1.0 where a NaN goes left
        out["missing_left"] = p.const(np.concatenate([t.missing_left for t in trees]))
    return out


def _gemm(trees: list[Tree], n_features: int, p: Program) -> dict[str, Any]:
    """Hummingbird's GEMM strategy, trees padded to the same sizes: ``pick`` [features,
    trees*I] selects each inner node's feature, ``threshold`` [trees*I]; ``paths`` [trees, I,
    L] is +1 where a leaf lies left of an inner node and -1 right of it; ``lefts`` [trees, 1,
    L] counts a leaf's left turns (a padding leaf: -1, never reached); ``value`` [trees, L,
    outputs]. A row reaches the leaf whose left turns all compare true and right turns false:
    ``(x @ pick <= threshold) @ paths == lefts``."""
    n_in = max(int((t.left >= 0).sum()) for t in trees) or 1
    n_leaf = max(int((t.left < 0).sum()) for t in trees)
    width = trees[0].value.shape[1]
    pick = np.zeros((n_features, len(trees) * n_in))
    thr = np.full(len(trees) * n_in, np.inf, np.float32)
    missing_left = np.zeros(len(trees) * n_in, np.float32)
    paths = np.zeros((len(trees), n_in, n_leaf))
    lefts = np.full((len(trees), 1, n_leaf), -1.0)
    value = np.zeros((len(trees), n_leaf, width))
    for k, t in enumerate(trees):
        inner = {node: i for i, node in enumerate(np.flatnonzero(t.left >= 0))}
        for node, i in inner.items():
            pick[t.feature[node], k * n_in + i] = 1.0
            thr[k * n_in + i] = t.threshold[node]
            if p.missing:
                missing_left[k * n_in + i] = t.missing_left[node]
        for j, (leaf, turns) in enumerate(_leaf_paths(t)):
            for node, went_left in turns:
                paths[k, inner[node], j] = 1.0 if went_left else -1.0
            lefts[k, 0, j] = sum(went_left for _, went_left in turns)
            value[k, j] = t.value[leaf]
    return {"pick": p.const(pick), "threshold": p.const(thr), "paths": p.const(paths),
            "lefts": p.const(lefts), "value": p.const(value), "inner": n_in,
            **({"missing_left": p.const(missing_left)} if p.missing else {})}


def _leaf_paths(t: Tree) -> list[tuple[int, list[tuple[int, bool]]]]:
    """Each leaf with the (inner node, went left) turns from the root to it."""
    out, todo = [], [(0, [])]
    while todo:
        node, turns = todo.pop()
        if t.left[node] < 0:
            out.append((node, turns))
        else:
            todo += [(int(t.right[node]), [*turns, (node, False)]),
                     (int(t.left[node]), [*turns, (node, True)])]
    return out
