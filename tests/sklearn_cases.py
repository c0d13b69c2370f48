"""One fitted instance of every estimator the scikit-learn compiler supports, all on the same
rows (so that one compiled program can hold them all): six float32 features, the first two
integer-coded categories (0-3), and a three-class, a two-class, a continuous and a two-column
continuous target derived from them. Used by ``test_sklearn_compile.py`` and
``test_sklearn_compile_export.py``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

ROWS = 240


@functools.cache
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, (ROWS, 2))
    x = np.column_stack([codes, rng.normal(size=(ROWS, 4)) * [1, 3, 0.5, 2] + [0, 5, 1, -2]])
    score = x[:, 2] + 0.4 * x[:, 3] - 0.8 * codes[:, 0] + rng.normal(0, 0.5, ROWS)
    three = np.searchsorted(np.quantile(score, [1 / 3, 2 / 3]), score)
    value = score * 10 + x[:, 4] ** 2
    return {"X": x.astype(np.float32), "three": three, "two": (score > np.median(score))
            .astype(int), "value": value.astype(np.float64),
            "values": np.column_stack([value, x[:, 3] * 2 - score])}


def _cases() -> dict[str, tuple[str, Callable[[], Any]]]:
    from sklearn import (
        calibration,
        compose,
        decomposition,
        ensemble,
        impute,
        linear_model,
        multiclass,
        multioutput,
        naive_bayes,
        neighbors,
        neural_network,
        svm,
        tree,
    )
    from sklearn import preprocessing as pp
    from sklearn.pipeline import make_pipeline as pipe

    def columns():
        return compose.ColumnTransformer(
            [("codes", pp.OneHotEncoder(handle_unknown="ignore"), [0, 1]),
             ("scaled", pp.StandardScaler(), [2, 3])], remainder="passthrough")

    return {  # name -> (target, estimator factory)
        "logistic": ("three", lambda: pipe(pp.StandardScaler(), linear_model.LogisticRegression())),
        "logistic-binary": ("two", lambda: linear_model.LogisticRegression(max_iter=500)),
        "logistic-ovr": ("three", lambda: multiclass.OneVsRestClassifier(
            linear_model.LogisticRegression())),
        "sgd": ("three", lambda: pipe(pp.MinMaxScaler(), linear_model.SGDClassifier(
            loss="log_loss", random_state=0))),
        "svc-rbf-calibrated": ("three", lambda: pipe(pp.StandardScaler(),
                                                     calibration.CalibratedClassifierCV(
                                                         svm.SVC(), ensemble=False))),
        "svc-poly-calibrated": ("two", lambda: pipe(pp.StandardScaler(),
                                                    calibration.CalibratedClassifierCV(
                                                        svm.SVC(kernel="poly"), cv=3))),
        "svc-sigmoid-calibrated": ("three", lambda: pipe(pp.StandardScaler(),
                                                         calibration.CalibratedClassifierCV(
                                                             svm.SVC(kernel="sigmoid"),
                                                             ensemble=False))),
        "svc-linear-labels": ("three", lambda: svm.SVC(kernel="linear")),
        "linear-svc-labels": ("three", lambda: pipe(pp.StandardScaler(), svm.LinearSVC())),
        "ridge-classifier-labels": ("two", lambda: pipe(pp.MaxAbsScaler(),
                                                        linear_model.RidgeClassifier())),
        "tree": ("three", lambda: tree.DecisionTreeClassifier(max_depth=6, random_state=0)),
        "forest": ("three", lambda: pipe(pp.StandardScaler(), ensemble.RandomForestClassifier(
            20, max_depth=6, random_state=0))),
        "extra-trees": ("two", lambda: ensemble.ExtraTreesClassifier(10, max_depth=6,
                                                                  random_state=0)),
        "boosting": ("three", lambda: ensemble.GradientBoostingClassifier(n_estimators=20)),
        "boosting-binary": ("two", lambda: ensemble.GradientBoostingClassifier(n_estimators=20)),
        "hist-boosting": ("three", lambda: ensemble.HistGradientBoostingClassifier(max_iter=20,
                                                                                 max_depth=4)),
        "hist-boosting-binary": ("two", lambda: ensemble.HistGradientBoostingClassifier(
            max_iter=20, max_depth=4)),
        "neighbours": ("three", lambda: pipe(pp.RobustScaler(),
                                             neighbors.KNeighborsClassifier())),
        "naive-bayes": ("three", lambda: naive_bayes.GaussianNB()),
        "mlp": ("three", lambda: pipe(pp.StandardScaler(), neural_network.MLPClassifier(
            (16,), max_iter=300, random_state=0))),
        "mlp-binary": ("two", lambda: neural_network.MLPClassifier(
            (8,), activation="tanh", max_iter=300, random_state=0)),
        "pca-logistic": ("three", lambda: pipe(pp.StandardScaler(), decomposition.PCA(
            3, whiten=True), linear_model.LogisticRegression())),
        "imputed-svd-logistic": ("three", lambda: pipe(impute.SimpleImputer(), pp.Normalizer(),
                                                       decomposition.TruncatedSVD(3),
                                                       linear_model.LogisticRegression())),
        "columns-boosting": ("three", lambda: pipe(columns(),
                                                   ensemble.HistGradientBoostingClassifier(
                                                       max_iter=20, max_depth=4))),
        "columns-logistic": ("two", lambda: pipe(columns(), linear_model.LogisticRegression(
            max_iter=500))),
        "nu-svc-labels": ("three", lambda: pipe(pp.StandardScaler(), svm.NuSVC())),
        "perceptron-labels": ("three", lambda: linear_model.Perceptron(random_state=0)),
        "single-extra-tree": ("three", lambda: tree.ExtraTreeClassifier(max_depth=6,
                                                                            random_state=0)),
        "linear": ("value", lambda: linear_model.LinearRegression()),
        "bayesian-ridge": ("value", lambda: linear_model.BayesianRidge()),
        "huber": ("value", lambda: pipe(pp.StandardScaler(), linear_model.HuberRegressor())),
        "lars": ("value", lambda: linear_model.Lars()),
        "lasso-lars": ("value", lambda: linear_model.LassoLars(alpha=0.05)),
        "nu-svr": ("value", lambda: pipe(pp.StandardScaler(), svm.NuSVR())),
        "single-extra-tree-regressor": ("value", lambda: tree.ExtraTreeRegressor(max_depth=6,
                                                                                 random_state=0)),
        "ridge": ("value", lambda: pipe(pp.StandardScaler(), linear_model.Ridge())),
        "lasso": ("value", lambda: linear_model.Lasso(alpha=0.05)),
        "elastic-net": ("value", lambda: linear_model.ElasticNet(alpha=0.05)),
        "sgd-regressor": ("value", lambda: pipe(pp.StandardScaler(), linear_model.SGDRegressor(
            random_state=0))),
        "linear-svr": ("value", lambda: pipe(pp.StandardScaler(), svm.LinearSVR(
            max_iter=5000))),
        "svr": ("value", lambda: pipe(pp.StandardScaler(), svm.SVR(C=10.0))),
        "tree-regressor": ("value", lambda: tree.DecisionTreeRegressor(max_depth=6)),
        "forest-regressor": ("value", lambda: ensemble.RandomForestRegressor(
            20, max_depth=6, random_state=0)),
        "extra-trees-regressor": ("value", lambda: ensemble.ExtraTreesRegressor(
            10, max_depth=6, random_state=0)),
        "boosting-regressor": ("value", lambda: ensemble.GradientBoostingRegressor(
            n_estimators=20)),
        "hist-boosting-regressor": ("value", lambda: ensemble.HistGradientBoostingRegressor(
            max_iter=20, max_depth=4)),
        "neighbours-regressor": ("value", lambda: neighbors.KNeighborsRegressor(
            weights="distance")),
        "mlp-regressor": ("value", lambda: pipe(pp.StandardScaler(), neural_network.MLPRegressor(
            hidden_layer_sizes=(16,), max_iter=500, random_state=0))),
        "multi-output-boosting": ("values", lambda: multioutput.MultiOutputRegressor(
            ensemble.GradientBoostingRegressor(n_estimators=10))),
        "multi-output-ridge": ("values", lambda: multioutput.MultiOutputRegressor(
            pipe(pp.StandardScaler(), linear_model.Ridge()))),
    }


CASES = _cases()


@functools.cache
def fitted(name: str) -> tuple[Any, np.ndarray]:
    """The fitted estimator of case ``name`` and the rows it was fitted on."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    target, make = CASES[name]
    d = data()
    with warnings.catch_warnings():  # a few iterations are enough to have weights to compile
        warnings.simplefilter("ignore", ConvergenceWarning)
        return make().fit(d["X"], d[target]), d["X"]


def columns_forest() -> tuple[Any, np.ndarray]:
    """A random forest after a ColumnTransformer (one-hot on two integer-coded columns,
    scaling on six) on breast-cancer rows, and those rows. Computing the scaling in float32
    (as LiteRT does, dividing by multiplying) rather than in scikit-learn's float64 moves
    row 13 across a split unless the scaler is folded into the thresholds."""
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y = load_breast_cancer(return_X_y=True)
    X = X[:, :8].astype(np.float32)
    X[:, :2] = np.floor(X[:, :2] / X[:, :2].max(axis=0) * 4)
    pre = ColumnTransformer([("onehot", OneHotEncoder(handle_unknown="ignore"), [0, 1]),
                             ("scale", StandardScaler(), list(range(2, 8)))])
    model = make_pipeline(pre, RandomForestClassifier(30, max_depth=6, random_state=0))
    return model.fit(X, y), X


def breast_cancer_boosting() -> tuple[Any, np.ndarray]:
    """HistGradientBoosting on breast-cancer rows, and 200 of them: float16 thresholds send
    several of these rows down other branches."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = load_breast_cancer(return_X_y=True)
    X = X.astype(np.float32)
    return HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X, y), X[:200]
