"""The metric a model is judged by (`policy.metric`): its values as scikit-learn computes them, the
direction of every comparison, its noise bands, and the decisions and promotions they lead to."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as sk
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.preprocessing import label_binarize

from perennial.core.config import PolicyConfig
from perennial.core.metrics import METRICS, MetricError, metric_named
from perennial.core.policy import (
    choose,
    concept_returned,
    decide,
    promotion_verdict,
    reference_accuracy,
    without_fine_tune,
)
from perennial.core.types import (
    Action,
    CandidateResult,
    Champion,
    CycleRecord,
    Decision,
    DriftResult,
    Evaluation,
    Reference,
    Trigger,
    ValidationResult,
)

POLICY = PolicyConfig(drift_share_moderate=0.2, drift_share_severe=0.5,
                      drop_moderate=0.05, drop_severe=0.15, max_fine_tunes=2)
VALID = ValidationResult(success=True, failures=[], expectations=10)
CLASSIFICATION = ("accuracy", "balanced_accuracy", "f1", "roc_auc", "average_precision", "log_loss")


def bound(name: str) -> object:
    """`name` bound to a binary target whose positive class is "1", or to a regression target."""
    if METRICS[name].task == "regression":
        return metric_named(name, "regression")
    return metric_named(name, "classification", ("0", "1"))


# -- Fitted models on random rows --------------------------------------------------------------------

def labelled(labels: tuple[str, ...], rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of overlapping classes: a model is neither perfect nor at chance on them."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, len(labels), rows)
    centres = np.random.default_rng(99).normal(scale=0.5, size=(len(labels), 4))
    X = rng.normal(size=(rows, 4)) + centres[classes]
    return X, np.array(labels)[classes]


def fitted_classifier(labels: tuple[str, ...], test_rows: int = 500) -> tuple[object, np.ndarray, np.ndarray]:
    X, y = labelled(labels, 600, seed=1)
    Xt, yt = labelled(labels, test_rows, seed=2)
    return LogisticRegression(max_iter=1000).fit(X, y), Xt, yt


def fitted_regressor(test_rows: int = 500) -> tuple[object, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(600 + test_rows, 4))
    y = 50 + X @ np.array([3.0, -2.0, 1.0, 0.5]) + rng.normal(scale=2.0, size=len(X))
    return LinearRegression().fit(X[:600], y[:600]), X[600:], y[600:]


BINARY = fitted_classifier(("fraud", "legit"))
# A target of four classes whose model learnt three: "d" arrived after it was trained.
MULTICLASS = fitted_classifier(("a", "b", "c"))
REGRESSION = fitted_regressor(1600)
CLASSIFIED = fitted_classifier(("fraud", "legit"), test_rows=1600)


def _binary_reference(name: str, model, X, y) -> float:
    p = model.predict_proba(X)[:, list(model.classes_).index("fraud")]
    return {"accuracy": lambda: sk.accuracy_score(y, model.predict(X)),
            "balanced_accuracy": lambda: sk.balanced_accuracy_score(y, model.predict(X)),
            "f1": lambda: sk.f1_score(y, model.predict(X), pos_label="fraud"),
            "roc_auc": lambda: sk.roc_auc_score(y == "fraud", p),
            "average_precision": lambda: sk.average_precision_score(y == "fraud", p),
            "log_loss": lambda: sk.log_loss(y, model.predict_proba(X), labels=model.classes_)}[name]()


def _multiclass_reference(name: str, model, X, y) -> float:
    proba = model.predict_proba(X)
    return {"accuracy": lambda: sk.accuracy_score(y, model.predict(X)),
            "balanced_accuracy": lambda: sk.balanced_accuracy_score(y, model.predict(X)),
            "f1": lambda: sk.f1_score(y, model.predict(X), average="macro"),
            "roc_auc": lambda: sk.roc_auc_score(y, proba, multi_class="ovr", average="macro"),
            "average_precision": lambda: sk.average_precision_score(
                label_binarize(y, classes=model.classes_), proba, average="macro"),
            "log_loss": lambda: sk.log_loss(y, proba, labels=model.classes_)}[name]()


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_binary_values_agree_with_scikit_learn_for_the_configured_positive_class(name):
    model, X, y = BINARY
    # The positive class is the first of the two, not the one a default would pick.
    m = metric_named(name, "classification", ("fraud", "legit"), "fraud")
    assert m.value(y, m.output_of(model, X)) == pytest.approx(_binary_reference(name, model, X, y), abs=1e-9)
    assert 0.02 < _binary_reference(name, model, X, y) < 0.98 or name == "log_loss"  # not a degenerate case


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_multiclass_values_agree_with_scikit_learn_with_a_class_the_model_never_learnt(name):
    model, X, y = MULTICLASS
    m = metric_named(name, "classification", ("b", "d", "a", "c"))  # not the model's order either
    assert m.value(y, m.output_of(model, X)) == pytest.approx(_multiclass_reference(name, model, X, y),
                                                              abs=1e-9)


def test_probabilities_are_aligned_to_the_target_classes_and_an_unlearnt_class_gets_zero():
    model, X, _ = MULTICLASS
    out = metric_named("log_loss", "classification", ("b", "d", "a", "c")).output_of(model, X)
    proba = model.predict_proba(X)
    assert out.shape == (len(X), 4)
    assert np.array_equal(out[:, 1], np.zeros(len(X)))
    for column, label in ((0, "b"), (2, "a"), (3, "c")):
        assert np.allclose(out[:, column], proba[:, list(model.classes_).index(label)])
    labels = metric_named("accuracy", "classification", ("b", "d", "a", "c")).output_of(model, X)
    assert labels.dtype.kind == "U" and set(labels) <= {"a", "b", "c"}


@pytest.mark.parametrize(("name", "reference"), [("mae", sk.mean_absolute_error),
                                                 ("rmse", sk.root_mean_squared_error), ("r2", sk.r2_score)])
def test_regression_values_agree_with_scikit_learn(name, reference):
    model, X, y = REGRESSION
    m = metric_named(name, "regression")
    assert m.value(y, m.output_of(model, X)) == pytest.approx(reference(y, model.predict(X)), rel=1e-12)


# -- Direction: utilities are higher for better models, drops positive for worse ones -----------------

def _good_and_worse(name: str) -> tuple[object, np.ndarray, np.ndarray, np.ndarray]:
    """The metric, the truth, and the outputs of one model on clean inputs and on corrupted ones."""
    model, X, y = REGRESSION if METRICS[name].task == "regression" else MULTICLASS
    m = metric_named(name, METRICS[name].task, tuple(model.classes_) if name in CLASSIFICATION else ())
    noisy = X + np.random.default_rng(5).normal(scale=2.0, size=X.shape)
    return m, y, m.output_of(model, X), m.output_of(model, noisy)


@pytest.mark.parametrize("name", list(METRICS))
def test_a_better_model_has_a_higher_utility_and_a_worse_one_is_a_positive_drop(name):
    m, y, good, worse = _good_and_worse(name)
    before, after = m.value(y, good), m.value(y, worse)
    # The raw value moves the metric's way: errors up, shares and R² down.
    assert (after > before) if name in ("log_loss", "mae", "rmse") else (after < before)
    assert m.utility(before) > m.utility(after)
    assert m.drop(before, after) > 0 and m.drop(after, before) < 0
    assert m.better(before, after) and not m.better(after, before)
    assert not m.better(before, before, margin=0.01)


def test_an_error_drop_is_its_relative_rise_and_a_share_drop_its_points():
    mae, accuracy, r2 = bound("mae"), bound("accuracy"), bound("r2")
    assert mae.drop(10.0, 11.0) == pytest.approx(math.log(1.1))
    assert mae.drop(100.0, 110.0) == pytest.approx(mae.drop(10.0, 11.0))  # whatever the target's units
    assert bound("log_loss").drop(0.30, 0.33) == pytest.approx(math.log(1.1))
    assert accuracy.drop(0.90, 0.85) == pytest.approx(0.05)
    assert r2.drop(0.80, 0.75) == pytest.approx(0.05)
    assert mae.drop(None, 11.0) is None and accuracy.drop(0.9, math.nan) is None
    # For people: an error's relative change, a share's points, R² units.
    assert mae.format_gap(mae.drop(10.0, 11.0)) == "10.0%"
    assert mae.format_gap(mae.drop(11.0, 10.0)) == "-9.1%"
    assert mae.format_gap(0.05) == "5.1%"
    assert accuracy.format_gap(0.05) == "5%" and accuracy.format_gap(0.055) == "5.5%"
    assert r2.format_gap(0.05) == "0.050"
    assert accuracy.format(0.835) == "83.5%" and r2.format(0.8) == "0.800"
    assert bound("rmse").format(10.3) == "10.3" and bound("rmse").format(1234.567) == "1235"
    assert mae.format(None) == "-" and mae.format(math.nan) == "-"


def test_a_perfect_error_has_a_finite_utility():
    mae = bound("mae")
    assert math.isfinite(mae.utility(0.0)) and mae.utility(0.0) > mae.utility(1e-6)


# -- Noise bands ---------------------------------------------------------------------------------------

def test_paired_noise_of_accuracy_counts_only_the_rows_where_two_models_disagree():
    y = np.array(["yes"] * 100)
    hits = np.array([True] * 80 + [False] * 20)
    a = np.where(hits, "yes", "no")
    accuracy = bound("accuracy")
    assert accuracy.paired_noise(y, a, a.copy()) == 0.0
    # 10 rows of 100 where they disagree, 5 each way: two standard errors of the mean difference.
    other = hits.copy()
    other[:5], other[80:85] = False, True
    b = np.where(other, "yes", "no")
    expected = 2 * np.std([1] * 5 + [-1] * 5 + [0] * 90, ddof=1) / 10
    assert accuracy.paired_noise(y, a, b) == pytest.approx(expected)
    assert accuracy.paired_noise(y, a, b, standard_errors=3.0) == pytest.approx(1.5 * expected)


def _scored(name: str, rows: int | None = None) -> tuple[object, np.ndarray, np.ndarray]:
    """A metric, the truth and a fitted model's output on the first `rows` test rows."""
    if METRICS[name].task == "regression":
        model, X, y = REGRESSION
        m = metric_named(name, "regression")
    else:
        model, X, y = CLASSIFIED
        m = metric_named(name, "classification", ("fraud", "legit"), "fraud")
    return m, y[:rows], m.output_of(model, X[:rows])


