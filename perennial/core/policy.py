"""The policy: what to do with a batch, and why. Pure logic, no Prefect run or MLflow needed."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from perennial.core.config import PolicyConfig
from perennial.core.state import REQUESTED
from perennial.core.types import (
    Action,
    Candidate,
    CandidateResult,
    Champion,
    CycleRecord,
    Decision,
    DriftResult,
    Evaluation,
    Growth,
    Reference,
    Trigger,
    ValidationResult,
    judged_by,
    pct,
)

if TYPE_CHECKING:
    from perennial.core.metrics import Metric


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


def reference_accuracy(history: Sequence[CycleRecord], batches: int, champion: Champion,
                       metric: Metric | None = None) -> Reference:
    """What the champion's accuracy on a new batch is judged against: the best accuracy that the
    models in service over the last `batches` accepted batches reached on the batches they served
    (each model's accuracy pooled over its batches, weighted by rows).

    Only accuracies measured before learning from a batch count: a challenger's holdout accuracy
    was used to promote it, so it is biased upwards. A batch on which an alarm replaced the model
    does not count for that model either, nor one whose alarm a deployed `adapt` run has yet to act
    on: it measured the change, not the model's level (an alarm whose challenger lost does count, so
    a lucky estimate cannot raise alarm after alarm). With no such batch (the first model has served
    none) it is the champion's holdout accuracy. A weak retrain therefore does not lower the bar: the
    models before it still set it, until they leave the last `batches` batches.
    """
    recent = {id(r) for r in [r for r in history if r.learnable][-batches:]}
    pooled: dict[int, list[float]] = {}
    served: dict[int, int] = {}
    previous = None
    for record in history:
        # Ledgers written before this field: the model in service is the one the line before left.
        before = record.champion_version_before if record.champion_version_before is not None else previous
        previous = record.champion_version_after
        if id(record) not in recent or before is None or record.champion_accuracy_before is None \
                or record.metric != judged_by(metric).name:  # a value in another metric compares with nothing
            continue
        if record.trigger in (Trigger.DRIFT, Trigger.NEW_LABELS) and (
                record.champion_version_after != before or record.status == REQUESTED):
            continue  # the alarm replaced the model, or (deployed) its adaptation is still to come
        totals = pooled.setdefault(before, [0.0, 0.0])
        totals[0] += record.champion_accuracy_before * record.rows
        totals[1] += record.rows
        served[before] = served.get(before, 0) + 1
    if not pooled:
        # A champion registered under another metric has no value in this one to be judged against.
        same = champion.metric == judged_by(metric).name
        return Reference(champion.holdout_accuracy if same else math.nan, champion.holdout_rows or 0,
                         champion.version)
    utility = judged_by(metric).utility
    version, (total, rows) = max(pooled.items(),
                                 key=lambda item: (utility(item[1][0] / item[1][1]), item[1][1]))
    return Reference(total / rows, int(rows), version, served[version])


def growth_of(history: Sequence[CycleRecord], new_rows: int) -> Growth | None:
    """Rows the model in service learnt from, and labelled rows since its training plus `new_rows`;
    None before the first training."""
    last = next((r for r in reversed(history) if r.learned_rows is not None), None)
    if last is None:
        return None
    return Growth(last.learned_rows, (last.unlearned_rows or 0) + new_rows)


def decide(
    validation: ValidationResult,
    drift: DriftResult | None,
    fine_tunes: int,
    policy: PolicyConfig,
    window_batches: int,
    since_adaptation: int | None = None,
    growth: Growth | None = None,
) -> Decision:
    """Reject, do nothing, fine-tune or retrain; `drift` is None when there is no champion yet.

    `since_adaptation`: accepted batches since the model in service last changed, for the cooldown.
    `growth`: labelled rows learnt and not yet learnt, for the data-growth retrain (None: off).
    """
    if not validation.success or drift is None or validation.new_classes:
        return _before_drift(validation, window_batches)
    share, drop = drift.drift_share, drift.accuracy_drop
    drifted = f"{pct(share)} of features drifted"
    if drift.shifted_columns:
        drifted += f" (shifted in validation: {', '.join(drift.shifted_columns)})"
    if drop is None:
        # No accuracy to go by: feature drift alone decides.
        return _by_share(share, drifted, fine_tunes, policy, window_batches, since_adaptation) \
            or _grown(growth, policy) or Decision(Action.NOOP, f"stable: {drifted} "
                                                  f"(< {pct(policy.drift_share_moderate)}), accuracy unknown")
    return _by_accuracy(drift, drifted, fine_tunes, policy, window_batches, since_adaptation, growth)


def _before_drift(validation: ValidationResult, window_batches: int) -> Decision:
    """The decisions drift has no say in: an invalid batch, the first model, new labels."""
    if not validation.success:
        return Decision(Action.REJECT, f"validation failed: {validation.summary()}")
    if not validation.new_classes:
        return Decision(Action.RETRAIN, "no champion yet: training the first model", window_batches,
                        trigger=Trigger.FIRST_MODEL)
    labels = ", ".join(validation.new_classes)
    # The label set changed: earlier windows cannot show the new labels, so a new concept starts.
    return Decision(Action.RETRAIN, f"new label(s) {labels}: a retrain is needed to learn them",
                    window_batches, supersedes=True, trigger=Trigger.NEW_LABELS)


def _by_accuracy(drift: DriftResult, drifted: str, fine_tunes: int, policy: PolicyConfig, window_batches: int,
                 since_adaptation: int | None, growth: Growth | None) -> Decision:
    """The champion's accuracy on the batch decides, feature drift says how severe."""
    share, drop, noise = drift.drift_share, drift.accuracy_drop or 0.0, drift.accuracy_noise
    m = drift.judged_by
    gap = m.format_gap
    reference = drift.reference.describe(m) if drift.reference else m.format(drift.reference_accuracy or 0)
    accuracy = f"{m.name} {reference} -> {m.format(drift.champion_accuracy or 0)}"
    if drop <= noise:
        # Small batches and holdouts measure a metric loosely; a drop inside two standard errors is noise.
        accuracy += f" (drop {gap(drop)} within sampling noise ±{gap(noise)})" if drop > 0 else ""
        drop = 0.0
    if drop >= policy.drop_severe:
        # The old concept seems not to hold: learn from this batch alone, unless the candidates show
        # that the history still holds (`choose_by_history`: inputs moved where the model never was).
        return Decision(Action.RETRAIN, f"concept change: {accuracy} (drop {gap(drop)} >= "
                        f"{gap(policy.drop_severe)}); retraining on this batch unless its history "
                        "still holds", 1, supersedes=True,
                        trigger=Trigger.DRIFT)
    if drop >= policy.drop_moderate and share >= policy.drift_share_severe:
        return Decision(Action.RETRAIN, f"severe drift: {drifted} (>= {pct(policy.drift_share_severe)}), "
                        f"{accuracy}", window_batches, trigger=Trigger.DRIFT)
    if drop > 0:
        # Beyond noise the champion is worse than recent models were: always worth a cheap try.
        if share >= policy.drift_share_moderate:
            label, detail = "moderate drift", f"{drifted}, {accuracy}"
        elif drop >= policy.drop_moderate:
            label = "moderate drift"
            detail = f"{accuracy} (drop {gap(drop)} >= {gap(policy.drop_moderate)})"
        else:
            label = f"{m.name} drop"
            detail = f"{accuracy} (drop {gap(drop)} beyond sampling noise ±{gap(noise)})"
        return _fine_tune_or_retrain(label, detail, fine_tunes, policy, window_batches, since_adaptation)
    if grown := _grown(growth, policy):
        return grown
    if share >= policy.drift_share_moderate:
        # Labels came with the batch and show the champion still right: moved inputs alone cost no training.
        return Decision(Action.NOOP, f"features drifted but {m.name} held: {drifted}, {accuracy}")
    return Decision(Action.NOOP, f"stable: {drifted} (< {pct(policy.drift_share_moderate)}), {accuracy}")


