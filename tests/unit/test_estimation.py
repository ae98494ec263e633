"""Estimating a model's metric on a batch before its labels arrive: close to the metric the labels later
give when the features shift, blind when the relation between features and labels changes, and refusing
what it cannot estimate.

The tolerances come from simulations of these same worlds over more seeds (30-60), not from the three
seeds run here; the figures are quoted next to each test.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.svm import LinearSVC

from perennial.core.estimation import (
    ConfidenceEstimator,
    ErrorModelEstimator,
    EstimationError,
    estimator_for,
)
from perennial.core.metrics import metric_named

COLUMNS = ["a", "b", "c", "d"]
WEIGHTS = np.array([1.5, -1.0, 0.8, 0.0])
# Held-out rows: with 1,000 the accuracy estimate's error has a standard deviation of ~1.3 points (the
# held-out labels' own binomial noise, ~1.3, bounds any calibration fitted on them) and stays within 2
# points only ~83% of the time; with 3,000, ~0.85 points and ~97%.
HOLDOUT_ROWS = 3000
BATCH_ROWS = 4000
# Covariate shift: two features move by one standard deviation, away from the decision boundary (the
# accuracy rises ~8 points, so the held-out accuracy is no estimate); P(y | x) stays.
SHIFT = (1.0, 0.0, 1.0, 0.0)
SEEDS = (0, 1, 2)
BINARY = ("0", "1")
ACCURACY = metric_named("accuracy", "classification", BINARY)


def labelled(rows: int, seed: int, shift: tuple[float, ...] = (0.0,) * 4,
             weights: np.ndarray = WEIGHTS) -> tuple[pd.DataFrame, np.ndarray]:
    """Features ~ N(shift, 1) and labels "0"/"1" ~ Bernoulli(sigmoid(w·x - 0.3))."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, len(COLUMNS))) + np.array(shift)
    p = 1 / (1 + np.exp(-(X @ weights - 0.3)))
    return pd.DataFrame(X, columns=COLUMNS), np.where(rng.random(rows) < p, "1", "0")


@cache
def world(seed: int) -> tuple[LogisticRegression, pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray]:
    """A well-specified model, its held-out rows and a covariate-shifted batch with its later labels."""
    model = LogisticRegression().fit(*labelled(2000, 100 + seed))
    return (model, *labelled(HOLDOUT_ROWS, 200 + seed), *labelled(BATCH_ROWS, 300 + seed, SHIFT))


class Sharpened:
    """A classifier too sure of itself: the probabilities of a fitted one, cubed and renormalised (same
    predictions). Its logits are tripled, a sigmoid-shaped miscalibration that Platt's scaling undoes."""

    def __init__(self, model: LogisticRegression) -> None:
        self.model = model
        self.classes_ = model.classes_

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.model.predict(X)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = self.model.predict_proba(X) ** 3
        return p / p.sum(axis=1, keepdims=True)


# Accuracy, 60 seeds: error mean 0.0, sd 0.85 points, 97% within 2 points, max 2.6; the interval held
# the realised value 97% of the time. Seeds 0-2: 85.9 vs 84.9, 83.6 vs 84.5, 85.2 vs 84.6.
@pytest.mark.parametrize("seed", SEEDS)
def test_accuracy_under_covariate_shift_is_estimated_within_two_points(seed: int) -> None:
    model, X_holdout, y_holdout, X_batch, y_batch = world(seed)
    estimate = estimator_for(model, X_holdout, y_holdout, ACCURACY, seed=seed).estimate(X_batch, seed=seed)
    realised = ACCURACY.score(model, X_batch, y_batch)
    assert realised - ACCURACY.score(model, X_holdout, y_holdout) > 0.05
    assert abs(estimate.value - realised) <= 0.02
    assert estimate.low <= realised <= estimate.high
    assert (estimate.metric, estimate.rows, estimate.method) == ("accuracy", BATCH_ROWS, "confidence-based")


# F1 of "1", 60 seeds: error mean 0.0, sd 0.6 points, max 1.75 (all within 2), the interval held the
# realised value 97% of the time. Seeds 0-2: +0.7, -0.6, +0.4 points. (ROC AUC is estimated as well, but
# 200 draws of roc_auc_score take ~1 s per estimate.)
@pytest.mark.parametrize("seed", SEEDS)
def test_f1_under_covariate_shift_is_estimated_within_two_points(seed: int) -> None:
    model, X_holdout, y_holdout, X_batch, y_batch = world(seed)
    f1 = metric_named("f1", "classification", BINARY, "1")
    estimator = ConfidenceEstimator.fit(model, X_holdout, y_holdout, f1, seed=seed)
    assert abs(estimator.estimate(X_batch, seed=seed).value - f1.score(model, X_batch, y_batch)) <= 0.02