@pytest.mark.parametrize("name", ["roc_auc", "rmse", "mae", "log_loss"])
def test_a_model_against_itself_has_no_paired_noise_and_the_standard_error_shrinks_as_one_over_root_n(name):
    m, y, out = _scored(name)
    assert m.paired_noise(y, out, out.copy()) == 0.0
    small, large = m.standard_error(y[:400], out[:400]), m.standard_error(y, out)
    assert 0 < large < small
    assert 1.6 <= small / large <= 2.5  # 1600 rows against 400: half the error


@pytest.mark.parametrize("name", ["rmse", "mae", "log_loss"])
def test_paired_noise_of_two_similar_models_is_tighter_than_their_errors_on_different_rows(name):
    m, y, out = _scored(name)
    model, X, _ = REGRESSION if METRICS[name].task == "regression" else CLASSIFIED
    nudged = m.output_of(model, X + np.random.default_rng(8).normal(scale=0.1, size=X.shape))
    paired = m.paired_noise(y, out, nudged)
    unpaired = 2 * math.hypot(m.standard_error(y, out), m.standard_error(y, nudged))
    assert 0 < paired < unpaired / 2


def test_the_standard_error_of_mae_matches_a_direct_bootstrap():
    mae, y, out = _scored("mae")
    errors = np.abs(y - out)
    draws = np.random.default_rng(11).integers(0, len(y), size=(2000, len(y)))
    direct = float(np.std(-np.log(errors[draws].mean(axis=1)), ddof=1))
    assert mae.standard_error(y, out) == pytest.approx(direct, rel=0.25)


