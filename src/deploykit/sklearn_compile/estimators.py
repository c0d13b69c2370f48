"""What each scikit-learn estimator computes, written as :class:`.program.Program` code.

Four tables, keyed by class name, say what an estimator can give: ``TRANSFORM`` (a
transformer's output), ``PROBA`` (a classifier's ``predict_proba``), ``DECISION`` (its
``decision_function``, which calibration builds on) and ``PREDICT`` (a regressor's
``predict``). Each entry is ``fn(estimator, program, register) -> register``. Arrays are
stored as float32 and computed in the order scikit-learn computes them. :func:`final`,
:func:`transform` and :func:`decision` (at the end) pick the entry, and walk Pipelines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from deploykit.sklearn_compile import trees
from deploykit.sklearn_compile.base import UnsupportedEstimator, name_of, unsupported
from deploykit.sklearn_compile.program import Program

Fn = Callable[[Any, Program, int], int]
TRANSFORM: dict[str, Fn] = {}
PROBA: dict[str, Fn] = {}
DECISION: dict[str, Fn] = {}
PREDICT: dict[str, Fn] = {}


def _into(table: dict[str, Fn], *names: str):
    def deco(fn: Fn) -> Fn:
        for n in names:
            table[n] = fn
        return fn
    return deco


# -- transformers -------------------------------------------------------------------------------
def scaler_steps(est: Any) -> list[tuple[str, np.ndarray]] | None:
    """A per-feature scaler's steps in scikit-learn's own order, or None for other estimators."""
    n = name_of(est)
    if n == "StandardScaler":
        steps = [("sub", est.mean_, est.with_mean), ("div", est.scale_, est.with_std)]
    elif n == "MinMaxScaler":
        if est.clip:
            unsupported(est, "clip=True")
        steps = [("mul", est.scale_, True), ("add", est.min_, True)]
    elif n == "MaxAbsScaler":
        steps = [("div", est.scale_, True)]
    elif n == "RobustScaler":
        steps = [("sub", est.center_, est.with_centering), ("div", est.scale_, est.with_scaling)]
    else:
        return None
    return [(s, np.asarray(a)) for s, a, on in steps if on]


@_into(TRANSFORM, "StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler")
def _scaler(est, p, x):
    steps = scaler_steps(est)
    return p.add("elementwise", x, steps=[[s, p.const(a)] for s, a in steps]) if steps else x


@_into(TRANSFORM, "FunctionTransformer")
def _identity(est, p, x):
    """Only the identity (``func=None``: how ColumnTransformer passes columns through)."""
    if est.func is not None:
        unsupported(est, "a FunctionTransformer with a func")
    return x


@_into(TRANSFORM, "Normalizer")
def _normalizer(est, p, x):
    return p.add("normalize_rows", x, norm=est.norm)


@_into(TRANSFORM, "PCA")
def _pca(est, p, x):
    w = est.components_.T / (np.sqrt(est.explained_variance_) if est.whiten else 1.0)
    return p.add("affine", x, center=p.const(est.mean_), weight=p.const(w),
                 bias=p.const(np.zeros(w.shape[1])))


@_into(TRANSFORM, "TruncatedSVD")
def _svd(est, p, x):
    w = est.components_.T
    return p.add("affine", x, weight=p.const(w), bias=p.const(np.zeros(w.shape[1])))


@_into(TRANSFORM, "SimpleImputer")
def _imputer(est, p, x):
    """Missing values (NaN, or the imputer's ``missing_values``) become the column's fitted
    statistic; then the columns the imputer keeps (a column missing in every training row is
    dropped, or filled with 0 under ``keep_empty_features``), and with ``add_indicator`` a
    0/1 column per feature that had missing values in training."""
    marker = est.missing_values
    nan = isinstance(marker, float) and np.isnan(marker)
    if not nan and not isinstance(marker, (int, float)):
        unsupported(est, f"missing_values={marker!r}")
    how = {} if nan else {"marker": float(marker)}
    empty = np.isnan(est.statistics_)
    out = p.add("fill_missing", x, fill=p.const(np.where(empty, 0.0, est.statistics_)), **how)
    kept = np.flatnonzero(~empty)
    if not est.keep_empty_features and len(kept) < len(est.statistics_):
        out = p.add("columns", out, index=p.const(kept, "int32"))
    flagged = np.asarray(est.indicator_.features_) if est.add_indicator else []
    if len(flagged):
        out = p.add("concat", out, p.add("missing_mask", x, index=p.const(flagged, "int32"), **how))
    return out


@_into(TRANSFORM, "OneHotEncoder")
def _one_hot(est, p, x):
    if est.drop is not None:
        unsupported(est, "drop")
    cols = np.concatenate([np.full(len(c), j) for j, c in enumerate(est.categories_)])
    values = np.concatenate([np.asarray(c, np.float64) for c in est.categories_])
    return p.add("one_hot", x, column=p.const(cols, "int32"), value=p.const(values))


@_into(TRANSFORM, "ColumnTransformer")
def _columns(est, p, x, raw: bool = False):
    """Each branch on its columns, concatenated in scikit-learn's order; with ``raw``, the
    per-feature scalers are left out (folded into the trees' thresholds, see
    :class:`_BranchScalers`)."""
    parts = []
    for trans, idx in _branches(est):
        part = p.add("columns", x, index=p.const(idx, "int32"))
        keep = isinstance(trans, str) or raw and scaler_steps(trans) is not None
        parts.append(part if keep else transform(trans, p, part))
    return parts[0] if len(parts) == 1 else p.add("concat", *parts)


def _branches(est) -> list[tuple[Any, np.ndarray]]:
    """``(transformer or "passthrough", input columns)`` of each branch that outputs columns."""
    out = []
    for _, trans, cols in est.transformers_:
        idx = _column_indices(est, cols)
        if not (isinstance(trans, str) and trans == "drop" or len(idx) == 0):
            out.append((trans, idx))
    return out


class _BranchScalers:
    """A ColumnTransformer's per-feature scalers acting on its own output columns (identity
    for passthrough and one-hot columns): what ``trees.float32_thresholds`` searches through
    when the transformer comes right before the trees (scikit-learn scales in float64 and the
    trees then compare in float32; the program, compiled raw, compares the input itself)."""

    def __init__(self, est):
        self.spans, start = [], 0
        for trans, idx in _branches(est):
            scaler = not isinstance(trans, str) and scaler_steps(trans) is not None
            width = len(idx) if scaler else _exact_width(trans, idx)
            if scaler:
                self.spans.append((slice(start, start + width), trans))
            start += width

    @staticmethod
    def applies(est) -> bool:
        """Every branch acts feature by feature, non-decreasing: scalers, or columns the
        trees compare exactly (:func:`_exact_width`)."""
        return all(not isinstance(t, str) and scaler_steps(t) is not None
                   or _exact_width(t, idx) is not None for t, idx in _branches(est))

    def fit(self, *_):  # a Pipeline step must look fittable
        return self

    def transform(self, grid: np.ndarray) -> np.ndarray:
        out = grid.astype(np.float64)
        for span, scaler in self.spans:
            out[:, span] = scaler.transform(grid[:, span])
        return out


def _exact_width(trans, idx: np.ndarray) -> int | None:
    """The number of columns a branch gives whose values the trees compare as they are:
    passthrough (or the identity a fitted ColumnTransformer holds for it), one-hot (0/1),
    one-hot after a SimpleImputer (words given as codes, see :mod:`deploykit.sklearn_words`);
    None for any other branch."""
    if isinstance(trans, str) or name_of(trans) == "FunctionTransformer" and trans.func is None:
        return len(idx)
    steps = [s for _, s in trans.steps] if name_of(trans) == "Pipeline" else [trans]
    if name_of(steps[-1]) != "OneHotEncoder" or steps[-1].drop_idx_ is not None or \
            getattr(steps[-1], "_infrequent_enabled", False) or any(
            name_of(s) != "SimpleImputer" or s.add_indicator for s in steps[:-1]):
        return None
    return sum(len(c) for c in steps[-1].categories_)


def _column_indices(est, cols) -> np.ndarray:
    if isinstance(cols, slice):
        return np.arange(est.n_features_in_)[cols]
    cols = np.asarray(cols)
    if cols.dtype == bool:
        return np.flatnonzero(cols)
    if cols.dtype.kind not in "iu":
        unsupported(est, "columns selected by name (select them by position)")
    return cols.astype(int)


# -- linear models ------------------------------------------------------------------------------
def _linear(est, p, x):
    coef = np.atleast_2d(est.coef_)
    bias = np.broadcast_to(np.asarray(est.intercept_, np.float64), (coef.shape[0],))
    return p.add("affine", x, weight=p.const(coef.T), bias=p.const(bias))


@_into(DECISION, "LogisticRegression", "SGDClassifier", "LinearSVC", "RidgeClassifier",
       "Perceptron")
def _linear_decision(est, p, x):
    return _linear(est, p, x)


@_into(PREDICT, "LinearSVC", "RidgeClassifier", "Perceptron", "SGDClassifier", "SVC", "NuSVC")
def _decision_class(est, p, x):
    """A classifier without probabilities, exported for its ``predict``: the class value."""

    return p.add("decision_class", decision(est, p, x),
                 classes=p.const(np.asarray(est.classes_, np.float64)))


@_into(PREDICT, "LinearRegression", "Ridge", "Lasso", "ElasticNet", "SGDRegressor",
       "LinearSVR", "Lars", "LassoLars", "BayesianRidge", "HuberRegressor")
def _linear_predict(est, p, x):
    return _linear(est, p, x)


@_into(PREDICT, "MultiOutputRegressor")
def _multi_output(est, p, x):
    """One regressor per target, each ``[rows, 1]``: side by side, as its ``predict``."""
    return p.add("concat", *[final(e, p, x) for e in est.estimators_])


def _probabilities(p, d: int, width: int, several: str):
    """One logit -> two classes' probabilities; several -> ``several`` (softmax, or one-vs-rest
    sigmoids normalised)."""
    if width == 1:
        return p.add("activation", d, kind="binary")
    if several == "softmax":
        return p.add("activation", d, kind="softmax")
    return p.add("activation", p.add("activation", d, kind="logistic"), kind="normalize")


@_into(PROBA, "LogisticRegression")
def _logistic(est, p, x):
    ovr = getattr(est, "multi_class", "auto") == "ovr" or est.solver == "liblinear"
    return _probabilities(p, _linear(est, p, x), np.atleast_2d(est.coef_).shape[0],
                          "ovr" if ovr else "softmax")


@_into(PROBA, "OneVsRestClassifier")
def _one_vs_rest(est, p, x):
    """Each class's binary classifier, its positive probabilities normalised per row."""

    if len(est.estimators_) == 1:  # a binary problem: the one classifier's probabilities
        return final(est.estimators_[0], p, x)
    positive = p.const([1], "int32")
    cols = [p.add("columns", final(e, p, x), index=positive) for e in est.estimators_]
    return p.add("activation", p.add("concat", *cols), kind="normalize")


