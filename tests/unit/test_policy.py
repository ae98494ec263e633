"""The policy is pure logic: tested without a Prefect run or MLflow."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perennial.core.config import PolicyConfig
from perennial.core.policy import (
    HistoryChoice,
    batches_since_adaptation,
    candidate_plan,
    choose,
    choose_by_history,
    decide,
    estimated_costs,
    fine_tunes_since_retrain,
    growth_of,
    last_winner,
    reference_accuracy,
)
from perennial.core.types import (
    Action,
    Candidate,
    CandidateResult,
    Champion,
    CycleRecord,
    Decision,
    DriftResult,
    Growth,
    Reference,
    Trigger,
    ValidationResult,
)

POLICY = PolicyConfig(drift_share_moderate=0.2, drift_share_severe=0.5,
                      drop_moderate=0.05, drop_severe=0.15, max_fine_tunes=2)
VALID = ValidationResult(success=True, failures=[], expectations=10)


def drift(share: float, before: float = 0.9, reference: float = 0.9) -> DriftResult:
    return DriftResult(features=[], drift_share=share, champion_accuracy=before,
                       reference_accuracy=reference)


def run(validation=VALID, result=None, fine_tunes=0, window=3):
    return decide(validation, result, fine_tunes, POLICY, window)


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
    decision = decide(VALID, moderate, 0, cooling, 3, 1)
    assert decision.action is Action.NOOP
    assert decision.reason == ("cooldown: accuracy 90% -> 82% (drop 8% >= 5%); 1 batch(es) since the last "
                               "adaptation (cooldown 2)")
    assert decide(VALID, moderate, 0, cooling, 3, 2).action is Action.FINE_TUNE
    assert decide(VALID, moderate, 0, cooling, 3, None).action is Action.FINE_TUNE  # never adapted
    assert decide(VALID, severe, 0, cooling, 3, 0).action is Action.RETRAIN


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


# -- Keep learning while stable, judge against the best, a significant drop always acts --------------

def test_a_significant_drop_below_every_threshold_still_fine_tunes():
    # 2,000-row batch at 86% against 90% over 6,000 rows: 4 points, beyond the ±1.7 noise band,
    # below accuracy_drop_moderate (5%), no feature drifted.
    measured = DriftResult(features=[], drift_share=0.0, champion_accuracy=0.86, reference_accuracy=0.9,
                           reference_rows=6000, batch_rows=2000)
    decision = run(result=measured)
    assert decision.action is Action.FINE_TUNE and decision.trigger is Trigger.DRIFT
    assert decision.reason == ("accuracy drop: accuracy 90% -> 86% (drop 4% beyond sampling noise "
                               "±1.7%)")
    lenient = PolicyConfig(**{**POLICY.model_dump(), "drop_moderate": 0.12})
    assert decide(VALID, measured, 0, lenient, 3).action is Action.FINE_TUNE  # whatever the thresholds
    # Inside the band it stays noise.
    noisy = DriftResult(features=[], drift_share=0.0, champion_accuracy=0.89, reference_accuracy=0.9,
                        reference_rows=6000, batch_rows=2000)
    assert run(result=noisy).action is Action.NOOP


GROWING = PolicyConfig(**{**POLICY.model_dump(), "growth_ratio": 1.0})


def test_labelled_rows_doubling_while_stable_retrain_on_the_concept_and_is_no_alarm():
    decision = decide(VALID, drift(0.0), 0, GROWING, 3, None, Growth(learned_rows=1500, new_rows=1500))
    assert decision.action is Action.RETRAIN
    assert decision.trigger is Trigger.DATA_GROWTH
    assert decision.candidate is Candidate.RETRAIN_GROWN
    assert decision.reason == ("data growth: 1,500 new labelled rows since the champion was trained on 1,500 "
                               "(>= 1x); retraining on every batch of its concept")
    assert decide(VALID, drift(0.0), 0, GROWING, 3, None, Growth(1500, 1499)).action is Action.NOOP
    off = PolicyConfig(**{**POLICY.model_dump(), "growth_ratio": None})
    assert decide(VALID, drift(0.0), 0, off, 3, None, Growth(1500, 9000)).action is Action.NOOP


def test_an_alarm_takes_precedence_over_data_growth():
    dropped = decide(VALID, drift(0.0, before=0.8), 0, GROWING, 3, None, Growth(1500, 3000))
    assert dropped.action is Action.FINE_TUNE and dropped.trigger is Trigger.DRIFT


def _served(batch: str, before: int | None, after: int | None, accuracy: float | None, decision: str = "noop",
            trigger: str = "", rows: int = 2000) -> CycleRecord:
    return CycleRecord(batch=batch, rows=rows, validation="passed", drift_share=0.0,
                       champion_accuracy_before=accuracy, decision=decision, reason="", trigger=trigger,
                       champion_version_before=before, champion_version_after=after)


CHAMPION = Champion(version=2, model=None, holdout_accuracy=0.71, reference=None, holdout_rows=500)


def test_the_reference_is_the_best_recent_model_not_a_weak_retrain():
    history = [
        _served("b1", None, 1, None, "retrain", "first_model"),
        _served("b2", 1, 1, 0.95),
        _served("b3", 1, 1, 0.94),
        # An alarm replaced v1: its 70% measured the change, not v1's level.
        _served("b4", 1, 2, 0.70, "retrain", "drift"),
        _served("b5", 2, 2, 0.72),
    ]
    reference = reference_accuracy(history, 6, CHAMPION)
    assert reference == Reference(accuracy=0.945, rows=4000, version=1, batches=2)
    assert reference.describe() == "94.5% (v1 on 2 recent batch(es))"
    # Once v1's batches are older than the last `reference_batches`, the weak model sets the bar.
    assert reference_accuracy(history, 2, CHAMPION) == Reference(0.72, 2000, 2, 1)


def test_an_alarm_whose_challenger_lost_still_counts_for_the_reference():
    history = [_served("b1", None, 1, None, "retrain", "first_model"),
               _served("b2", 1, 1, 0.86, "fine_tune", "drift")]  # the fine-tune was not promoted
    assert reference_accuracy(history, 6, CHAMPION) == Reference(0.86, 2000, 1, 1)


def test_a_deployed_alarm_awaiting_its_adaptation_does_not_set_the_reference():
    # The monitor judged b2 a concept change and handed it to `adapt`; b3 is judged before that
    # adaptation ran, against v1's level, not against the changed batch.
    requested = _served("b2", 1, 1, 0.69, "retrain", "drift")
    requested.status = "adaptation requested"
    history = [_served("b1", None, 1, None, "retrain", "first_model"), requested]
    assert reference_accuracy(history, 6, CHAMPION) == Reference(0.71, 500, 2, 0)


def test_without_a_served_batch_the_reference_is_the_champion_holdout():
    history = [_served("b1", None, 2, None, "retrain", "first_model"),
               _served("b2", 2, 2, None, "reject", rows=0)]
    assert reference_accuracy(history, 6, CHAMPION) == Reference(0.71, 500, 2, 0)


def test_growth_counts_rows_since_the_last_training():
    history = [CycleRecord(batch="b1", rows=2000, validation="passed", drift_share=None,
                           champion_accuracy_before=None, decision="retrain", reason="",
                           champion_version_after=1, learned_rows=1500, unlearned_rows=0),
               CycleRecord(batch="b2", rows=2000, validation="passed", drift_share=0.0,
                           champion_accuracy_before=0.9, decision="noop", reason="",
                           champion_version_after=1, learned_rows=1500, unlearned_rows=1500),
               _served("b3", 1, 1, None, "reject", rows=0)]  # a rejected batch brings no rows
    assert growth_of(history, new_rows=1500) == Growth(learned_rows=1500, new_rows=3000)
    assert growth_of([], new_rows=1500) is None


# -- Choosing by evidence --------------------------------------------------------------------------

ALARM = Decision(Action.FINE_TUNE, "accuracy drop", trigger=Trigger.DRIFT)
COSTS = {Candidate.FINE_TUNE: 0.2, Candidate.RETRAIN_WINDOW: 0.3, Candidate.RETRAIN_BATCH: 0.1}


def test_an_alarm_trains_the_policy_choice_the_history_then_the_cheapest_others_within_the_budget():
    # Budget 0.5 of the fine-tune's 0.2 s: the 0.1 s retrain on the batch fits, the window does not.
    # The concept's history (retrain_all) is trained at every alarm, outside the budget: it is the
    # evidence whether that history still holds.
    assert candidate_plan(ALARM, POLICY, True, COSTS, None) == [
        Candidate.FINE_TUNE, Candidate.RETRAIN_ALL, Candidate.RETRAIN_BATCH]
    generous = PolicyConfig(**{**POLICY.model_dump(), "candidate_budget": 2.5})
    assert candidate_plan(ALARM, generous, True, COSTS, None) == [
        Candidate.FINE_TUNE, Candidate.RETRAIN_ALL, Candidate.RETRAIN_BATCH, Candidate.RETRAIN_WINDOW]
    frugal = PolicyConfig(**{**POLICY.model_dump(), "candidate_budget": 0.0})
    assert candidate_plan(ALARM, frugal, True, COSTS, None) == [Candidate.FINE_TUNE, Candidate.RETRAIN_ALL]
    # Unknown costs count as the own choice's: one more candidate per unit of budget.
    assert candidate_plan(ALARM, PolicyConfig(**{**POLICY.model_dump(), "candidate_budget": 1.0}), True,
                          {}, None) == [Candidate.FINE_TUNE, Candidate.RETRAIN_ALL, Candidate.RETRAIN_WINDOW]


def test_the_kind_that_won_the_last_comparison_is_tried_first_among_the_others():
    generous = PolicyConfig(**{**POLICY.model_dump(), "candidate_budget": 1.5})
    assert candidate_plan(ALARM, generous, True, COSTS, Candidate.RETRAIN_WINDOW) == [
        Candidate.FINE_TUNE, Candidate.RETRAIN_ALL, Candidate.RETRAIN_WINDOW]  # then 0.1 s more does not fit
    assert candidate_plan(ALARM, generous, True, COSTS, None) == [
        Candidate.FINE_TUNE, Candidate.RETRAIN_ALL, Candidate.RETRAIN_BATCH]  # the cheapest first
    # The policy's own choice stays first: a concept change retrains on the batch alone.
    change = Decision(Action.RETRAIN, "change", 1, supersedes=True, trigger=Trigger.DRIFT)
    assert candidate_plan(change, POLICY, True, COSTS, Candidate.FINE_TUNE)[0] is Candidate.RETRAIN_BATCH


def test_a_concept_change_also_trains_the_window_and_a_tie_goes_to_what_forgets_least():
    # A severe drop may be a covariate shift into regions the model never saw: the window keeps
    # what still holds, whatever the budget.
    change = Decision(Action.RETRAIN, "change", 1, supersedes=True, trigger=Trigger.DRIFT)
    frugal = PolicyConfig(**{**POLICY.model_dump(), "candidate_budget": 0.0})
    assert candidate_plan(change, frugal, True, COSTS, None) == [
        Candidate.RETRAIN_BATCH, Candidate.RETRAIN_WINDOW, Candidate.RETRAIN_ALL]
    # Seasonal rows: both are perfect on the new season; only the window still knows the old one.
    trials = [CandidateResult("retrain_batch", 1.0, 0.0, 1500, train_cpu_seconds=0.04, forgetting_all=0.38),
              CandidateResult("retrain_window", 1.0, 0.0, 4500, train_cpu_seconds=0.14, forgetting_all=0.0)]
    assert choose(trials, 0.05) == 1


def two_points(_: int) -> float:
    """The paired noise of the history's candidate against any other: two accuracy points."""
    return 0.02