def test_the_standard_error_of_rmse_matches_a_direct_bootstrap():
    rmse, y, out = _scored("rmse")
    squares = (y - out) ** 2
    draws = np.random.default_rng(12).integers(0, len(y), size=(2000, len(y)))
    direct = float(np.std(-0.5 * np.log(squares[draws].mean(axis=1)), ddof=1))
    assert rmse.standard_error(y, out) == pytest.approx(direct, rel=0.25)


def test_accuracy_drop_noise_is_the_binomial_band_of_two_accuracies_on_different_rows():
    accuracy = bound("accuracy")
    binomial = 2 * math.sqrt(0.97 * 0.03 / 31 + 0.9 * 0.1 / 125)
    # The standard error given is not accuracy's: its band is binomial.
    assert accuracy.drop_noise(0.97, 31, 0.9, 125, now_error=0.5) == pytest.approx(binomial)
    assert accuracy.drop_noise(0.97, 0, 0.9, 125, now_error=0.5) == 0.0  # no rows known: no band


def test_another_metric_drop_noise_adds_the_reference_error_scaled_by_its_rows():
    rmse = bound("rmse")
    # A reference measured on as many rows as the batch is as loose as the batch: sqrt(2) the band.
    assert rmse.drop_noise(10.0, 2000, 11.0, 2000, now_error=0.01) == pytest.approx(2 * math.sqrt(2) * 0.01)
    # A reference measured on many more rows hardly adds to it.
    assert rmse.drop_noise(10.0, 200_000, 11.0, 2000, now_error=0.01) == pytest.approx(0.02, rel=0.01)