def _fine_tune_or_retrain(label: str, detail: str, fine_tunes: int, policy: PolicyConfig,
                          window_batches: int, since_adaptation: int | None) -> Decision:
    """The answer to a drop short of a concept change: watch it during the cooldown, else fine-tune,
    or retrain once `max_fine_tunes` fine-tunes were made since the last retrain."""
    if since_adaptation is not None and since_adaptation < policy.cooldown_batches:
        return Decision(Action.NOOP, f"cooldown: {detail}; {since_adaptation} batch(es) since the last "
                        f"adaptation (cooldown {policy.cooldown_batches})")
    if fine_tunes >= policy.max_fine_tunes:
        return Decision(Action.RETRAIN, f"{label}: {detail}; {fine_tunes} fine-tunes since the last retrain "
                        f"(max {policy.max_fine_tunes})", window_batches, trigger=Trigger.DRIFT)
    return Decision(Action.FINE_TUNE, f"{label}: {detail}", trigger=Trigger.DRIFT)


def without_fine_tune(decision: Decision, cannot: str | None, window_batches: int) -> Decision:
    """The decision for a champion that cannot fine-tune (`cannot` says why; None: it can): a fine-tune
    becomes a retrain on the window, saying so; every other decision stands."""
    if cannot is None or decision.action is not Action.FINE_TUNE:
        return decision
    return replace(decision, action=Action.RETRAIN, window_batches=window_batches,
                   reason=f"{decision.reason}; {cannot}: retraining instead")