# An alarm's candidates on 500 holdout rows: the batch alone, and the concept's whole history.
def retrains(batch: float, history: float, batch_forgets: float = 0.0,
             history_forgets: float = 0.0) -> list[CandidateResult]:
    return [CandidateResult("retrain_batch", batch, batch_forgets, 1500, train_cpu_seconds=0.1,
                            forgetting_all=0.3),
            CandidateResult("retrain_all", history, history_forgets, 9000, train_cpu_seconds=0.5)]


def test_history_that_costs_nothing_beyond_the_paired_noise_still_holds_and_resets_nothing():
    # A region never seen: the earlier regions neither help nor hurt on it, and the history is kept.
    assert choose_by_history(retrains(0.85, 0.84), 0.05, two_points, concept_change=True) == HistoryChoice(
        1, "history still holds: retrain_all on 9,000 rows of the concept's history 84.0% vs retrain_batch "
        "85.0% (within paired noise ±2.0%); retrain_all kept, no new concept")
    # An alarm short of a concept change discards nothing: the best candidate plainly wins.
    assert choose_by_history(retrains(0.85, 0.84), 0.05, two_points, concept_change=False) == HistoryChoice(0)


def test_history_that_costs_accuracy_beyond_the_paired_noise_conflicts_and_a_new_concept_starts():
    # The relation changed: the earlier batches teach the old labels, the batch alone wins clearly.
    assert choose_by_history(retrains(0.85, 0.76), 0.05, two_points, concept_change=True) == HistoryChoice(
        0, "history conflicts: retrain_all on 9,000 rows of the concept's history 76.0% vs retrain_batch "
        "85.0% (worse by 9.0%, beyond paired noise ±2.0%); a new concept starts", new_concept=True)