# -- Decisions: a drop beyond the noise band, in the metric's own terms ------------------------------

# name, reference, a moderate drop, a severe drop, and how the decision shows them.
CASES = [
    ("accuracy", 0.9, 0.8, 0.7, "accuracy 90% -> 80%", "accuracy 90% -> 70%", "10%", "20%", "5%", "15%"),
    ("average_precision", 0.9, 0.8, 0.7, "average_precision 90% -> 80%", "average_precision 90% -> 70%",
     "10%", "20%", "5%", "15%"),
    ("f1", 0.9, 0.8, 0.7, "f1 90% -> 80%", "f1 90% -> 70%", "10%", "20%", "5%", "15%"),
    ("log_loss", 0.3, 0.33, 0.36, "log_loss 0.3 -> 0.33", "log_loss 0.3 -> 0.36", "10.0%", "20.0%", "5.1%",
     "16.2%"),
    ("mae", 10.0, 11.0, 12.0, "mae 10 -> 11", "mae 10 -> 12", "10.0%", "20.0%", "5.1%", "16.2%"),
    ("rmse", 10.0, 11.0, 12.0, "rmse 10 -> 11", "rmse 10 -> 12", "10.0%", "20.0%", "5.1%", "16.2%"),
    ("r2", 0.8, 0.7, 0.6, "r2 0.800 -> 0.700", "r2 0.800 -> 0.600", "0.100", "0.200", "0.050", "0.150"),
]
NAMES = [case[0] for case in CASES]


def measured(name: str, reference: float, now: float, rows: int = 5000, error: float = 0.001,
             share: float = 0.0) -> DriftResult:
    """The champion's value on a batch against the reference, both on `rows` rows, in metric `name`."""
    return DriftResult(features=[], drift_share=share, champion_accuracy=now, reference_accuracy=reference,
                       reference_rows=rows, batch_rows=rows, metric=bound(name), champion_error=error)