def _grown(growth: Growth | None, policy: PolicyConfig) -> Decision | None:
    """A retrain on every batch of the concept once the rows not learnt reach `growth_ratio` times
    those learnt: while stable the model keeps learning, at a cost that doubles only with the data."""
    if growth is None or policy.growth_ratio is None or not growth.learned_rows \
            or growth.new_rows < policy.growth_ratio * growth.learned_rows:
        return None
    return Decision(Action.RETRAIN, f"data growth: {growth.new_rows:,} new labelled rows since the champion "
                    f"was trained on {growth.learned_rows:,} (>= {policy.growth_ratio:g}x); retraining on "
                    "every batch of its concept", 0, trigger=Trigger.DATA_GROWTH)


def _by_share(share: float, drifted: str, fine_tunes: int, policy: PolicyConfig, window_batches: int,
              since_adaptation: int | None) -> Decision | None:
    if share >= policy.drift_share_severe:
        return Decision(Action.RETRAIN, f"severe drift: {drifted} (>= {pct(policy.drift_share_severe)})",
                        window_batches, trigger=Trigger.DRIFT)
    if share >= policy.drift_share_moderate:
        return _fine_tune_or_retrain("moderate drift", f"{drifted}, accuracy unknown", fine_tunes, policy,
                                     window_batches, since_adaptation)
    return None


# -- Choosing by evidence --------------------------------------------------------------------------

def candidate_plan(decision: Decision, policy: PolicyConfig, has_champion: bool,
                   costs: dict[Candidate, float | None], last_winner: Candidate | None) -> list[Candidate]:
    """The candidates an adaptation trains: the policy's own choice (or, if the user did not allow
    it, the first allowed kind), then others while their estimated cost fits `candidate_budget`
    times the own choice's: the kind that won the last comparison first, then the cheapest.

    Every alarm also trains `retrain_all`, the concept's whole history (its rows bounded by
    `training.history_rows`, not by the budget): it is the evidence whether that history still holds
    (`choose_by_history`). A concept change always trains the window too. Only an alarm compares
    candidates: a first model and a data-growth retrain each have one way to train, new labels the
    window and the concept's history (the evidence whether it still holds).
    `costs` holds estimated CPU seconds per kind (None: not known yet, taken as the own choice's).
    """
    own = decision.candidate
    if own is None:
        return []
    allowed = [Candidate(k) for k in policy.candidates]
    if decision.trigger is Trigger.NEW_LABELS and has_champion and Candidate.RETRAIN_ALL in allowed:
        # New labels from where the model has never been (a new region brings its own classes) are
        # no reason to discard the history either: the same evidence decides.
        return [own, Candidate.RETRAIN_ALL]
    if decision.trigger is not Trigger.DRIFT or not has_champion:
        return [own]
    if own not in allowed:
        own = allowed[0]
    own_cost = costs.get(own) or 1.0

    def cost(kind: Candidate) -> float:
        known = costs.get(kind)
        return own_cost if known is None else known

    plan, spent = [own], 0.0
    if decision.supersedes and own is Candidate.RETRAIN_BATCH and Candidate.RETRAIN_WINDOW in allowed:
        # A severe drop is a changed concept, or inputs that moved where the model never was (a
        # covariate shift): the window keeps what still holds and ties or wins in the second case.
        plan.append(Candidate.RETRAIN_WINDOW)
        spent += cost(Candidate.RETRAIN_WINDOW)
    if Candidate.RETRAIN_ALL in allowed and own is not Candidate.RETRAIN_ALL:
        plan.append(Candidate.RETRAIN_ALL)
    others = sorted((k for k in allowed if k not in plan), key=lambda k: (k is not last_winner, cost(k)))
    for kind in others:
        if spent + cost(kind) <= policy.candidate_budget * own_cost:
            plan.append(kind)
            spent += cost(kind)
    return plan


