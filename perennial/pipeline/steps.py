"""Steps both flows take: short sequences of tasks."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from perennial.adapters.mlflow_registry import Tag, run_url
from perennial.adapters.plots import accuracy_heatmap
from perennial.adapters.prefect_logs import run_logger
from perennial.core.lifelong import AccuracyMatrix
from perennial.core.state import StateChange
from perennial.core.types import ChampionScore, CycleRecord, DriftResult, ValidationResult
from perennial.pipeline.context import Cycle
from perennial.pipeline.records import record_cycle, step_metrics
from perennial.pipeline.tasks import log_champion_score, log_lifelong, publish_cycle, score_rejected


def note_champion_score(cycle: Cycle, score: ChampionScore | None) -> None:
    """A rejected batch's ledger line, reason and MLflow run gain the champion's accuracy on it."""
    record = cycle.record
    if score is None:
        return
    record.champion_accuracy_before = score.accuracy
    record.reason = f"{record.reason}; {score.describe()}"
    if record.run_id:
        log_champion_score(cycle.settings, record.run_id, score.accuracy, record.reason, record.metric)


def reject_batch(cycle: Cycle, validation: ValidationResult) -> None:
    """An invalid batch goes to quarantine with its failures; the champion is scored on it if it can be."""
    note_champion_score(cycle, score_rejected(cycle.champion, cycle.batch, cycle.schema, cycle.metric))
    cycle.record.quarantined_to = str(cycle.store.quarantine(cycle.batch.path, {
        "batch": cycle.batch.id, "failures": validation.failures, "shifts": validation.shifts,
        "great_expectations": validation.report}))


def finish_step(cycle: Cycle, matrix: AccuracyMatrix, accuracy_reached: float | None,
                heatmap_dir: Path | None) -> None:
    """Put the cycle's cost and lifelong metrics on its ledger line and in its MLflow run; with
    `heatmap_dir` (after a training), the accuracy matrix as a table and a heatmap too."""
    record = cycle.record
    metrics = step_metrics(record, matrix, accuracy_reached, cycle.metric)
    if not record.run_id:
        return
    heatmap = accuracy_heatmap(matrix, heatmap_dir / "accuracy_matrix.png") if heatmap_dir else None
    # The decision as carried out (an adaptation may keep another candidate than the policy's).
    tags = {Tag.DECISION: record.decision, Tag.REASON: record.reason[:4000]}
    log_lifelong(cycle.settings, record.run_id, metrics, matrix if heatmap_dir else None, heatmap, tags)


def finish_cycle(cycle: Cycle, drift: DriftResult | None = None,
                 change: StateChange | None = None) -> CycleRecord:
    """Publish the cycle's artifacts and events, then commit its state and ledger line."""
    record, settings = cycle.record, cycle.settings
    record.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    publish_cycle(cycle.name, record, drift, run_url(settings, record.run_id) if record.run_id else None)
    record_cycle(cycle.store, record, change)
    run_logger().info("%s -> %s (%s): %s", record.batch, record.decision, record.status, record.reason)
    return record