def test_history_that_conflicts_is_evidence_not_a_challenger_whatever_the_others_forget():
    # A concept that keeps moving (incremental drift): every recent retrain "forgets" the concept's
    # stale windows, the history alone does not -- it must not win for that alone, and the old
    # concept's windows no longer hold the one that follows the change back.
    trials = retrains(0.86, 0.80, batch_forgets=0.08)
    assert choose(trials, 0.05) == 1  # the forgetting gate alone would pick the stale history
    choice = choose_by_history(trials, 0.05, noise_against=two_points, concept_change=False)
    assert choice.kept == 0 and choice.new_concept and choice.evidence.startswith("history conflicts")


def test_no_history_evidence_without_its_candidate_or_when_it_forgets_too_much():
    assert choose_by_history(retrains(0.85, 0.84)[:1], 0.05, two_points, True) == HistoryChoice(0)
    # The history's candidate is the best anyway.
    assert choose_by_history(retrains(0.80, 0.84), 0.05, two_points, True) == HistoryChoice(1, (
        "history still holds: retrain_all on 9,000 rows of the concept's history 84.0% vs "
        "retrain_batch 80.0%; retrain_all kept, no new concept"))
    forgetful = retrains(0.85, 0.84, history_forgets=0.2)
    assert choose_by_history(forgetful, 0.05, two_points, True) == HistoryChoice(0)