def last_winner(history: Iterable[CycleRecord]) -> Candidate | None:
    """The kind of candidate that won the latest adaptation that compared several."""
    winner = None
    for record in history:
        if len(record.candidates) > 1:
            winner = next((Candidate(c["kind"]) for c in record.candidates if c.get("chosen")), winner)
    return winner


def estimated_costs(history: Iterable[CycleRecord],
                    rows: dict[Candidate, int]) -> dict[Candidate, float | None]:
    """CPU seconds each candidate would take on `rows` rows, from the cost ledger: the latest training
    of the same kind (of any kind when there was none) scaled by rows; None before any training."""
    per_row: dict[Candidate, float] = {}
    latest = None
    for record in history:
        for tried in record.candidates:
            if tried.get("train_cpu_seconds") is not None and tried.get("rows"):
                latest = per_row[Candidate(tried["kind"])] = tried["train_cpu_seconds"] / tried["rows"]
    rates = {kind: per_row.get(kind, latest) for kind in rows}
    return {kind: None if rates[kind] is None else rates[kind] * n for kind, n in rows.items()}


def choose(trials: Sequence[CandidateResult], forgetting_budget: float, metric: Metric | None = None) -> int:
    """The challenger among trained candidates: the best accuracy on the holdout rows among those
    that forget at most the budget on their concept's windows (all of them when none does); on a
    tie the one that forgets least over every earlier window (it kept what still holds), then the
    cheaper."""
    utility = judged_by(metric).utility
    within = [i for i, t in enumerate(trials) if not forgets_too_much(t.forgetting, forgetting_budget)] \
        or range(len(trials))
    return max(within, key=lambda i: (utility(trials[i].accuracy), -trials[i].forgetting_all,
                                      -(trials[i].train_cpu_seconds or 0.0)))


@dataclass(frozen=True)
class HistoryChoice:
    """The candidate kept, what the evidence of the concept's history said, and whether it starts a
    new concept (the history conflicts with the batch)."""

    kept: int
    evidence: str | None = None
    new_concept: bool = False


# Standard errors of the paired difference beyond which the concept's history conflicts with a batch:
# three, not two. Keeping history that fits a little worse costs little, and the next alarm measures
# again; discarding history that still held cannot be undone, and splits one concept in two whose
# models are then reinstated in turn as their regions come back.
HISTORY_CONFLICT_SE = 3.0


