"""The policy: what to do with a batch, and why. Pure logic, no Prefect run or MLflow needed."""

from __future__ import annotations

from collections.abc import Iterable

from prefect import task
from prefect.cache_policies import NO_CACHE

from perennial.config import PolicyConfig
from perennial.types import Action, CycleRecord, Decision, DriftResult, ValidationResult


def fine_tunes_since_retrain(history: Iterable[CycleRecord]) -> int:
    """Fine-tunes recorded after the latest retrain (or reuse of a former champion)."""
    count = 0
    for record in history:
        if record.decision in (Action.RETRAIN, Action.REUSE):
            count = 0
        elif record.decision == Action.FINE_TUNE:
            count += 1
    return count


def batches_since_adaptation(history: Iterable[CycleRecord]) -> int | None:
    """Accepted batches after the latest fine-tune, retrain or reuse; None if there was none."""
    count = None
    for record in history:
        if Action(record.decision).adapts:
            count = 0
        elif count is not None and record.decision != Action.REJECT:
            count += 1
    return count


def _pct(x: float) -> str:
    return f"{x:.0%}" if abs(x * 100 - round(x * 100)) < 1e-9 else f"{x:.1%}"


@task(cache_policy=NO_CACHE)
def decide(
    validation: ValidationResult,
    drift: DriftResult | None,
    fine_tunes: int,
    policy: PolicyConfig,
    window_batches: int,
    since_adaptation: int | None = None,
) -> Decision:
    """Reject, do nothing, fine-tune or retrain; `drift` is None when there is no champion yet.

    `since_adaptation`: accepted batches since the model in service last changed, for the cooldown.
    """
    if not validation.success:
        return Decision(Action.REJECT, f"validation failed: {validation.summary()}")
    if drift is None:
        return Decision(Action.RETRAIN, "no champion yet: training the first model", window_batches)
    if validation.new_classes:
        labels = ", ".join(validation.new_classes)
        # The label set changed: earlier windows cannot show the new labels, so a new concept starts.
        return Decision(Action.RETRAIN, f"new label(s) {labels}: a retrain is needed to learn them",
                        window_batches, supersedes=True)

    share, drop, noise = drift.drift_share, drift.accuracy_drop, drift.accuracy_noise
    drifted = f"{_pct(share)} of features drifted"
    if drop is None:
        # No accuracy to go by: feature drift alone decides.
        return _by_share(share, drifted, fine_tunes, policy, window_batches, since_adaptation)
    accuracy = f"accuracy {_pct(drift.reference_accuracy or 0)} -> {_pct(drift.champion_accuracy or 0)}"
    if drop <= noise:
        # Small batches and holdouts measure accuracy loosely; a drop inside two standard errors is noise.
        accuracy += f" (drop {_pct(drop)} within sampling noise ±{_pct(noise)})" if drop > 0 else ""
        drop = 0.0
    if drop >= policy.accuracy_drop_severe:
        # The old concept no longer holds: learn from this batch alone, not from a mixed window.
        return Decision(Action.RETRAIN, f"concept change: {accuracy} (drop {_pct(drop)} >= "
                        f"{_pct(policy.accuracy_drop_severe)}); retraining on this batch", 1, supersedes=True)
    if drop >= policy.accuracy_drop_moderate and share >= policy.drift_share_severe:
        return Decision(Action.RETRAIN, f"severe drift: {drifted} (>= {_pct(policy.drift_share_severe)}), "
                        f"{accuracy}", window_batches)
    if drop >= policy.accuracy_drop_moderate or (drop > 0 and share >= policy.drift_share_moderate):
        why = (f"{drifted}, {accuracy}" if share >= policy.drift_share_moderate
               else f"{accuracy} (drop {_pct(drop)} >= {_pct(policy.accuracy_drop_moderate)})")
        return _fine_tune_or_retrain(why, fine_tunes, policy, window_batches, since_adaptation)
    if share >= policy.drift_share_moderate:
        # Labels came with the batch and show the champion still right: moved inputs alone cost no training.
        return Decision(Action.NOOP, f"features drifted but accuracy held: {drifted}, {accuracy}")
    return Decision(Action.NOOP, f"stable: {drifted} (< {_pct(policy.drift_share_moderate)}), "
                    f"{accuracy} (drop {_pct(drop)} < {_pct(policy.accuracy_drop_moderate)})")


def _fine_tune_or_retrain(why: str, fine_tunes: int, policy: PolicyConfig, window_batches: int,
                          since_adaptation: int | None) -> Decision:
    """The answer to a moderate drift: watch it during the cooldown, else fine-tune, or retrain
    once `max_fine_tunes` fine-tunes were made since the last retrain."""
    if since_adaptation is not None and since_adaptation < policy.cooldown_batches:
        return Decision(Action.NOOP, f"cooldown: {why}; {since_adaptation} batch(es) since the last "
                        f"adaptation (cooldown {policy.cooldown_batches})")
    if fine_tunes >= policy.max_fine_tunes:
        return Decision(Action.RETRAIN, f"{why}; {fine_tunes} fine-tunes since the last retrain "
                        f"(max {policy.max_fine_tunes})", window_batches)
    return Decision(Action.FINE_TUNE, f"moderate drift: {why}")


def _by_share(share: float, drifted: str, fine_tunes: int, policy: PolicyConfig, window_batches: int,
              since_adaptation: int | None) -> Decision:
    if share >= policy.drift_share_severe:
        return Decision(Action.RETRAIN, f"severe drift: {drifted} (>= {_pct(policy.drift_share_severe)})",
                        window_batches)
    if share >= policy.drift_share_moderate:
        return _fine_tune_or_retrain(f"{drifted}, accuracy unknown", fine_tunes, policy, window_batches,
                                     since_adaptation)
    return Decision(Action.NOOP,
                    f"stable: {drifted} (< {_pct(policy.drift_share_moderate)}), accuracy unknown")