# Cubed probabilities, 20 seeds: calibrated error sd 0.9 points, 95% within 2 points, max 2.15 (all
# within 3); the raw confidence is 10 points too high on average.
@pytest.mark.parametrize("seed", SEEDS)
def test_calibration_corrects_an_overconfident_model(seed: int) -> None:
    model, X_holdout, y_holdout, X_batch, y_batch = world(seed)
    sharp = Sharpened(model)
    estimator = ConfidenceEstimator.fit(sharp, X_holdout, y_holdout, ACCURACY, seed=seed)
    realised = ACCURACY.score(sharp, X_batch, y_batch)
    raw_confidence = float(sharp.predict_proba(X_batch).max(axis=1).mean())
    estimated = estimator.estimate(X_batch, seed=seed).value
    assert abs(estimated - realised) <= 0.03
    assert raw_confidence - realised > 0.05
    assert abs(raw_confidence - realised) > abs(estimated - realised) + 0.05
    np.testing.assert_allclose(estimator.calibrated_proba(X_batch).sum(axis=1), 1.0)


def test_a_change_of_concept_is_not_seen_by_the_estimate() -> None:
    """The limitation a drop alarm must not rely on the estimate for: same features, the relation
    reversed; the model's accuracy collapses, the estimate stays where it was on the held-out rows."""
    model, X_holdout, y_holdout, _, _ = world(0)
    X_batch, y_batch = labelled(BATCH_ROWS, 400, weights=-WEIGHTS)
    estimate = ConfidenceEstimator.fit(model, X_holdout, y_holdout, ACCURACY).estimate(X_batch)
    before = ACCURACY.score(model, X_holdout, y_holdout)
    realised = ACCURACY.score(model, X_batch, y_batch)
    assert before - realised > 0.20
    assert abs(estimate.value - before) <= 0.02
    assert not estimate.low <= realised <= estimate.high


def regression_rows(rows: int, seed: int, shift: tuple[float, ...] = (0.0,) * 4) -> tuple[pd.DataFrame,
                                                                                           np.ndarray]:
    """A linear target whose noise grows with |a|: shifting `a` makes the model's errors larger."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, len(COLUMNS))) + np.array(shift)
    noise = rng.normal(size=rows) * (0.5 + np.abs(X[:, 0]))
    return pd.DataFrame(X, columns=COLUMNS), 3 + X @ np.array([2.0, -1.0, 0.5, 0.0]) + noise


# MAE, 30 seeds: relative error mean -0.6%, sd 4.7%, 93% within 10%, max 11.1%: hence 12%; the interval
# held the realised value 83% of the time (trees do not extrapolate the noise growing with |a|). Seeds
# 0-2: -4.6%, -2.5%, -0.1%. The held-out MAE is ~22% below the batch's.
@pytest.mark.parametrize("seed", SEEDS)
def test_mae_under_covariate_shift_is_estimated_from_the_error_model(seed: int) -> None:
    model = LinearRegression().fit(*regression_rows(2000, 100 + seed))
    X_holdout, y_holdout = regression_rows(HOLDOUT_ROWS, 200 + seed)
    X_batch, y_batch = regression_rows(BATCH_ROWS, 300 + seed, SHIFT)
    mae = metric_named("mae", "regression")
    estimator = estimator_for(model, X_holdout, y_holdout, mae, seed=seed)
    assert isinstance(estimator, ErrorModelEstimator)
    estimate = estimator.estimate(X_batch)
    realised = mae.score(model, X_batch, y_batch)
    held_out = mae.score(model, X_holdout, y_holdout)
    assert abs(estimate.value / realised - 1) <= 0.12
    assert abs(estimate.value - realised) < abs(held_out - realised) / 2


def test_r2_is_refused_with_the_reason() -> None:
    model = LinearRegression().fit(*regression_rows(200, 1))
    with pytest.raises(EstimationError, match=r"^no estimate for r2: it needs the variance of the batch's"):
        ErrorModelEstimator.fit(model, *regression_rows(200, 2), metric_named("r2", "regression"))


def test_held_out_rows_of_one_class_are_refused() -> None:
    model, X_holdout, y_holdout, _, _ = world(0)
    ones = y_holdout == "1"
    with pytest.raises(EstimationError) as refused:
        estimator_for(model, X_holdout[ones], y_holdout[ones], ACCURACY)
    assert str(refused.value) == ("no estimate for accuracy: the held-out labels hold one class (1), "
                                  "calibration needs at least 2")


def test_a_classifier_without_probabilities_is_refused() -> None:
    X, y = labelled(500, 5)
    model = LinearSVC().fit(X, y)
    with pytest.raises(EstimationError) as refused:
        estimator_for(model, X, y, metric_named("roc_auc", "classification", BINARY))
    assert str(refused.value) == "no estimate for roc_auc: LinearSVC has no predict_proba to calibrate"


def test_too_few_held_out_rows_are_refused() -> None:
    model, X_holdout, y_holdout, _, _ = world(0)
    with pytest.raises(EstimationError) as refused:
        estimator_for(model, X_holdout[:20], y_holdout[:20], ACCURACY)
    assert str(refused.value) == "no estimate for accuracy: 20 held-out rows, calibration needs at least 30"
