"""How a fitted model keeps learning: judged by what its last step offers, never by its class name.

A champion is fine-tuned by its own capability, whatever built it (a preset of
`perennial.core.families` or the user's own factory, `model.estimator`):

- `partial_fit`: the last step learns one epoch per pass; the steps before it stay frozen and only
  transform, so the learnt weights keep meaning the same inputs;
- `lightgbm` (an `LGBMModel`): `fit(..., init_model=<its booster_>)` adds rounds, scored from the
  model's own raw predictions on the rows;
- `xgboost` (an `XGBModel`): `xgboost.train(..., xgb_model=<its booster>)` on a plain `DMatrix`
  adds rounds (the scikit-learn wrapper trains on a `QuantileDMatrix`, on which the existing trees
  score binned values: measured, 2% of moved rows started from other scores, by up to 0.33);
- `hgb` (scikit-learn `HistGradientBoosting*`): `warm_start` adds trees, which start from the model's
  own scores (`from_own_scores`).

The model itself is never changed: a fine-tune returns a deep copy, the user's classes are neither
subclassed nor patched. LightGBM and XGBoost are recognised without importing them: a model of theirs
exists only once they are imported. Importing this module is cheap (numpy only).
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from perennial.core.text import bounded

if TYPE_CHECKING:
    from perennial.core.config import TrainingConfig
    from perennial.core.metrics import Metric

Kind = Literal["partial_fit", "lightgbm", "xgboost", "hgb"]

# A pass: the estimator after learning more from (X, y, weights), and the fine-tune's settings.
Pass = Callable[[Any, Any, np.ndarray, "np.ndarray | None", "TrainingConfig", np.random.Generator], Any]


def last_step(model: Any) -> Any:
    """The estimator that makes a model's predictions: a Pipeline's last step (looked into when it is
    itself a Pipeline), or the model itself."""
    while _is_pipeline(model) and model.steps:
        model = model.steps[-1][1]
    return model


def continuation(model: Any) -> Kind | None:
    """How a fitted model (a Pipeline or a bare estimator) can keep learning, judged on its last
    step; None when it cannot (refit it instead)."""
    last = last_step(model)
    if callable(getattr(last, "partial_fit", None)):  # scikit-learn hides it where it would fail
        return "partial_fit"
    if _instance_of(last, "lightgbm", "LGBMModel"):
        return "lightgbm"
    if _instance_of(last, "xgboost", "XGBModel") and not callable(getattr(last, "objective", None)):
        return "xgboost"  # a custom objective is not saved in the booster it would continue from
    if any(_instance_of(last, "sklearn.ensemble", name)
           for name in ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor")):
        return "hgb"
    return None


def fine_tune(model: Any, X: Any, y: Any, training: TrainingConfig, metric: Metric) -> Any:
    """A deep copy of `model` (the champion) that has also learnt from (X, y); `model` is left as it was.

    It learns in passes (one `partial_fit` epoch, or `training.fine_tune_trees` more rounds or trees)
    on all but a `training.fine_tune_validation` share of the rows, and keeps the model after the best
    pass: it stops at the first pass that does not raise `metric`'s utility on those held-back rows.
    The steps before the last one stay frozen. A classifier learns no new class (`classes_` stay).

    Args:
        model: a fitted Pipeline or estimator, taking X as Perennial converts it (`features_frame`).
        X: the rows' model inputs; y: their labels (classification) or values (regression).

    Returns:
        The fine-tuned copy, of the same shape as `model`.

    Raises:
        ValueError: the model has no continuation, or y holds a label the model never learnt.
    """
    kind = continuation(model)
    if kind is None:
        raise ValueError(f"a model ending in {type(last_step(model)).__name__} cannot be fine-tuned: it "
                         "offers no partial_fit, no LightGBM or XGBoost booster and no HistGradientBoosting "
                         "warm start to continue from; retrain it instead")
    model = copy.deepcopy(model)
    est, y = last_step(model), np.asarray(y)
    _check_labels(est, y)
    frozen = _frozen_steps(model)
    Xt = _pipeline(frozen).transform(X) if frozen else X
    rng = np.random.default_rng(training.seed)
    val, fit = held_back(len(y), training, rng)
    X_fit, y_fit, weights = _with_every_class(est, _take(Xt, fit), y[fit])
    step = PASSES[kind]
    if kind == "hgb":
        _before_hgb(est, training)
    best, best_utility = est, -math.inf
    for _ in range(training.fine_tune_passes):
        est = step(est, X_fit, y_fit, weights, training, rng)
        utility = metric.utility(metric.score(est, _take(Xt, val), y[val])) if len(val) else math.nan
        if utility <= best_utility:  # NaN (no rows held back, or none it can judge): every pass counts
            break
        best = copy.deepcopy(est) if kind in ("partial_fit", "hgb") else est  # those learn in place
        best_utility = best_utility if math.isnan(utility) else utility
    return _with_last_step(model, best)


def held_back(rows: int, training: TrainingConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The positions of the rows a fine-tune judges its passes on, and of those it learns from (in
    order); none are held back from fewer than 20 rows."""
    order = rng.permutation(rows)
    held = int(rows * training.fine_tune_validation) if rows >= 20 else 0
    return order[:held], np.sort(order[held:])