def run(result: DriftResult, policy: PolicyConfig = POLICY, fine_tunes: int = 0) -> Decision:
    return decide(VALID, result, fine_tunes, policy, 3)


@pytest.mark.parametrize(("name", "ref", "moderate", "severe", "shown", "shown_severe", "gap", "gap_severe",
                          "at_moderate", "at_severe"), CASES, ids=NAMES)
def test_a_drop_beyond_the_noise_fine_tunes_or_retrains_and_says_so_in_the_metric(
        name, ref, moderate, severe, shown, shown_severe, gap, gap_severe, at_moderate, at_severe):
    decision = run(measured(name, ref, moderate))
    assert decision.action is Action.FINE_TUNE and decision.trigger is Trigger.DRIFT
    assert decision.reason == f"moderate drift: {shown} (drop {gap} >= {at_moderate})"
    decision = run(measured(name, ref, severe))
    assert decision.action is Action.RETRAIN and decision.supersedes and decision.window_batches == 1
    assert decision.reason == (f"concept change: {shown_severe} (drop {gap_severe} >= {at_severe}); "
                               "retraining on this batch unless its history still holds")


@pytest.mark.parametrize(("name", "ref", "moderate", "shown", "gap"),
                         [(c[0], c[1], c[2], c[4], c[6]) for c in CASES], ids=NAMES)
def test_the_same_drop_within_the_noise_band_is_not_acted_on(name, ref, moderate, shown, gap):
    # 30 rows each: accuracy's binomial band is ±18 points; the others' standard error is 0.2.
    decision = run(measured(name, ref, moderate, rows=30, error=0.2))
    assert decision.action is Action.NOOP
    assert decision.reason.startswith(f"stable: 0% of features drifted (< 20%), {shown} (drop {gap} "
                                      "within sampling noise ±")


@pytest.mark.parametrize(("name", "ref", "moderate", "shown"), [(c[0], c[2], c[1], c[4]) for c in CASES],
                         ids=NAMES)
def test_an_improvement_is_never_a_drop(name, ref, moderate, shown):
    # The champion does better on the batch than the reference: an error down, a share up.
    improved = " -> ".join(reversed(shown.split(" ", 1)[1].split(" -> ")))
    decision = run(measured(name, ref, moderate))
    assert decision.action is Action.NOOP
    assert decision.reason == f"stable: 0% of features drifted (< 20%), {name} {improved}"
    assert run(measured(name, ref, moderate, share=0.3)).action is Action.NOOP  # inputs moved, metric held


def test_an_error_three_percent_higher_beyond_the_noise_fine_tunes_as_a_metric_drop():
    # Below drop_moderate (an error ~5% higher) but beyond the noise band: always worth a cheap try.
    decision = run(measured("rmse", 10.0, 10.3, error=0.001))
    assert decision.action is Action.FINE_TUNE
    assert decision.reason == "rmse drop: rmse 10 -> 10.3 (drop 3.0% beyond sampling noise ±0.3%)"
    # The same rise within the band is noise.
    noisy = run(measured("rmse", 10.0, 10.3, error=0.02))
    assert noisy.action is Action.NOOP
    assert "rmse 10 -> 10.3 (drop 3.0% within sampling noise ±5.8%)" in noisy.reason
    # After `max_fine_tunes` fine-tunes it is a retrain on the window.
    assert run(measured("rmse", 10.0, 10.3), fine_tunes=2).action is Action.RETRAIN


def test_an_error_twenty_percent_higher_is_a_concept_change_and_severe_drift_retrains_on_the_window():
    assert run(measured("rmse", 10.0, 12.0)).reason.startswith("concept change: rmse 10 -> 12 (drop 20.0%")
    # 14% higher: short of a concept change (16.2%), beyond drop_moderate with most features drifted.
    decision = run(measured("rmse", 10.0, 11.4, share=0.6))
    assert decision.action is Action.RETRAIN and decision.window_batches == 3 and not decision.supersedes
    assert decision.reason == "severe drift: 60% of features drifted (>= 50%), rmse 10 -> 11.4"


