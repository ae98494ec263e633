"""The ledger line of a cycle: built once decided, completed by the adaptation, committed at the end."""

from __future__ import annotations

from dataclasses import asdict, replace

from perennial.core import failpoints
from perennial.core.lifelong import AccuracyMatrix
from perennial.core.metrics import Metric
from perennial.core.state import STARTED, StateChange, StateStore
from perennial.core.types import (
    Batch,
    Challenger,
    Champion,
    CycleRecord,
    Decision,
    DriftResult,
    Promotion,
    ValidationResult,
)


def cycle_record(batch: Batch, validation: ValidationResult, drift: DriftResult | None,
                 decision: Decision, champion: Champion | None, run_id: str, metric: Metric) -> CycleRecord:
    """The ledger line of a cycle as known once decided; adapting fills in the model fields."""
    return CycleRecord(
        batch=batch.id, path=str(batch.path), rows=batch.rows, sha256=batch.sha256,
        validation="passed" if validation.success else "failed",
        drift_share=drift.drift_share if drift else None,
        champion_accuracy_before=drift.champion_accuracy if drift else None,
        decision=decision.action, reason=decision.reason, supersedes=decision.supersedes, run_id=run_id,
        window_batches=decision.window_batches, reuse_version=decision.reuse_version,
        trigger=decision.trigger.value, champion_version_before=champion.version if champion else None,
        champion_version_after=champion.version if champion else None,
        drifted_columns=drift.drifted_columns if drift else [],
        shifts=validation.shifts, shifted_columns=validation.shifted_columns, unusable=validation.unusable,
        release_reason=validation.release_reason, metric=metric.name,
    )


def with_release(decision: Decision, validation: ValidationResult) -> Decision:
    """A released batch's decision says so first: `released (<reason>): ...`."""
    if validation.release_reason is None:
        return decision
    return replace(decision, reason=f"released ({validation.release_reason}): {decision.reason}")


def record_adaptation(record: CycleRecord, decision: Decision, promotion: Promotion, best: Challenger,
                      trials: list[Challenger]) -> None:
    """An adaptation's outcome on its ledger line: the decision as carried out, every candidate, and
    the cost of training and evaluating them all."""
    record.decision, record.reason = decision.action, decision.reason
    record.supersedes, record.trigger = decision.supersedes, decision.trigger.value
    record.model_version, record.promoted = promotion.version, promotion.promoted
    record.promotion, record.champion_version_after = promotion.reason, promotion.champion_version
    record.challenger_accuracy = best.evaluation.challenger_accuracy
    record.candidates = [asdict(t.result(chosen=t is best)) for t in trials]
    record.train_seconds = round(sum(t.train_seconds for t in trials), 3)
    record.train_cpu_seconds = round(sum(t.train_cpu_seconds for t in trials), 3)
    for t in trials:
        record.add_eval_cost(t.eval_seconds, t.eval_cpu_seconds)
    record.trained_rows = best.rows.rows
    record.status = "done"


def step_metrics(record: CycleRecord, matrix: AccuracyMatrix, accuracy_reached: float | None,
                 metric: Metric) -> dict:
    """The cost ledger and lifelong metrics of a cycle, also set on its ledger line; MLflow's keys name
    the metric (`rmse_reached`, `avg_rmse`, `candidate.fine_tune.rmse`)."""
    lifelong = matrix.metrics(metric)
    record.concept = matrix.steps[-1].concept
    record.avg_accuracy, record.bwt = lifelong.average_accuracy, lifelong.backward_transfer
    record.forgetting = lifelong.forgetting
    name = metric.name
    candidates = {f"candidate.{c['kind']}.{name if key == 'accuracy' else key}": c[key]
                  for c in record.candidates
                  for key in ("accuracy", "forgetting", "train_cpu_seconds", "rows")}
    lifelong_metrics = {f"avg_{name}" if key == "avg_accuracy" else key: value
                        for key, value in lifelong.as_metrics().items()}
    return {"train_seconds": record.train_seconds, "train_cpu_seconds": record.train_cpu_seconds,
            "eval_seconds": record.eval_seconds, "eval_cpu_seconds": record.eval_cpu_seconds,
            "trained_rows": record.trained_rows, f"{name}_reached": accuracy_reached,
            **lifelong_metrics, **candidates}


def record_intent(store: StateStore, record: CycleRecord) -> None:
    """Record the decision before any side effect: a run after a crash resumes it, not decides again."""
    store.append(replace(record, status=STARTED))
    failpoints.reached("decided")


def record_cycle(store: StateStore, record: CycleRecord, change: StateChange | None) -> None:
    """Commit the cycle's state with its ledger line; from here on the batch is never processed again."""
    store.commit(record, change)