# -- The passes ---------------------------------------------------------------------------------------

def _partial_fit_pass(est: Any, X: Any, y: np.ndarray, weights: np.ndarray | None, training: TrainingConfig,
                      rng: np.random.Generator) -> Any:
    # The classes it learnt, whichever the rows hold: a new class is refused (`_check_labels`).
    shuffled = rng.permutation(len(y))
    given = {"classes": est.classes_} if hasattr(est, "classes_") else {}
    est.partial_fit(_take(X, shuffled), y[shuffled], **given)
    return est


def _hgb_pass(est: Any, X: Any, y: np.ndarray, weights: np.ndarray | None, training: TrainingConfig,
              rng: np.random.Generator) -> Any:
    est.set_params(max_iter=est.n_iter_ + training.fine_tune_trees)
    with from_own_scores(est, X):
        est.fit(X, y, sample_weight=weights)
    return est


def _lightgbm_pass(est: Any, X: Any, y: np.ndarray, weights: np.ndarray | None, training: TrainingConfig,
                   rng: np.random.Generator) -> Any:
    # LightGBM scores the rows with the booster on their raw values: the added rounds start from the
    # model's own predictions. A new estimator each pass: `est` stays the previous pass's model.
    # L2 as for hgb (measured on SEA drifts, 5 seeds each, with replay: without it the added rounds
    # gained 8.5 points on the new concept and lost 14.3 on the old, with reg_lambda=1 10.2 and 5.1;
    # regressions' errors did not change). Rounds and L2 are set under each name the model was given.
    from sklearn.base import clone

    more = clone(est)
    params = more.get_params()
    l2 = max([training.fine_tune_l2, *(float(v) for k, v in params.items() if k in _LIGHTGBM_L2 and v)])
    more.set_params(**{key: training.fine_tune_trees for key in params if key in _LIGHTGBM_ROUNDS},
                    **{key: l2 for key in params if key in _LIGHTGBM_L2})
    return more.fit(X, y, sample_weight=weights, init_model=est.booster_)


# LightGBM's names of its number of rounds and of L2 (`lightgbm.basic._ConfigAliases.get(...)`).
_LIGHTGBM_ROUNDS = {"num_iterations", "num_iteration", "n_iter", "num_tree", "num_trees", "num_round",
                    "num_rounds", "nrounds", "num_boost_round", "n_estimators", "max_iter"}
_LIGHTGBM_L2 = {"lambda_l2", "reg_lambda", "lambda", "l2_regularization"}


def _xgboost_pass(est: Any, X: Any, y: np.ndarray, weights: np.ndarray | None, training: TrainingConfig,
                  rng: np.random.Generator) -> Any:
    # A plain DMatrix keeps the raw values, which the existing trees score the rows on (a
    # QuantileDMatrix, what `fit` builds, holds bins). The model's own settings, but not its
    # objective: the booster holds it (with the number of classes `fit` adds for multiclass).
    import xgboost
    from sklearn.base import clone

    if hasattr(est, "classes_"):
        y = np.searchsorted(est.classes_, y)  # xgboost learns class positions; classes_ are sorted
    params = {k: v for k, v in est.get_xgb_params().items() if k != "objective" and v is not None}
    given = [float(params.pop(key)) for key in ("lambda", "reg_lambda") if key in params]
    params["reg_lambda"] = max([training.fine_tune_l2, *(given or [1.0])])  # 1: XGBoost's default; as lgbm
    data = xgboost.DMatrix(X, label=y, weight=weights, missing=est.missing,
                           enable_categorical=est.enable_categorical, feature_types=est.feature_types)
    booster = xgboost.train(params, data, training.fine_tune_trees, xgb_model=_served_booster(est))
    more = clone(est)
    more.load_model(bytearray(booster.save_raw()))  # the documented way into a scikit-learn estimator
    return more


def _served_booster(est: Any) -> Any:
    """The rounds an XGBoost model predicts with: all of them, or up to the best one when it was
    trained with early stopping (the rest are kept in its booster, but never used)."""
    booster = est.get_booster()
    best = booster.attr("best_iteration")
    if best is None:
        return booster
    booster = booster[: int(best) + 1]
    booster.set_attr(best_iteration=None, best_score=None)  # the added rounds are all served
    return booster


PASSES: dict[str, Pass] = {"partial_fit": _partial_fit_pass, "hgb": _hgb_pass, "lightgbm": _lightgbm_pass,
                           "xgboost": _xgboost_pass}