@_into(PROBA, "SGDClassifier")
def _sgd_proba(est, p, x):
    if est.loss != "log_loss":
        unsupported(est, f"loss={est.loss!r} probabilities (log_loss is supported)")
    return _probabilities(p, _linear(est, p, x), np.atleast_2d(est.coef_).shape[0], "ovr")


# -- neural networks ----------------------------------------------------------------------------
def _mlp(est, p, x):
    layers = list(zip(est.coefs_, est.intercepts_, strict=True))
    for i, (w, b) in enumerate(layers):
        x = p.add("affine", x, weight=p.const(w), bias=p.const(b))
        if i < len(layers) - 1:
            x = p.add("activation", x, kind=est.activation)
    return x


@_into(PROBA, "MLPClassifier")
def _mlp_proba(est, p, x):
    z = _mlp(est, p, x)
    return _probabilities(p, z, est.coefs_[-1].shape[1],
                          "softmax" if est.out_activation_ == "softmax" else "ovr")


@_into(PREDICT, "MLPRegressor")
def _mlp_predict(est, p, x):
    return _mlp(est, p, x)


# -- naive Bayes and neighbours -----------------------------------------------------------------
@_into(PROBA, "GaussianNB")
def _gaussian_nb(est, p, x):
    prior = np.log(est.class_prior_) - 0.5 * np.sum(np.log(2 * np.pi * est.var_), axis=1)
    return p.add("gaussian_nb", x, theta=p.const(est.theta_), var=p.const(est.var_),
                 prior=p.const(prior))