# -- Promotion, reuse and the choice among candidates ---------------------------------------------

def verdict(challenger: float, champion: float | None, name: str, margin: float = 0.0) -> tuple[bool, str]:
    policy = PolicyConfig(**{**POLICY.model_dump(), "promotion_margin": margin})
    evaluation = Evaluation(challenger_accuracy=challenger, champion_accuracy=champion, holdout_rows=500,
                            metric=bound(name))
    return promotion_verdict(evaluation, 3, policy, forgetting_budget=0.05)


def test_a_challenger_with_a_lower_error_is_promoted_and_one_with_a_higher_error_is_not():
    promoted, reason = verdict(9.0, 10.0, "rmse")
    assert promoted
    assert reason.startswith("challenger rmse 9 ")
    assert "champion v3 10 + margin 0.0% on 500 holdout rows" in reason
    promoted, reason = verdict(11.0, 10.0, "rmse")
    assert not promoted
    assert reason.startswith("not promoted: challenger rmse 11 ")
    assert "champion v3 10 + margin 0.0% on 500 holdout rows" in reason
    # The margin of an error is relative: 0.05 asks for an error ~5% lower.
    assert not verdict(9.6, 10.0, "rmse", margin=0.05)[0]
    assert verdict(9.4, 10.0, "rmse", margin=0.05)[0]
    assert "margin 5.1%" in verdict(9.4, 10.0, "rmse", margin=0.05)[1]


def test_the_promotion_reason_of_an_error_metric_states_the_comparison_the_way_the_error_goes():
    assert verdict(9.0, 10.0, "rmse")[1].startswith("challenger rmse 9 <= champion v3 10 + margin")
    assert verdict(11.0, 10.0, "rmse")[1].startswith("not promoted: challenger rmse 11 > champion v3 10")


def test_promotion_by_accuracy_keeps_its_old_rule_challenger_at_least_champion_plus_margin():
    assert verdict(0.91, 0.90, "accuracy") == (
        True, "challenger 91.0% >= champion v3 90.0% + margin 0.0% on 500 holdout rows")
    assert verdict(0.90, 0.90, "accuracy")[0]  # a tie stays in
    assert verdict(0.91, 0.90, "accuracy", margin=0.02) == (
        False, "not promoted: challenger 91.0% < champion v3 90.0% + margin 2.0% on 500 holdout rows")
    assert verdict(0.93, 0.90, "accuracy", margin=0.02)[0]
    assert verdict(0.5, math.nan, "roc_auc")[0]  # a champion that cannot be scored does not hold it back


def test_the_best_candidate_by_an_error_metric_is_the_lowest_error():
    trials = [CandidateResult("fine_tune", 12.0, 0.0, 3000),
              CandidateResult("retrain_window", 9.5, 0.0, 4500),
              CandidateResult("retrain_batch", 10.0, 0.0, 1500)]
    assert choose(trials, 0.05, bound("rmse")) == 1
    assert choose(trials, 0.05, bound("r2")) == 0  # the same numbers as R²: higher is better


def _served(batch: str, version: int, value: float, metric: str, rows: int = 2000) -> CycleRecord:
    return CycleRecord(batch=batch, rows=rows, validation="passed", drift_share=0.0,
                       champion_accuracy_before=value, decision="noop", reason="",
                       champion_version_before=version, champion_version_after=version, metric=metric)


def test_the_reference_is_the_lowest_recent_error_and_values_in_another_metric_do_not_count():
    champion = Champion(version=2, model=None, holdout_accuracy=11.0, reference=None, holdout_rows=500,
                        metric="rmse")
    history = [_served("b1", 1, 10.0, "rmse"), _served("b2", 1, 10.4, "rmse"), _served("b3", 2, 11.0, "rmse"),
               _served("b4", 2, 0.99, "accuracy")]  # before `policy.metric` was rmse
    assert reference_accuracy(history, 6, champion, bound("rmse")) == Reference(10.2, 4000, 1, 2)
    # Judged by accuracy, only the accuracy line counts.
    assert reference_accuracy(history, 6, champion, bound("accuracy")) == Reference(0.99, 2000, 2, 1)