def choose_by_history(trials: Sequence[CandidateResult], forgetting_budget: float,
                      noise_against: Callable[[int], float], concept_change: bool,
                      metric: Metric | None = None) -> HistoryChoice:
    """The challenger, weighing the evidence of the candidate that learnt the concept's whole
    history (`retrain_all`): does that history still hold for the new batch?

    `noise_against(i)` is the paired sampling noise of that candidate against candidate i on the same holdout
    rows (`HISTORY_CONFLICT_SE` standard errors of their difference); it is weighed against the most
    accurate other candidate. History that
    costs accuracy beyond the noise conflicts with the new batch (the relation changed, abruptly or
    bit by bit): that candidate is evidence, not a challenger; the most accurate of the others is
    kept and starts a new concept, since the old concept's windows, replay memory and history no
    longer describe what the model must do (nor hold it back through the forgetting gate). History
    that costs no more than the noise still holds (the batch moved where the model had not been, a
    covariate shift): on a concept change that candidate is kept and nothing is reset; on another
    alarm it competes like any other, as `choose` has it."""
    m = judged_by(metric)
    history = next((i for i, t in enumerate(trials) if t.kind == Candidate.RETRAIN_ALL), None)
    others = [i for i in range(len(trials)) if i != history]
    if history is None or not others:
        return HistoryChoice(choose(trials, forgetting_budget, m))
    top = max(others, key=lambda i: m.utility(trials[i].accuracy))
    all_, rival = trials[history], trials[top]
    gap, noise = m.drop(rival.accuracy, all_.accuracy) or 0.0, noise_against(top)
    on = (f"{all_.kind} on {all_.rows:,} rows of the concept's history {m.format(all_.accuracy, 1)} vs "
          f"{rival.kind} {m.format(rival.accuracy, 1)}")
    if gap > noise:
        # Without the history's candidate, and with the concept's windows out of scope: the old
        # concept's forgetting gate must not hold back the model that follows the change.
        kept = max(others, key=lambda i: (m.utility(trials[i].accuracy),
                                          -(trials[i].train_cpu_seconds or 0.0)))
        return HistoryChoice(kept, f"history conflicts: {on} (worse by {m.format_gap(gap, 1)}, beyond "
                                   f"paired noise ±{m.format_gap(noise, 1)}); a new concept starts",
                             new_concept=True)
    if concept_change and not forgets_too_much(all_.forgetting, forgetting_budget):
        within = f" (within paired noise ±{m.format_gap(noise, 1)})" if gap > 0 else ""
        return HistoryChoice(history, f"history still holds: {on}{within}; {all_.kind} kept, no new concept")
    return HistoryChoice(choose(trials, forgetting_budget, m))


def forgets_too_much(forgetting: float, budget: float) -> bool:
    """The forgetting gate of promotion, reuse and the choice among candidates."""
    return forgetting > budget


def promotion_verdict(evaluation: Evaluation, champion_version: int | None, policy: PolicyConfig,
                      forgetting_budget: float) -> tuple[bool, str]:
    """Promote a challenger? Yes for the first model; otherwise only if it forgets at most the budget
    on earlier windows of its concept and beats the champion by the margin on the batch's holdout."""
    if champion_version is None:
        return True, "first model: champion by default"
    e, margin, m = evaluation, policy.promotion_margin, judged_by(evaluation.metric)
    if forgets_too_much(e.forgetting, forgetting_budget):
        return False, (f"not promoted: forgets {m.format_gap(e.forgetting, 1)} on {e.forgetting_windows} "
                       f"earlier window(s) of its concept (budget {m.format_gap(forgetting_budget, 1)})")
    champion = e.champion_accuracy if e.champion_accuracy is not None else math.nan
    on = (f"v{champion_version} {m.format(champion, 1)} + margin {m.format_gap(margin, 1)} on "
          f"{e.holdout_rows} holdout rows")
    named = "" if m.name == "accuracy" else f"{m.name} "
    # A champion that cannot be scored (NaN: e.g. AUC on rows of one class) leaves the challenger in.
    # Written the way the metric goes: an error must be at most the champion's (less the margin).
    reaches, misses = (">=", "<") if m.greater_is_better else ("<=", ">")
    challenger = f"challenger {named}{m.format(e.challenger_accuracy, 1)}"
    if math.isnan(m.utility(champion)) or m.better(e.challenger_accuracy, champion, margin):
        return True, f"{challenger} {reaches} champion {on}"
    return False, f"not promoted: {challenger} {misses} champion {on}"


def concept_returned(accuracy: float, holdout_accuracy: float, champion_accuracy: float, rows: int,
                     policy: PolicyConfig, metric: Metric | None = None, noise: float | None = None) -> bool:
    """Has a former champion's concept returned? It holds its own holdout accuracy on the batch (a drop
    under `accuracy_drop_moderate`) and beats the champion by the promotion margin and beyond
    sampling noise (a version that wins by a hair is not a concept returning)."""
    m = judged_by(metric)
    if noise is None:  # two standard errors as if on different rows (a metric without a variance: given)
        noise = m.drop_noise(champion_accuracy, rows, accuracy, rows, 0.0)
    gain, lost = m.drop(champion_accuracy, accuracy), m.drop(holdout_accuracy, accuracy)
    if gain is None or lost is None:
        return False
    return -gain > noise and m.better(accuracy, champion_accuracy, policy.promotion_margin) \
        and lost < policy.drop_moderate