def _before_hgb(est: Any, training: TrainingConfig) -> None:
    """Prepares a copied `HistGradientBoosting*` for its fine-tune passes."""
    # Added trees start from the champion's confident scores, where hessians are tiny; without
    # L2 their Newton steps overshoot (measured: a fine-tune that lost 8 points instead of
    # gaining 12 on a moved SEA boundary).
    # No validation split inside `fit` (the fine-tune stops early on rows of its own): the added
    # trees' starting scores are computed for exactly the rows it is given (`from_own_scores`).
    est.set_params(warm_start=True, early_stopping=False,
                   l2_regularization=max(est.l2_regularization, training.fine_tune_l2))


@contextmanager
def from_own_scores(clf: Any, X: Any) -> Iterator[None]:
    """While a fitted `HistGradientBoosting*` warm-starts on the rows `X`, the added trees start from
    its own scores on them. scikit-learn's `warm_start` is meant for the same data: `fit` refits the
    bins on the new rows and scores the existing trees by bin index against them, so on rows that
    moved the starting scores were not the champion's (measured: 85% of 4,000 rows, the class on half
    of them). Here the scores come from the raw values, as at prediction time, and the new bins still
    let the added trees split where the rows moved to (freezing the old bins instead lost 9-12
    points on the `regions` benchmark, whose rows move beyond the old range)."""
    own = clf._raw_predict(X)  # outside `fit`: raw thresholds

    def raw_predict(binned: np.ndarray, n_threads: int | None = None) -> np.ndarray:
        if len(binned) != len(own):  # only the training rows are scored (no validation split)
            raise RuntimeError("a warm start scored rows other than its training rows")
        return own.copy(order="F")

    clf._raw_predict = raw_predict  # shadows the method on our copy, for this fit only (never saved)
    try:
        yield
    finally:
        del clf.__dict__["_raw_predict"]


# -- Helpers ------------------------------------------------------------------------------------------

def _instance_of(obj: Any, module: str, name: str) -> bool:
    """`obj` is an instance of `module.name`, checked only if that module is imported already (an
    object of its classes cannot exist otherwise)."""
    cls = getattr(sys.modules.get(module), name, None)
    return isinstance(cls, type) and isinstance(obj, cls)


def _is_pipeline(model: Any) -> bool:
    return _instance_of(model, "sklearn.pipeline", "Pipeline")


def _frozen_steps(model: Any) -> list[tuple[str, Any]]:
    """The fitted steps before the last estimator of a (possibly nested) Pipeline."""
    if not _is_pipeline(model) or not model.steps:
        return []
    *before, (name, inner) = model.steps
    return [*before, *((f"{name}/{step}", s) for step, s in _frozen_steps(inner))]


def _pipeline(steps: list[tuple[str, Any]]) -> Any:
    from sklearn.pipeline import Pipeline

    return Pipeline(steps)


def _with_last_step(model: Any, est: Any) -> Any:
    """`model` with `est` in place of its last estimator (in place for a Pipeline)."""
    if not _is_pipeline(model) or not model.steps:
        return est
    name, inner = model.steps[-1]
    model.steps[-1] = (name, _with_last_step(inner, est))
    return model


def _take(X: Any, rows: np.ndarray) -> Any:
    """The rows of X at these positions (a frame, an array or a sparse matrix)."""
    return X.iloc[rows] if hasattr(X, "iloc") else X[rows]


def _check_labels(est: Any, y: np.ndarray) -> None:
    """Raises ValueError when a classifier is asked to learn a label it never learnt."""
    classes = getattr(est, "classes_", None)
    if classes is None:
        return
    unknown = sorted(set(np.unique(y).tolist()) - set(np.asarray(classes).tolist()), key=str)
    if unknown:
        raise ValueError(f"a fine-tune cannot learn a new class: the rows hold {bounded(unknown)}, which "
                         f"the model never learnt (it knows {bounded(list(classes))}); retrain instead")


def _with_every_class(est: Any, X: Any, y: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray | None]:
    """The rows, plus one row of weight 0 for each class of a booster-based classifier that they lack
    (a booster refitted on fewer classes would renumber them); weights None when none is added."""
    classes = getattr(est, "classes_", None)
    if classes is None or callable(getattr(est, "partial_fit", None)) or not len(y):
        return X, y, None  # partial_fit is told the classes
    missing = [c for c in classes if not np.any(y == c)]
    if not missing:
        return X, y, None
    first = [0] * len(missing)
    if hasattr(X, "iloc"):
        import pandas as pd

        padded = pd.concat([X, X.iloc[first]])
    elif hasattr(X, "tocsr"):
        import scipy.sparse

        padded = scipy.sparse.vstack([X, X[first]]).tocsr()
    else:
        padded = np.concatenate([X, X[first]])
    weights = np.r_[np.ones(len(y)), np.zeros(len(missing))]
    return padded, np.concatenate([y, np.asarray(missing, dtype=y.dtype)]), weights
