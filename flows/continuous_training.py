"""The continuous-training loop: one cycle per new batch, each decided, explained and recorded."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from perennial.config import PipelineConfig, Settings, load_config
from perennial.state import StateStore
from perennial.types import (
    Action,
    Batch,
    BatchError,
    Champion,
    CycleRecord,
    Decision,
    Schema,
    ValidationResult,
)
from tasks.decide import decide, fine_tunes_since_retrain
from tasks.drift import measure_drift
from tasks.evaluate import evaluate
from tasks.load import find_new_batches, load_batch, resolve_schema, split_holdout
from tasks.registry import champion_version, load_champion, log_cycle, promote, register, run_url
from tasks.report import cycle_record, publish_cycle, record_cycle
from tasks.train import train, training_rows
from tasks.validate import validate_batch


@flow(name="continuous-training")
def continuous_training(config_path: str) -> list[CycleRecord]:
    """Process every batch the ledger does not list yet, oldest name first."""
    config = load_config(config_path)
    settings = Settings()
    store = StateStore(settings.state_dir, config.name)
    return [training_cycle(config, settings, path)
            for path in find_new_batches(config, store.processed())]


def _cycle_name() -> str:
    return f"cycle-{Path(flow_run.parameters['batch_path']).name}"


@flow(name="training-cycle", flow_run_name=_cycle_name)
def training_cycle(config: PipelineConfig, settings: Settings, batch_path: Path) -> CycleRecord:
    """Load -> validate -> detect drift -> decide -> adapt -> evaluate -> register -> promote."""
    store = StateStore(settings.state_dir, config.name)
    try:
        batch = load_batch(batch_path, config)
    except BatchError as exc:
        return reject_unreadable(config, settings, store, batch_path, str(exc))
    schema = resolve_schema(batch, config, store.schema())
    champion = load_champion(config, settings)
    validation = validate_batch(batch, schema, champion.reference if champion else None, config.validation)
    drift = None
    if champion is not None and validation.success:
        drift = measure_drift(batch, schema, champion, config.drift,
                              store.report_dir(batch.id) / "drift_report.html")
    history = store.records()
    decision = decide(validation, drift, fine_tunes_since_retrain(history), config.policy,
                      config.training.window_batches)
    run_id = log_cycle(config, settings, batch.id, batch.rows, validation, drift, decision)
    record = cycle_record(batch, validation, drift, decision, champion, run_id)

    if decision.action is Action.REJECT:
        record.quarantined_to = str(store.quarantine(batch.path, {
            "batch": batch.id, "failures": validation.failures, "great_expectations": validation.report}))
    elif decision.action is Action.NOOP:
        store.save_schema(schema)
    else:
        adapt(config, settings, store, batch, schema.with_classes(validation.new_classes), decision,
              champion, history, record)
    return finish_cycle(config, settings, store, record, drift)


def adapt(config: PipelineConfig, settings: Settings, store: StateStore, batch: Batch, schema: Schema,
          decision: Decision, champion: Champion | None, history: list[CycleRecord],
          record: CycleRecord) -> None:
    """Train a challenger, compare it with the champion on held-out rows, register, promote."""
    train_idx, holdout_idx = split_holdout(batch.id, batch.rows, config.training.holdout_fraction,
                                           config.training.seed)
    rows, trained_on = training_rows(batch, train_idx, decision, history, config)
    challenger = train(decision, rows, champion, schema, config)
    evaluation = evaluate(challenger, champion, batch.frame.iloc[holdout_idx], schema)
    reference = rows.sample(min(len(rows), config.drift.reference_rows), random_state=0)
    version = register(config, settings, record.run_id, challenger, batch, schema, decision, evaluation,
                       trained_on, reference, champion)
    promotion = promote(config, settings, version, evaluation, champion)
    store.save_schema(schema)
    record.model_version, record.promoted, record.promotion = version, promotion.promoted, promotion.reason
    record.challenger_accuracy = evaluation.challenger_accuracy
    record.champion_version_after = promotion.champion_version


def finish_cycle(config: PipelineConfig, settings: Settings, store: StateStore, record: CycleRecord,
                 drift=None) -> CycleRecord:
    """Publish the cycle's artifacts, then write its ledger line: the batch is done."""
    record.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    publish_cycle(config.name, record, drift, run_url(settings, record.run_id) if record.run_id else None)
    record_cycle(store, record)
    get_run_logger().info("%s -> %s: %s", record.batch, record.decision, record.reason)
    return record


def reject_unreadable(config: PipelineConfig, settings: Settings, store: StateStore, path: Path,
                      error: str) -> CycleRecord:
    """A batch that cannot even be read is rejected and quarantined like an invalid one."""
    validation = ValidationResult(success=False, failures=[error], expectations=0)
    decision = decide.fn(validation, None, 0, config.policy, config.training.window_batches)
    run_id = log_cycle(config, settings, path.name, 0, validation, None, decision)
    champion = champion_version(config.name, settings)
    quarantined = store.quarantine(path, {"batch": path.name, "failures": [error]}) if path.exists() else None
    record = CycleRecord(
        batch=path.name, path=str(path), rows=0, validation="unreadable", drift_share=None,
        champion_accuracy_before=None, decision=decision.action.value, reason=decision.reason,
        champion_version_after=int(champion.version) if champion else None, run_id=run_id,
        quarantined_to=str(quarantined) if quarantined else None,
    )
    return finish_cycle(config, settings, store, record)