def test_a_former_champion_returns_on_a_lower_error_beyond_the_paired_noise_that_holds_its_holdout():
    rmse = bound("rmse")
    # It scores 9 on the batch (its holdout 9.2), the champion 11; paired noise 0.05 (~5%).
    assert concept_returned(9.0, 9.2, 11.0, 2000, POLICY, rmse, noise=0.05)
    assert not concept_returned(10.8, 9.2, 11.0, 2000, POLICY, rmse, noise=0.05)  # 2% better: noise
    assert not concept_returned(9.0, 7.0, 11.0, 2000, POLICY, rmse, noise=0.05)  # 29% above its own holdout


# -- Naming the metric ----------------------------------------------------------------------------------

def test_a_metric_of_the_other_task_names_the_key_and_the_metrics_of_the_target():
    prefix = r"^batches\.yaml: key 'policy\.metric': mae is a regression metric"
    with pytest.raises(MetricError, match=prefix) as raised:
        metric_named("mae", "classification", ("a", "b", "c"), where="batches.yaml: ")
    assert "(metrics for it: accuracy, balanced_accuracy, f1, roc_auc, average_precision, log_loss)" \
        in str(raised.value)
    with pytest.raises(MetricError, match=r"key 'policy\.metric': .*\(metrics for it: mae, rmse, r2\)"):
        metric_named("accuracy", "regression")


@pytest.mark.parametrize("name", ["f1", "average_precision"])
def test_a_metric_of_the_positive_class_needs_one_on_a_binary_target(name):
    with pytest.raises(MetricError, match=r"key 'policy\.positive_class': .*one of: fraud, legit"):
        metric_named(name, "classification", ("fraud", "legit"))
    assert metric_named(name, "classification", ("fraud", "legit"), "fraud").positive == "fraud"
    assert metric_named(name, "classification", ("0", "1")).positive == "1"
    assert metric_named(name, "classification", ("no", "yes")).positive == "yes"
    # A multiclass target averages over the classes: no positive one to name.
    assert metric_named(name, "classification", ("a", "b", "c")).positive is None


def test_metrics_of_every_class_need_no_positive_class_and_a_configured_one_must_be_a_class():
    for name in ("accuracy", "balanced_accuracy", "roc_auc", "log_loss"):
        assert metric_named(name, "classification", ("fraud", "legit")).name == name
    not_a_class = r"key 'policy\.positive_class': 'Fraud' is not a class of the target \(classes: fraud, "
    with pytest.raises(MetricError, match=not_a_class):
        metric_named("f1", "classification", ("fraud", "legit"), "Fraud")
    assert metric_named(None, "classification", ("a", "b")).name == "accuracy"
    assert metric_named(None, "regression").name == "mae"


def test_without_fine_tune_a_fine_tune_becomes_a_retrain_on_the_window_saying_why():
    fine_tune = run(measured("rmse", 10.0, 11.0))
    retrain = without_fine_tune(fine_tune, "the model cannot learn incrementally", 4)
    assert retrain.action is Action.RETRAIN and retrain.window_batches == 4
    assert retrain.trigger is Trigger.DRIFT
    assert retrain.reason == (f"{fine_tune.reason}; the model cannot learn incrementally: retraining instead")
    assert without_fine_tune(fine_tune, None, 4) is fine_tune  # it can
    concept_change = run(measured("rmse", 10.0, 12.0))
    assert without_fine_tune(concept_change, "the model cannot learn incrementally", 4) is concept_change
    noop = run(measured("rmse", 10.0, 9.0))
    assert without_fine_tune(noop, "the model cannot learn incrementally", 4) is noop
