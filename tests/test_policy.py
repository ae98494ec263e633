"""The policy is pure logic: tested without a Prefect run or MLflow."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perennial.config import PolicyConfig
from perennial.types import Action, CycleRecord, DriftResult, ValidationResult
from tasks.decide import batches_since_adaptation, decide, fine_tunes_since_retrain

POLICY = PolicyConfig(drift_share_moderate=0.2, drift_share_severe=0.5,
                      accuracy_drop_moderate=0.05, accuracy_drop_severe=0.15, max_fine_tunes=2)
VALID = ValidationResult(success=True, failures=[], expectations=10)


def drift(share: float, before: float = 0.9, reference: float = 0.9) -> DriftResult:
    return DriftResult(features=[], drift_share=share, champion_accuracy=before,
                       reference_accuracy=reference)


def run(validation=VALID, result=None, fine_tunes=0, window=3):
    return decide.fn(validation, result, fine_tunes, POLICY, window)


def test_failed_validation_rejects_with_the_failures_as_reason():
    bad = ValidationResult(success=False, failures=["missing column(s) 'age'"], expectations=3)
    decision = run(bad, drift(0.0))
    assert decision.action is Action.REJECT
    assert decision.reason == "validation failed: missing column(s) 'age'"


def test_no_champion_means_a_first_retrain_on_the_window():
    decision = run(result=None)
    assert decision.action is Action.RETRAIN
    assert decision.reason == "no champion yet: training the first model"
    assert decision.window_batches == 3


def test_stable_batch_is_a_noop():
    decision = run(result=drift(0.1, before=0.9))
    assert decision.action is Action.NOOP
    assert decision.reason.startswith("stable: 10% of features drifted (< 20%)")


def test_moderate_drift_share_with_some_accuracy_loss_fine_tunes():
    decision = run(result=drift(0.3, before=0.88))
    assert decision.action is Action.FINE_TUNE
    assert decision.reason == "moderate drift: 30% of features drifted, accuracy 90% -> 88%"


def test_drifted_features_with_accuracy_held_cost_no_training():
    decision = run(result=drift(0.8, before=0.91))
    assert decision.action is Action.NOOP
    assert decision.reason == ("features drifted but accuracy held: 80% of features drifted, "
                               "accuracy 90% -> 91%")


def test_a_drop_within_the_sampling_noise_of_small_batches_is_not_acted_on():
    # 31 holdout rows at 97% against a 125-row batch at 90%: two standard errors are ~8 points.
    noisy = DriftResult(features=[], drift_share=0.0, champion_accuracy=0.9, reference_accuracy=0.97,
                        reference_rows=31, batch_rows=125)
    decision = run(result=noisy)
    assert decision.action is Action.NOOP
    assert "drop 7% within sampling noise ±8.1%" in decision.reason
    large = DriftResult(features=[], drift_share=0.0, champion_accuracy=0.9, reference_accuracy=0.97,
                        reference_rows=3100, batch_rows=12500)
    assert run(result=large).action is Action.FINE_TUNE


def test_without_accuracy_feature_drift_alone_decides():
    unknown = DriftResult(features=[], drift_share=0.6)
    assert run(result=unknown).action is Action.RETRAIN
    assert run(result=DriftResult(features=[], drift_share=0.3)).action is Action.FINE_TUNE


def test_moderate_accuracy_drop_fine_tunes():
    decision = run(result=drift(0.0, before=0.82, reference=0.9))
    assert decision.action is Action.FINE_TUNE
    assert "accuracy 90% -> 82%" in decision.reason


def test_severe_accuracy_drop_retrains_on_the_new_batch_only():
    decision = run(result=drift(0.0, before=0.5, reference=0.9))
    assert decision.action is Action.RETRAIN
    assert decision.reason.startswith("concept change")
    assert decision.window_batches == 1
    assert decision.supersedes  # a new concept starts: fresh replay memory, old windows out of the gate


def test_cooldown_watches_a_moderate_drift_but_not_a_concept_change():
    cooling = PolicyConfig(**{**POLICY.model_dump(), "cooldown_batches": 2})
    moderate, severe = drift(0.0, before=0.82), drift(0.0, before=0.5)
    decision = decide.fn(VALID, moderate, 0, cooling, 3, 1)
    assert decision.action is Action.NOOP
    assert decision.reason == ("cooldown: accuracy 90% -> 82% (drop 8% >= 5%); 1 batch(es) since the last "
                               "adaptation (cooldown 2)")
    assert decide.fn(VALID, moderate, 0, cooling, 3, 2).action is Action.FINE_TUNE
    assert decide.fn(VALID, moderate, 0, cooling, 3, None).action is Action.FINE_TUNE  # never adapted
    assert decide.fn(VALID, severe, 0, cooling, 3, 0).action is Action.RETRAIN


def test_severe_drift_share_with_an_accuracy_drop_retrains_on_the_window():
    decision = run(result=drift(0.6, before=0.84))
    assert decision.action is Action.RETRAIN
    assert decision.reason == "severe drift: 60% of features drifted (>= 50%), accuracy 90% -> 84%"
    assert decision.window_batches == 3


def test_retrain_after_max_fine_tunes():
    decision = run(result=drift(0.3, before=0.85), fine_tunes=2)
    assert decision.action is Action.RETRAIN
    assert "2 fine-tunes since the last retrain (max 2)" in decision.reason


def test_new_labels_force_a_retrain():
    validation = ValidationResult(success=True, failures=[], expectations=5, new_classes=("maybe",))
    decision = run(validation, drift(0.0))
    assert decision.action is Action.RETRAIN
    assert "new label(s) maybe" in decision.reason


def _record(decision: str) -> CycleRecord:
    return CycleRecord(batch="b", rows=1, validation="passed", drift_share=0.0,
                       champion_accuracy_before=None, decision=decision, reason="",
                       champion_version_after=1)


@pytest.mark.parametrize(("history", "expected"), [
    ([], 0),
    (["retrain", "fine_tune", "noop", "fine_tune"], 2),
    (["fine_tune", "reuse", "fine_tune"], 1),
    (["fine_tune", "retrain", "noop"], 0),
    (["fine_tune", "reject", "fine_tune"], 2),
])
def test_fine_tunes_are_counted_since_the_last_retrain(history, expected):
    assert fine_tunes_since_retrain([_record(d) for d in history]) == expected


@pytest.mark.parametrize(("history", "expected"), [
    ([], None),
    (["noop", "noop"], None),
    (["retrain", "noop", "reject", "noop"], 2),
    (["retrain", "noop", "reuse"], 0),
    (["fine_tune", "noop"], 1),
])
def test_batches_are_counted_since_the_last_adaptation(history, expected):
    assert batches_since_adaptation([_record(d) for d in history]) == expected


RANK = {Action.NOOP: 0, Action.FINE_TUNE: 1, Action.RETRAIN: 2}


@given(share=st.floats(0, 1), before=st.floats(0, 1), more=st.floats(0, 1),
       fine_tunes=st.integers(0, 5))
def test_more_drift_or_a_larger_drop_never_asks_for_less_adaptation(share, before, more, fine_tunes):
    mild = run(result=drift(share, before=before), fine_tunes=fine_tunes)
    worse = run(result=drift(min(1.0, share + more), before=max(0.0, before - more)), fine_tunes=fine_tunes)
    assert RANK[worse.action] >= RANK[mild.action]
    assert mild.reason and worse.reason


@given(share=st.floats(0, 1), before=st.floats(0, 1), success=st.booleans())
def test_reject_exactly_when_validation_fails(share, before, success):
    validation = ValidationResult(success=success, failures=[] if success else ["x"], expectations=1)
    decision = run(validation, drift(share, before=before))
    assert (decision.action is Action.REJECT) == (not success)