def test_only_an_alarm_compares_candidates():
    first = Decision(Action.RETRAIN, "first", 3, trigger=Trigger.FIRST_MODEL)
    grown = Decision(Action.RETRAIN, "growth", 0, trigger=Trigger.DATA_GROWTH)
    labels = Decision(Action.RETRAIN, "labels", 3, supersedes=True, trigger=Trigger.NEW_LABELS)
    assert candidate_plan(first, POLICY, False, COSTS, None) == [Candidate.RETRAIN_WINDOW]
    assert candidate_plan(grown, POLICY, True, COSTS, None) == [Candidate.RETRAIN_GROWN]
    # New labels: the window, and the concept's history as the evidence whether it still holds.
    assert candidate_plan(labels, POLICY, True, COSTS, None) == [
        Candidate.RETRAIN_WINDOW, Candidate.RETRAIN_ALL]
    concept_change = Decision(Action.RETRAIN, "change", 1, supersedes=True, trigger=Trigger.DRIFT)
    assert concept_change.candidate is Candidate.RETRAIN_BATCH


def test_a_kind_the_user_did_not_allow_is_replaced_by_the_first_allowed():
    only_retrains = PolicyConfig(**{**POLICY.model_dump(), "candidates": ["retrain_window", "retrain_batch"],
                                    "candidate_budget": 0.0})
    assert candidate_plan(ALARM, only_retrains, True, COSTS, None) == [Candidate.RETRAIN_WINDOW]


def test_the_challenger_is_the_best_candidate_within_the_forgetting_budget_the_cheaper_on_a_tie():
    trials = [CandidateResult("fine_tune", 0.91, 0.08, 3000, train_cpu_seconds=0.2),
              CandidateResult("retrain_window", 0.89, 0.01, 4500, train_cpu_seconds=0.3),
              CandidateResult("retrain_batch", 0.89, 0.0, 1500, train_cpu_seconds=0.1)]
    assert choose(trials, 0.05) == 2  # the fine-tune forgets too much; a tie goes to the cheaper
    assert choose(trials, 0.10) == 0
    assert choose(trials[:1], 0.05) == 0  # nothing within the budget: the best all the same


def test_costs_are_estimated_from_the_ledger_and_the_last_winner_remembered():
    def trained(batch: str, *candidates: tuple[str, int, float, bool]) -> CycleRecord:
        return CycleRecord(batch=batch, rows=2000, validation="passed", drift_share=0.0,
                           champion_accuracy_before=0.8, decision="retrain", reason="",
                           champion_version_after=1,
                           candidates=[{"kind": k, "rows": n, "train_cpu_seconds": cpu, "chosen": chosen}
                                       for k, n, cpu, chosen in candidates])

    history = [trained("b1", ("retrain_window", 1500, 0.3, True)),
               trained("b2", ("fine_tune", 3000, 0.3, False), ("retrain_batch", 1500, 0.15, True))]
    costs = estimated_costs(history, {Candidate.FINE_TUNE: 3000, Candidate.RETRAIN_GROWN: 6000})
    assert costs == pytest.approx({Candidate.FINE_TUNE: 0.3, Candidate.RETRAIN_GROWN: 0.6})  # latest rate
    assert estimated_costs([], {Candidate.FINE_TUNE: 3000}) == {Candidate.FINE_TUNE: None}
    assert last_winner(history) is Candidate.RETRAIN_BATCH


def test_the_history_budget_keeps_the_newest_batches_whole_and_samples_the_older():
    from perennial.core.sampling import history_quotas

    assert history_quotas([100, 100, 100, 100], 1000) == [100, 100, 100, 100]  # within the budget
    assert history_quotas([100, 100, 100, 100], 250) == [50, 50, 50, 100]  # newest whole up to half
    assert history_quotas([500, 100], 300) == [200, 100]
    assert history_quotas([100, 100, 100, 100], 100) == [25, 25, 25, 25]  # no batch fits half
    assert sum(history_quotas([7, 300, 41, 1000, 3], 500)) <= 500
