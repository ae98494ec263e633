"""A model's metric on a batch whose labels have not arrived yet (performance estimation, NannyML-style).

- Classifiers (`ConfidenceEstimator`, confidence-based): the model's class probabilities are calibrated
  on held-out labelled rows, then labels are drawn from the calibrated probabilities on the batch and
  the metric is scored against them; any classification `Metric` works this way.
- Regressors (`ErrorModelEstimator`, direct loss estimation): a small model learns the champion's
  error from the features and its prediction; MAE and RMSE only.

Both see a change of the features (covariate shift) and neither sees a change of the relation between
features and labels (concept change): the estimate assumes P(y | x) is the one of the held-out rows.
Importing this module is cheap (scikit-learn is imported when an estimator is fitted).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from perennial.core.metrics import Metric

# Held-out rows from which isotonic calibration is considered (its steps need rows; a sigmoid's two
# parameters do not, but cannot fix a miscalibration that is not sigmoid-shaped).
ISOTONIC_ROWS = 200
MIN_HOLDOUT_ROWS = 30
# Calibrations refitted on bootstrap resamples of the held-out rows: their spread is the calibration's
# own uncertainty, added to the interval.
CALIBRATION_BOOTSTRAPS = 20
# A bootstrap of the calibration understates its variance (isotonic steps most): in simulations with
# covariate shift the draws' 95% range held the realised accuracy 87-90% of the time; widened about the
# estimate by this, 93-95% (accuracy, F1, ROC AUC; 3,000 held-out rows).
INTERVAL_WIDENING = 1.2
# The error model is meant to be small: few, shallow trees, leaves of many rows.
ERROR_MODEL = {"max_iter": 60, "learning_rate": 0.1, "max_leaf_nodes": 8, "min_samples_leaf": 40}
ERROR_MODEL_BOOTSTRAPS = 10
REGRESSION_ERRORS = {"mae": 1, "rmse": 2}  # the power of the error each metric averages
_Z95 = 1.959964


class EstimationError(ValueError):
    """An estimate that cannot be made (the message names what is missing)."""


@dataclass(frozen=True)
class Estimate:
    """A metric estimated on a batch without its labels, with a 95% interval."""

    metric: str
    value: float
    low: float
    high: float
    rows: int
    method: str


# -- Classifiers --------------------------------------------------------------------------------------

Column = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class _Calibration:
    """Calibrated probabilities from raw ones (columns = the metric's classes): binary, one calibrated
    column (the second class) and its complement; multiclass, one per class, renormalised."""

    columns: tuple[Column, ...]

    def apply(self, raw: np.ndarray) -> np.ndarray:
        if len(self.columns) == 1:
            p = np.clip(self.columns[0](raw[:, 1]), 0.0, 1.0)
            return np.column_stack([1 - p, p])
        calibrated = np.column_stack([np.clip(c(raw[:, i]), 0.0, 1.0) for i, c in enumerate(self.columns)])
        sums = calibrated.sum(axis=1, keepdims=True)
        # A row every calibrator puts at 0 (scores outside anything held out) keeps its raw probabilities.
        return np.where(sums > 0, calibrated / np.where(sums > 0, sums, 1.0), raw)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class _Constant:
    share: float

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return np.full(len(scores), self.share)


@dataclass(frozen=True)
class _Sigmoid:
    """Platt's scaling: a logistic regression on the logit of the score."""

    fitted: Any

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return self.fitted.predict_proba(_logit(scores)[:, None])[:, 1]


def _column_calibrator(scores: np.ndarray, hits: np.ndarray, method: str) -> Column:
    """Probability of a class from the model's score for it, by isotonic regression or Platt's sigmoid."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    if hits.min() == hits.max():  # the class is always or never the label on these rows
        return _Constant(float(hits[0]))
    if method == "isotonic":
        return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, hits).predict
    return _Sigmoid(LogisticRegression(C=1e4).fit(_logit(scores)[:, None], hits))


def _calibration(raw: np.ndarray, y: np.ndarray, classes: tuple[str, ...], method: str) -> _Calibration:
    indices = [1] if len(classes) == 2 else range(len(classes))
    return _Calibration(tuple(_column_calibrator(raw[:, i], (y == classes[i]).astype(float), method)
                              for i in indices))


def _method(raw: np.ndarray, y: np.ndarray, classes: tuple[str, ...], seed: int) -> str:
    """Platt's sigmoid unless isotonic calibration scores a lower Brier score in 5-fold cross-validation
    on the held-out rows: isotonic fixes any monotone miscalibration, but its steps fit the labels' noise
    (too confident: accuracy estimated ~0.6 points high with 1,000 rows) where a sigmoid was enough."""
    from sklearn.model_selection import KFold

    if len(y) < ISOTONIC_ROWS:
        return "sigmoid"
    truth = (y[:, None] == np.array(classes)[None, :]).astype(float)
    brier = {"sigmoid": 0.0, "isotonic": 0.0}
    for fit, test in KFold(5, shuffle=True, random_state=seed).split(raw):
        for method in brier:
            calibrated = _calibration(raw[fit], y[fit], classes, method).apply(raw[test])
            brier[method] += float(((calibrated - truth[test]) ** 2).sum())
    return min(brier, key=lambda m: (brier[m], m != "sigmoid"))


def _raw_proba(model: Any, metric: Metric, X: pd.DataFrame) -> np.ndarray:
    """The model's probability of each of the metric's classes, whatever the metric itself scores."""
    return replace(metric, output="proba").output_of(model, X)


def _draw_labels(proba: np.ndarray, classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One label per row drawn from its probabilities."""
    index = (rng.random(len(proba))[:, None] > proba.cumsum(axis=1)).sum(axis=1)
    return classes[np.minimum(index, len(classes) - 1)]


def _check_classifier(model: Any, y: np.ndarray, metric: Metric) -> None:
    name = metric.name
    if metric.task != "classification":
        raise EstimationError(f"no estimate for {name}: confidence-based estimation is for classification "
                              "metrics")
    if len(metric.classes) < 2:
        raise EstimationError(f"no estimate for {name}: the metric is bound to no target classes "
                              "(metric_named with the classes)")
    if not hasattr(model, "predict_proba"):
        raise EstimationError(f"no estimate for {name}: {type(model).__name__} has no predict_proba to "
                              "calibrate")
    if len(y) < MIN_HOLDOUT_ROWS:
        raise EstimationError(f"no estimate for {name}: {len(y)} held-out rows, calibration needs at least "
                              f"{MIN_HOLDOUT_ROWS}")
    present = sorted(set(y.tolist()))
    if len(present) < 2:
        raise EstimationError(f"no estimate for {name}: the held-out labels hold one class "
                              f"({', '.join(present) or 'none'}), calibration needs at least 2")


@dataclass(frozen=True)
class ConfidenceEstimator:
    """Classifiers: calibrate the model's class probabilities on held-out labelled rows (never training
    rows), then estimate any classification Metric on unlabelled rows by drawing labels from the
    calibrated probabilities (Monte Carlo over `draws`): the estimate is the mean of the metric over the
    draws of the label vector, the interval the 2.5-97.5 percentiles of the metric over draws made with
    calibrations refitted on bootstrap resamples of the held-out rows (so it holds both the batch's own
    sampling noise and the calibration's uncertainty)."""

    model: Any
    metric: Metric
    method: str  # of calibration: "isotonic" or "sigmoid"
    calibration: _Calibration
    bootstraps: tuple[_Calibration, ...]

    @classmethod
    def fit(cls, model: Any, X_holdout: pd.DataFrame, y_holdout: np.ndarray, metric: Metric,
            seed: int = 0) -> ConfidenceEstimator:
        """Calibrate `model` on held-out rows it was not trained on, for estimating `metric`."""
        y = np.asarray(y_holdout).astype(str)
        _check_classifier(model, y, metric)
        raw = _raw_proba(model, metric, X_holdout)
        method = _method(raw, y, metric.classes, seed)
        resamples = np.random.default_rng(seed).integers(0, len(y), size=(CALIBRATION_BOOTSTRAPS, len(y)))
        bootstraps = tuple(_calibration(raw[i], y[i], metric.classes, method) for i in resamples)
        return cls(model, metric, method, _calibration(raw, y, metric.classes, method), bootstraps)

    def calibrated_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of each of `metric.classes` (rows sum to 1)."""
        return self.calibration.apply(_raw_proba(self.model, self.metric, X))

    def estimate(self, X: pd.DataFrame, seed: int = 0, draws: int = 200) -> Estimate:
        """The metric on the rows `X`, whose labels are not known."""
        if len(X) == 0:
            return Estimate(self.metric.name, math.nan, math.nan, math.nan, 0, "confidence-based")
        raw = _raw_proba(self.model, self.metric, X)
        out = self.metric.output_of(self.model, X)
        rng = np.random.default_rng(seed)
        classes = np.array(self.metric.classes)

        def drawn(proba: np.ndarray) -> float:
            return self.metric.value(_draw_labels(proba, classes, rng), out)

        calibrated = self.calibration.apply(raw)
        values = np.array([drawn(calibrated) for _ in range(draws)])
        resampled = [c.apply(raw) for c in self.bootstraps]
        spread = np.array([drawn(resampled[d % len(resampled)]) for d in range(draws)])
        return _estimate(self.metric, values, spread, len(X))


def _estimate(metric: Metric, values: np.ndarray, spread: np.ndarray, rows: int) -> Estimate:
    """The mean of `values`, within the 95% range of `spread` widened about it (`INTERVAL_WIDENING`). A
    draw whose metric is undefined (ROC AUC on labels of one class) is left out."""
    if np.isnan(values).all():
        return Estimate(metric.name, math.nan, math.nan, math.nan, rows, "confidence-based")
    value = float(np.nanmean(values))
    low, high = (float(v) for v in np.nanpercentile(spread, [2.5, 97.5]))
    low = max(value - INTERVAL_WIDENING * max(value - low, 0.0), 0.0)
    high = value + INTERVAL_WIDENING * max(high - value, 0.0)
    if metric.kind == "share":
        high = min(high, 1.0)
    return Estimate(metric.name, value, low, high, rows, "confidence-based")


# -- Regressors ---------------------------------------------------------------------------------------

def _error_features(X: pd.DataFrame, columns: list[str], prediction: np.ndarray) -> np.ndarray:
    """The numeric features (a column missing from the batch reads as missing) and the prediction."""
    numeric = X.reindex(columns=columns).apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    return np.column_stack([numeric, prediction])


def _check_regressor(y: np.ndarray, metric: Metric) -> None:
    name = metric.name
    if name == "r2":
        raise EstimationError("no estimate for r2: it needs the variance of the batch's target, which "
                              "unlabelled rows do not give (estimable: mae, rmse)")
    if name not in REGRESSION_ERRORS:
        raise EstimationError(f"no estimate for {name}: direct loss estimation knows mae and rmse only")
    if len(y) < MIN_HOLDOUT_ROWS:
        raise EstimationError(f"no estimate for {name}: {len(y)} held-out rows, the error model needs at "
                              f"least {MIN_HOLDOUT_ROWS}")


def _error_model(features: np.ndarray, errors: np.ndarray, seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(**ERROR_MODEL, random_state=seed).fit(features, errors)


@dataclass(frozen=True)
class ErrorModelEstimator:
    """Regressors (direct loss estimation): a small HistGradientBoostingRegressor learns the champion's
    absolute error (MAE) or squared error (RMSE) on held-out rows from the numeric features plus the
    champion's prediction; the estimate on a batch is the mean (MAE) or root of the mean (RMSE) of its
    predictions. The interval adds two spreads: of the batch mean over error models refitted on
    bootstrap resamples of the held-out rows, and of the batch's own errors about the error model (the
    held-out rows' spread relative to their mean error, scaled to the batch's: errors grow with their
    scale). Trees do not extrapolate: where the batch leaves the held-out rows' range, the error there
    is taken as at the range's edge."""

    model: Any
    metric: Metric
    error_model: Any
    bootstraps: tuple[Any, ...]
    columns: list[str]
    relative_spread: float

    @classmethod
    def fit(cls, model: Any, X_holdout: pd.DataFrame, y_holdout: np.ndarray, metric: Metric,
            seed: int = 0) -> ErrorModelEstimator:
        """Learn `model`'s error on held-out rows it was not trained on, for estimating `metric`."""
        y = np.asarray(y_holdout, dtype=float)
        _check_regressor(y, metric)
        prediction = metric.output_of(model, X_holdout)
        errors = np.abs(y - prediction) ** REGRESSION_ERRORS[metric.name]
        columns = list(X_holdout.select_dtypes(include=["number", "bool"]).columns)
        features = _error_features(X_holdout, columns, prediction)
        error_model = _error_model(features, errors, seed)
        resamples = np.random.default_rng(seed).integers(0, len(y), size=(ERROR_MODEL_BOOTSTRAPS, len(y)))
        bootstraps = tuple(_error_model(features[i], errors[i], seed) for i in resamples)
        spread = float(np.std(errors - error_model.predict(features)) / max(errors.mean(), 1e-12))
        return cls(model, metric, error_model, bootstraps, columns, spread)

    def estimate(self, X: pd.DataFrame, seed: int = 0) -> Estimate:
        """The metric on the rows `X`, whose target is not known (`seed`: for symmetry, no draws here)."""
        if len(X) == 0:
            return Estimate(self.metric.name, math.nan, math.nan, math.nan, 0, "error model")
        features = _error_features(X, self.columns, self.metric.output_of(self.model, X))
        mean = max(float(np.mean(self.error_model.predict(features))), 0.0)
        refitted = np.std([np.mean(m.predict(features)) for m in self.bootstraps], ddof=1)
        half = _Z95 * math.hypot(refitted, self.relative_spread * mean / math.sqrt(len(X)))
        low, high = max(mean - half, 0.0), mean + half
        if self.metric.name == "rmse":
            mean, low, high = math.sqrt(mean), math.sqrt(low), math.sqrt(high)
        return Estimate(self.metric.name, mean, low, high, len(X), "error model")


def estimator_for(model: Any, X_holdout: pd.DataFrame, y_holdout: np.ndarray, metric: Metric,
                  seed: int = 0) -> ConfidenceEstimator | ErrorModelEstimator:
    """The estimator of `metric` for `model`, fitted on held-out labelled rows."""
    kind = ConfidenceEstimator if metric.task == "classification" else ErrorModelEstimator
    return kind.fit(model, X_holdout, y_holdout, metric, seed=seed)


def estimate_on(model: Any, held_out: pd.DataFrame, rows: pd.DataFrame, schema: Any, metric: Metric,
                seed: int = 0) -> Estimate:
    """`model`'s `metric` on `rows` (no labels), from an estimator fitted on `held_out` labelled rows
    of the same schema that the model was not trained on."""
    from perennial.core.schema import features_frame, target_values

    y = target_values(held_out, schema).to_numpy()
    estimator = estimator_for(model, features_frame(held_out, schema), y, metric, seed=seed)
    return estimator.estimate(features_frame(rows, schema), seed=seed)
