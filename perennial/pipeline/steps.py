"""Steps both flows take: short sequences of tasks."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from perennial.adapters.evidently_workspace import location_of
from perennial.adapters.mlflow_registry import Tag, run_url
from perennial.adapters.plots import accuracy_heatmap
from perennial.adapters.prefect_logs import run_logger
from perennial.core.lifelong import AccuracyMatrix
from perennial.core.state import StateChange
from perennial.core.types import ChampionScore, CycleRecord, DriftResult, ValidationResult
from perennial.pipeline.context import Cycle
from perennial.pipeline.records import record_cycle, step_metrics
from perennial.pipeline.tasks import (
    add_drift_run,
    link_report,
    log_champion_score,
    log_lifelong,
    log_report,
    publish_cycle,
    score_rejected,
    write_report,
)


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
    keep_drift_run(cycle, drift)
    record_cycle(cycle.store, record, change)
    run_logger().info("%s -> %s (%s): %s", record.batch, record.decision, record.status, record.reason)
    publish_report(cycle)
    return record


def keep_drift_run(cycle: Cycle, drift: DriftResult | None) -> None:
    """The batch's drift run in the model's Evidently workspace (`drift.workspace`), before the commit
    so that a rerun after a crash replaces it. A workspace that cannot take it is a warning: it is a
    view, and the batch's decision stands."""
    location = location_of(cycle.config.drift, cycle.config.base_dir, cycle.settings.state_dir)
    if location is None or drift is None or drift.evidently_run is None:
        return
    batch = cycle.record.batch
    try:
        add_drift_run(location, cycle.name, batch, drift.evidently_run, cycle.store.report_dir(batch))
    except Exception as exc:  # a server down, a folder not writable: the cycle goes on
        run_logger().warning("the Evidently workspace %s did not take the drift run of %s: %s",
                             location, batch, first_line(exc))


def publish_report(cycle: Cycle) -> None:
    """The model's report page, rewritten from the ledger after every cycle into the state folder,
    logged on the run of the model's latest version in MLflow and linked from a Prefect artifact. A
    page that cannot be written or logged is a warning: the cycle is committed already."""
    if not cycle.config.report.every_cycle:
        return
    page = cycle.store.report_page
    try:
        write_report(page, cycle.name, cycle.store.records(), cycle.store.matrix())
        link_report(cycle.name, page.resolve().as_uri(), log_report(cycle.name, cycle.settings, page))
    except Exception as exc:
        run_logger().warning("the report page of %s was not updated: %s", cycle.name, first_line(exc))


def first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"