def _neighbours(est, p, x, targets: np.ndarray) -> int:
    metric, params = est.effective_metric_, est.effective_metric_params_
    power = params.get("p", 2) if metric == "minkowski" else \
        {"euclidean": 2, "manhattan": 1}.get(metric)
    if power not in (1, 2):
        unsupported(est, f"metric {metric!r} (euclidean and manhattan are)")
    if est.weights not in ("uniform", "distance"):
        unsupported(est, "callable weights")
    return p.add("neighbours", x, fit=p.const(est._fit_X), targets=p.const(targets),
                 k=int(est.n_neighbors), p=int(power), weights=est.weights)


@_into(PROBA, "KNeighborsClassifier")
def _knn_proba(est, p, x):
    return _neighbours(est, p, x, np.eye(len(est.classes_))[np.ravel(est._y)])


@_into(PREDICT, "KNeighborsRegressor")
def _knn_predict(est, p, x):
    return _neighbours(est, p, x, np.asarray(est._y, np.float64).reshape(len(est._y), -1))


# -- support vector machines --------------------------------------------------------------------
def _kernel(est, p, x):
    if callable(est.kernel) or est.kernel == "precomputed":
        unsupported(est, "a callable or precomputed kernel")
    return p.add("kernel", x, vectors=p.const(est.support_vectors_), kind=est.kernel,
                 gamma=float(est._gamma), coef0=float(est.coef0), degree=int(est.degree))


