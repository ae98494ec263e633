"""Adaptation: train the candidates for a batch, keep the best, compare it with the champion,
register, promote (check-and-set).

`training_cycle` calls `adapt_batch` in-process (embedded mode); on a Prefect server the `adapt`
flow runs it when a `perennial.drift.detected` or `perennial.data.grown` event arrives (deployed mode).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from perennial.adapters.batch_files import holdout_split
from perennial.adapters.mlflow_registry import check_reachable, replay_memory
from perennial.adapters.prefect_logs import run_logger
from perennial.core import failpoints, families
from perennial.core.config import PipelineConfig, Settings
from perennial.core.lifelong import ReplayMemory
from perennial.core.policy import (
    HISTORY_CONFLICT_SE,
    candidate_plan,
    choose_by_history,
    estimated_costs,
    growth_of,
    last_winner,
    promotion_verdict,
)
from perennial.core.state import REQUESTED, StateChange
from perennial.core.timing import timed
from perennial.core.types import (
    Candidate,
    Challenger,
    Champion,
    CycleRecord,
    Decision,
    Growth,
    Promotion,
    Trigger,
    judged_by,
)
from perennial.pipeline.context import Cycle
from perennial.pipeline.lifelong import (
    Reuse,
    Windows,
    concept_memory,
    concept_windows,
    load_windows,
    memory_in_service,
    next_concept,
    remember,
    step_change,
)
from perennial.pipeline.records import record_adaptation
from perennial.pipeline.steps import finish_cycle, finish_step
from perennial.pipeline.tasks import (
    cycle_flow,
    evaluate,
    load_batch,
    load_version,
    promote,
    register,
    reinstate,
    score_windows,
    train,
    training_rows,
)
from perennial.pipeline.training import earlier_batches, estimated_rows


def adapt_batch(cycle: Cycle, decision: Decision, expected_champion: int | None) -> StateChange:
    """Train the candidates the policy and the cost budget allow, keep the best on the batch's holdout
    rows among those within the forgetting budget, register it with its replay memory, promote it
    (check-and-set) or not; returns what the cycle keeps. Registering and promoting are idempotent,
    so a resumed cycle ends with the same version and alias."""
    config, batch, champion, record = cycle.config, cycle.batch, cycle.champion, cycle.record
    history = [r for r in cycle.store.records() if r.batch != batch.id]
    train_idx, _ = holdout_split(batch, config)
    windows = load_windows(cycle)
    in_service = memory_in_service(cycle)
    trials = [train_candidate(cycle, kind, decision, in_service, history, windows)
              for kind in candidates_for(decision, history, config, champion, len(train_idx))]
    best, evidence = chosen(cycle, trials, decision, windows)
    decision = chosen_decision(decision, best, trials, evidence, champion)
    version = register(config, cycle.settings, record.run_id, best, batch, cycle.schema, decision, champion)
    failpoints.reached("registered")
    verdict = promotion_verdict(best.evaluation, champion.version if champion else None, config.policy,
                                config.lifelong.forgetting_budget)
    promotion = promote(config, cycle.settings, version, verdict, expected_champion)
    failpoints.reached("promoted")
    matrix, learnt = best.matrix, best.memory
    if not promotion.promoted and champion is not None:  # the champion stays in service
        matrix = score_windows(champion.model, windows, cycle.schema, champion.concept, cycle.metric)
        if best.concept != champion.concept:  # the champion's concept goes on: its memory learns the batch
            learnt = remember(in_service, batch, train_idx, config)
    # The matrix as kept (the oldest windows dropped) is the one its metrics are measured on.
    change = step_change(config, windows, matrix, promotion.champion_version, learnt, cycle.schema)
    record_adaptation(record, decision, promotion, best, trials)
    record.learned_rows = learned_after(decision, promotion, best, history, champion)
    record.unlearned_rows = 0
    finish_step(cycle, matrix, best.evaluation.challenger_accuracy, cycle.store.report_dir(batch.id))
    return change


def candidates_for(decision: Decision, history: list[CycleRecord], config: PipelineConfig,
                   champion: Champion | None, new_rows: int) -> list[Candidate]:
    """The candidates to train: the policy's choice and, within the cost budget, others (by evidence:
    the last winner first), each cost estimated from the cost ledger."""
    concept = champion.concept if champion else None
    rows = {kind: estimated_rows(kind, history, config, concept, new_rows) for kind in Candidate}
    plan = candidate_plan(decision, config.policy, champion is not None, estimated_costs(history, rows),
                          last_winner(history))
    # Retrains that would learn from the same batches are trained once: a window of one batch is the
    # batch alone, and a window holding the concept's whole history is that history (which, kept,
    # gives the evidence whether it holds).
    once: dict[frozenset[str], Candidate] = {}
    for kind in sorted((k for k in plan if k is not Candidate.FINE_TUNE), key=SAME_ROWS_KEPT.index):
        once.setdefault(frozenset(r.batch for r in earlier_batches(kind, history, config, concept)), kind)
    # A champion that cannot continue learning has no fine-tune candidate.
    can_fine_tune = champion is not None and cannot_fine_tune(champion) is None
    return [kind for kind in plan if (kind is Candidate.FINE_TUNE and can_fine_tune) or kind in once.values()]


def cannot_fine_tune(champion: Champion | None) -> str | None:
    """Why the champion cannot be fine-tuned (None: it can, or there is none): it offers no way to
    continue learning (`partial_fit`, a booster to continue, gradient boosting's warm start)."""
    if champion is None or families.continuation(champion.model) is not None:
        return None
    return (f"champion v{champion.version} ({type(families.last_step(champion.model)).__name__}) cannot "
            "fine-tune (no partial_fit, no booster to continue from)")


# Which of several retrains on the same batches is trained.
SAME_ROWS_KEPT = [Candidate.RETRAIN_BATCH, Candidate.RETRAIN_ALL, Candidate.RETRAIN_GROWN,
                  Candidate.RETRAIN_WINDOW]


def train_candidate(cycle: Cycle, kind: Candidate, decision: Decision, in_service: ReplayMemory,
                    history: list[CycleRecord], windows: Windows) -> Challenger:
    """Train one candidate and measure it on the batch's holdout rows and on the earlier windows.

    `in_service`: the replay memory of the champion's concept."""
    config, batch, champion, schema = cycle.config, cycle.batch, cycle.champion, cycle.schema
    train_idx, holdout_idx = holdout_split(batch, config)
    concept = next_concept(windows.matrix, champion, decision, kind)
    memory = concept_memory(in_service, config, champion, concept)
    earlier = earlier_batches(kind, history, config, champion.concept if champion else None)
    kept = {w.batch for w in windows.matrix.windows}
    rows, trained_on = training_rows(kind, batch, train_idx, earlier, kept, config, memory)
    metric = cycle.metric
    with timed() as training:
        model = train(kind, rows, champion, schema, config, metric)
    with timed() as evaluating:
        evaluation = evaluate(model, champion, batch.frame.iloc[holdout_idx], schema, metric)
        evaluation.metric = metric
        matrix = score_windows(model, windows, schema, concept, metric)
        evaluation.forgetting = matrix.metrics(metric).concept_forgetting
        evaluation.forgetting_windows = concept_windows(matrix)
    learned = (champion_learned_rows(history, champion) + len(train_idx)
               if kind is Candidate.FINE_TUNE else rows.rows)
    return Challenger(kind, model, evaluation, concept, remember(memory, batch, train_idx, config), rows,
                      trained_on, learned, matrix, training.wall, training.cpu, evaluating.wall,
                      evaluating.cpu)


def chosen(cycle: Cycle, trials: list[Challenger], decision: Decision,
           windows: Windows) -> tuple[Challenger, str | None]:
    """The candidate kept (`policy.choose_by_history`: the best, unless the evidence of the concept's
    history says otherwise), moved to a new concept when that history conflicts with the batch; and
    the evidence in words."""
    history = next((t for t in trials if t.kind is Candidate.RETRAIN_ALL), None)
    metric = cycle.metric

    def noise_against(other: int) -> float:
        return metric.paired_noise(history.evaluation.holdout_y, history.evaluation.challenger_output,
                                   trials[other].evaluation.challenger_output, HISTORY_CONFLICT_SE)

    choice = choose_by_history([t.result(chosen=False) for t in trials],
                               cycle.config.lifelong.forgetting_budget, noise_against, decision.supersedes,
                               metric)
    best = trials[choice.kept]
    if choice.new_concept and cycle.champion is not None and best.concept == cycle.champion.concept:
        best = in_new_concept(best, windows, cycle)
        trials[choice.kept] = best
    return best, choice.evidence


def in_new_concept(challenger: Challenger, windows: Windows, cycle: Cycle) -> Challenger:
    """The challenger as the first model of a new concept: its forgetting measured on no earlier
    window, its replay memory the batch's training rows alone."""
    concept = max(windows.matrix.concepts() | {challenger.concept}) + 1
    matrix = challenger.matrix.last_in(concept)
    evaluation = replace(challenger.evaluation, forgetting=matrix.metrics(cycle.metric).concept_forgetting,
                         forgetting_windows=concept_windows(matrix))
    train_idx, _ = holdout_split(cycle.batch, cycle.config)
    memory = concept_memory(challenger.memory, cycle.config, cycle.champion, concept)
    return replace(challenger, concept=concept, matrix=matrix, evaluation=evaluation,
                   memory=remember(memory, cycle.batch, train_idx, cycle.config))


def chosen_decision(decision: Decision, best: Challenger, trials: list[Challenger], evidence: str | None,
                    champion: Champion | None) -> Decision:
    """The decision as carried out: the action of the candidate kept, its concept, and the reason
    with every candidate's accuracy when there were several, and the evidence about the history."""
    reason, m = decision.reason, judged_by(best.evaluation.metric)
    if len(trials) > 1:
        scores = ", ".join(f"{t.kind.value} {m.format(t.evaluation.challenger_accuracy)}"
                           + (" (chosen)" if t is best else "") for t in trials)
        reason += f"; candidates on {best.evaluation.holdout_rows} holdout rows: {scores}"
    if evidence:
        reason += f"; {evidence}"
    # A new concept starts when the challenger kept belongs to one (see `next_concept`, `chosen`).
    return replace(decision, action=best.kind.action, reason=reason,
                   supersedes=champion is not None and best.concept != champion.concept)


def champion_learned_rows(history: list[CycleRecord], champion: Champion | None) -> int:
    """Rows of its concept the champion learnt from: the ledger's count, else its version's tag."""
    growth = growth_of(history, 0)
    if growth is not None:
        return growth.learned_rows
    return (champion.learned_rows or 0) if champion else 0


def learned_after(decision: Decision, promotion: Promotion, best: Challenger, history: list[CycleRecord],
                  champion: Champion | None) -> int:
    """Rows the model in service after an adaptation learnt from; a data-growth attempt that was not
    promoted counts as learnt too, so the next one waits for the data to double again."""
    if promotion.promoted or decision.trigger is Trigger.DATA_GROWTH:
        return best.learned_rows
    return champion_learned_rows(history, champion)


def reuse_batch(cycle: Cycle, reuse: Reuse) -> StateChange | None:
    """Put a former champion back in service, with the replay memory it was registered with."""
    decision, matrix, record = reuse.decision, reuse.matrix, cycle.record
    version = decision.reuse_version or 0
    promotion = reinstate(cycle.config, cycle.settings, version, decision.reason, cycle.champion.version,
                          cycle.batch.id)
    failpoints.reached("promoted")
    train_idx, _ = holdout_split(cycle.batch, cycle.config)
    kept = replay_memory(cycle.config, cycle.settings, version, cycle.replay_quantiles)
    memory = remember(kept, cycle.batch, train_idx,
                      cycle.config)
    change = step_change(cycle.config, reuse.windows, matrix, version, memory) if promotion.promoted else None
    record.model_version, record.promoted, record.promotion = version, promotion.promoted, promotion.reason
    record.champion_version_after = promotion.champion_version
    record.learned_rows, record.unlearned_rows = reuse.learned_rows, 0
    finish_step(cycle, matrix, matrix.steps[-1].accuracy[cycle.batch.id], None)
    return change


def keep_batch(cycle: Cycle, growth: Growth | None) -> StateChange:
    """No adaptation: the batch still joins the windows and the champion's replay memory; its
    training rows count as not learnt yet (`growth`, as the policy saw it, this batch included)."""
    champion, record = cycle.champion, cycle.record
    train_idx, _ = holdout_split(cycle.batch, cycle.config)
    windows = load_windows(cycle)
    with timed() as evaluating:
        matrix = score_windows(champion.model, windows, cycle.schema, champion.concept, cycle.metric)
    memory = remember(memory_in_service(cycle), cycle.batch, train_idx, cycle.config)
    change = step_change(cycle.config, windows, matrix, champion.version, memory, cycle.schema)
    if growth is not None:
        record.learned_rows, record.unlearned_rows = growth.learned_rows, growth.new_rows
    record.add_eval_cost(evaluating.wall, evaluating.cpu)
    finish_step(cycle, matrix, record.champion_accuracy_before, None)
    return change


@cycle_flow(name="adapt")
def adapt(config_path: str, batch_ids: list[str], mode: str, reason: str = "",
          window_batches: int = 1, champion_version: int = 0,
          settings: Settings | None = None) -> list[CycleRecord]:
    """Carry out the adaptations the monitor requested (`perennial.drift.detected` or
    `perennial.data.grown`); `champion_version` 0 means none.

    The ledger, not the event, says what to do: a batch is adapted only while its latest line is the
    monitor's request, and only as requested (action and champion); anything else -- a redelivered
    event, a forged one -- is refused with the reason in the run's log, and changes nothing.
    """
    model = Cycle.open(config_path, settings)
    logger = run_logger()
    done = []
    with model.store.lock(model.settings.lock_wait_seconds, holder=f"adapt of {model.name}"):
        model.store.check()
        check_reachable(model.settings)
        for batch_id in batch_ids:
            record = model.store.record(batch_id)
            refusal = refusal_of(batch_id, record, mode, champion_version)
            if refusal:
                logger.warning("adaptation of %s refused: %s", batch_id, refusal)
                continue
            done.append(adapt_requested(model, record))
    return done


def refusal_of(batch_id: str, record: CycleRecord | None, mode: str, champion_version: int) -> str | None:
    """Why an adaptation asked for must not run, or None when it is the one the monitor requested."""
    if record is None:
        return f"batch {batch_id} has not been monitored (not in the ledger)"
    if record.status != REQUESTED:
        outcome = f", v{record.model_version}" if record.model_version else ""
        return (f"batch {batch_id} is not awaiting an adaptation (its decision: {record.decision}{outcome}, "
                f"{record.status}); a redelivered or forged event changes nothing")
    if mode != record.decision:
        return f"the monitor requested {record.decision} for batch {batch_id}, not {mode!r}"
    if champion_version != (record.champion_version_before or 0):
        return (f"the monitor requested it against champion v{record.champion_version_before or 0}, "
                f"not v{champion_version}")
    return None


def adapt_requested(model: Cycle, record: CycleRecord) -> CycleRecord:
    """Carry out an adaptation the monitor recorded as requested, against the champion it decided
    against (check-and-set); its ledger line becomes the outcome."""
    expected = record.champion_version_before
    cycle = model.on(load_batch(Path(record.path), model.config), model.store.schema(),
                     load_version(model.config, model.settings, expected))
    cycle.record = record
    change = adapt_batch(cycle, record.recorded_decision(), expected)
    return finish_cycle(cycle, None, change)