# -- Labels that arrive later ---------------------------------------------------------------------------

def _band(m: Metric, estimate: dict) -> str:
    return f"{m.format(estimate['value'])} [{m.format(estimate['low'])}, {m.format(estimate['high'])}]"


def estimated_alarm(estimate: dict | None, reference: float | None, metric: Metric,
                    min_drop: float = 0.0) -> bool:
    """The estimate's whole band below the reference (in the metric's utility), a drop the batch's own
    sampling and the calibration's uncertainty cannot explain, and the estimate at least `min_drop`
    below it (`policy.drop_moderate`: what a drop must reach to count with labels too)."""
    if estimate is None or reference is None or math.isnan(estimate["value"]) or math.isnan(reference):
        return False
    u = metric.utility
    return max(u(estimate["low"]), u(estimate["high"])) < u(reference) \
        and u(reference) - u(estimate["value"]) >= min_drop


def await_labels(estimate: dict | None, reference: float | None, metric: Metric, why_none: str | None,
                 drifted: str) -> Decision:
    """A batch served without labels is never trained on: it waits for them. Its estimated metric (or
    why there is none) is the reason; an estimated drop beyond the band is an alarm that waits."""
    m = metric
    if estimate is None:
        return Decision(Action.AWAIT_LABELS, f"waits for its labels: no estimate ({why_none}); {drifted}")
    versus = f" against {m.format(reference)} of recent labelled batches" if reference is not None \
        and not math.isnan(reference) else ""
    band = f"estimated {m.name} {_band(m, estimate)}{versus}"
    if estimated_alarm(estimate, reference, m):
        return Decision(Action.AWAIT_LABELS, f"alarm, waits for labels: {band}, a drop beyond the estimate's "
                        f"band; {drifted}", trigger=Trigger.DRIFT)
    return Decision(Action.AWAIT_LABELS, f"waits for its labels: {band}; {drifted}")


def gap_of(estimate: dict, realised: float, metric: Metric) -> float:
    """How much worse the realised metric is than the estimate's band foresaw, in utility units
    (positive: below the band's worse end)."""
    u = metric.utility
    return min(u(estimate["low"]), u(estimate["high"])) - u(realised)


def with_gap(decision: Decision, estimate: dict | None, drift: DriftResult | None, fine_tunes: int,
             policy: PolicyConfig, window_batches: int, since_adaptation: int | None,
             realised: float | None = None, served_by: int | None = None) -> Decision:
    """The decision for a batch whose labels arrived, told by the gap between the metric estimated when
    it was served and the one its labels show for the model that served it (`realised`, of version
    `served_by`; the champion's own by default). A drop of the champion (beyond noise, against recent
    batches) the estimate foresaw is covariate shift: the model still fits where the inputs went, so
    fine-tune with replay (or a window retrain); one it did not foresee is a concept change: retrain on
    this batch (or reuse a former champion). Without a drop, or an estimate, the decision stands; the
    reason names both figures."""
    if estimate is None or drift is None or drift.champion_accuracy is None \
            or decision.action is Action.REJECT or estimate.get("metric") != drift.judged_by.name \
            or math.isnan(estimate["value"]):
        return decision
    m = drift.judged_by
    realised = drift.champion_accuracy if realised is None else realised
    by = f" (v{served_by}, which served it)" if served_by is not None else ""
    figures = f"realised {m.name} {m.format(realised)}{by}, estimated {_band(m, estimate)} when served"
    drop = drift.accuracy_drop or 0.0
    if drop <= drift.accuracy_noise or decision.trigger in (Trigger.NEW_LABELS, Trigger.FIRST_MODEL):
        return replace(decision, reason=f"{decision.reason}; {figures}")
    reference = f"{m.format(drift.reference_accuracy)} of recent batches"
    if gap_of(estimate, realised, m) > 0:
        return Decision(Action.RETRAIN, f"concept change: {figures} — a drop from {reference} the estimate "
                        "did not foresee; retraining on this batch unless its history still holds", 1,
                        supersedes=True, trigger=Trigger.DRIFT)
    return _fine_tune_or_retrain("covariate shift", f"{figures} — a drop from {reference} the estimate "
                                 "foresaw: the model still fits where the inputs went", fine_tunes, policy,
                                 window_batches, since_adaptation)