@_into(PREDICT, "SVR", "NuSVR")
def _svr(est, p, x):
    return p.add("affine", _kernel(est, p, x), weight=p.const(est.dual_coef_.T),
                 bias=p.const(est.intercept_))


@_into(DECISION, "SVC", "NuSVC")
def _svc_decision(est, p, x):
    k = _kernel(est, p, x)
    n = len(est.classes_)
    if n == 2:
        return p.add("affine", k, weight=p.const(est.dual_coef_.T), bias=p.const(est.intercept_))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    start = np.concatenate([[0], np.cumsum(est.n_support_)])
    weight = np.zeros((len(est.support_vectors_), len(pairs)))  # one column per class pair
    for c, (i, j) in enumerate(pairs):
        weight[start[i]:start[i + 1], c] = est.dual_coef_[j - 1, start[i]:start[i + 1]]
        weight[start[j]:start[j + 1], c] = est.dual_coef_[i, start[j]:start[j + 1]]
    dec = p.add("affine", k, weight=p.const(weight), bias=p.const(est.intercept_))
    if est.decision_function_shape == "ovo":
        return dec
    to_i, to_j = np.zeros((len(pairs), n)), np.zeros((len(pairs), n))
    for c, (i, j) in enumerate(pairs):
        to_i[c, i], to_j[c, j] = 1, 1
    return p.add("ovr_votes", dec, to_i=p.const(to_i), to_j=p.const(to_j))


@_into(PROBA, "CalibratedClassifierCV")
def _calibrated(est, p, x):

    probs = []
    for cal in est.calibrated_classifiers_:
        if cal.method != "sigmoid":
            unsupported(est, f"method={cal.method!r} (sigmoid calibration is supported)")
        probs.append(p.add("sigmoid_calibration", decision(cal.estimator, p, x),
                           a=p.const([c.a_ for c in cal.calibrators]),
                           b=p.const([c.b_ for c in cal.calibrators]),
                           n_classes=len(est.classes_)))
    return probs[0] if len(probs) == 1 else p.add("mean", *probs)


# -- dispatch -----------------------------------------------------------------------------------
def supported() -> list[str]:
    """Every estimator class the compiler takes, sorted."""
    return sorted({"Pipeline", *TRANSFORM, *PROBA, *DECISION, *PREDICT,
                   *trees.CLASSIFIERS, *trees.REGRESSORS})


def _refuse(est: Any, what: str):
    name = name_of(est)
    roles = [role for role, table in (("transformer", TRANSFORM), ("decision function", DECISION),
                                      ("classifier", PROBA), ("predict-only model", PREDICT))
             if name in table]
    if roles:  # "SVC cannot be compiled ...; supported: ..., SVC" contradicted itself
        hint = "" if name not in ("SVC", "NuSVC") else (
            ": its probability=True (Platt scaling with pairwise coupling) is not compiled; "
            "CalibratedClassifierCV(SVC(), method='sigmoid') gives probabilities that are")
        raise UnsupportedEstimator(f"{name} is compiled as a {' and a '.join(roles)}, not as a "
                                   f"{what}{hint}")
    raise UnsupportedEstimator(f"{name} cannot be compiled as a {what}; supported: "
                               f"{', '.join(supported())}")


def transform(est: Any, p: Program, x: int) -> int:
    """A transformer (or a Pipeline of them)."""
    if name_of(est) == "Pipeline":
        return _steps(est, p, x, final_step=False)
    fn = TRANSFORM.get(name_of(est)) or _refuse(est, "transformer")
    return fn(est, p, x)


def decision(est: Any, p: Program, x: int) -> int:
    """A classifier's ``decision_function`` (what calibration builds on)."""
    fn = DECISION.get(name_of(est)) or _refuse(est, "decision function")
    return fn(est, p, x)


def final(est: Any, p: Program, x: int, before: Any = None) -> int:
    """A model's probabilities (classifier) or predictions (regressor), a Pipeline's included."""
    name = name_of(est)
    if name == "Pipeline":
        return _steps(est, p, x, final_step=True)
    if name in trees.CLASSIFIERS or name in trees.REGRESSORS:
        return trees.compile_ensemble(est, p, x, before)
    table = PROBA if hasattr(est, "predict_proba") else PREDICT
    fn = table.get(name) or _refuse(est, "classifier" if table is PROBA else "regressor")
    return fn(est, p, x)


def _steps(pipe: Any, p: Program, x: int, final_step: bool) -> int:
    """A Pipeline: its transformers, then its final model when ``final_step``. Per-feature
    scalers right before a tree model, and a ColumnTransformer of them right before those,
    are folded into its thresholds (see :mod:`.trees`)."""
    steps = [s for _, s in pipe.steps if not (isinstance(s, str) or s is None)]
    body, end = (steps[:-1], steps[-1]) if final_step else (steps, None)
    folded, columns = 0, None
    if end is not None and name_of(end) in trees.CLASSIFIERS + trees.REGRESSORS:
        while folded < len(body) and scaler_steps(body[len(body) - 1 - folded]):
            folded += 1
        k = len(body) - 1 - folded
        if k >= 0 and name_of(body[k]) == "ColumnTransformer" and \
                _BranchScalers.applies(body[k]):
            columns = body[k]
    for s in body[:len(body) - folded - (columns is not None)]:
        x = transform(s, p, x)
    if end is None:
        return x
    before = body[len(body) - folded:]
    if columns is not None:
        x = _columns(columns, p, x, raw=True)
        before = [_BranchScalers(columns), *before]
    return final(end, p, x, _pipeline(before) if before else None)


def _pipeline(steps: list[Any]) -> Any:
    from sklearn.pipeline import make_pipeline

    return steps[0] if len(steps) == 1 else make_pipeline(*steps)
