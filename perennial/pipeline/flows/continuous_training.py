"""The continuous-training loop: one cycle per new batch, each decided, explained and recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect.runtime import flow_run

from perennial.adapters.batch_files import holdout_split
from perennial.adapters.mlflow_registry import champion_version, check_reachable
from perennial.core.config import PipelineConfig, Settings, load_config
from perennial.core.policy import (
    batches_since_adaptation,
    fine_tunes_since_retrain,
    growth_of,
    reference_accuracy,
)
from perennial.core.state import REQUESTED, StateChange, StateStore
from perennial.core.timing import timed
from perennial.core.types import (
    Action,
    Batch,
    BatchError,
    Champion,
    CycleRecord,
    Decision,
    DriftResult,
    Growth,
    OutageError,
    RegistryError,
    Schema,
    StateError,
    ValidationResult,
)
from perennial.pipeline.flows.adapt import adapt_batch, adapt_requested, keep_batch, reuse_batch
from perennial.pipeline.lifelong import Reuse, resumed_reuse
from perennial.pipeline.records import cycle_record, with_release
from perennial.pipeline.steps import finish_cycle, note_champion_score
from perennial.pipeline.tasks import (
    cycle_flow,
    decide,
    find_new_batches,
    find_reusable,
    load_batch,
    load_champion,
    load_version,
    log_cycle,
    measure_drift,
    record_intent,
    request_adaptation,
    resolve_schema,
    score_rejected,
    validate_batch,
)


@cycle_flow(name="continuous-training")
def continuous_training(config_path: str,
                        mode: Literal["embedded", "deployed"] = "embedded") -> list[CycleRecord]:
    """Process every batch the ledger does not list yet, oldest name first, holding the model's lock.

    Embedded: adapt in this run (and finish adaptations a deployed run left requested). Deployed:
    emit `perennial.drift.detected` and let the `adapt` deployment do it, one adaptation at a time.
    """
    config = load_config(config_path)
    settings = Settings()
    store = StateStore(settings.state_dir, config.name)
    wait = settings.lock_wait_seconds if mode == "deployed" else 0.0
    with store.lock(wait, holder=f"monitor of {config.name}"):
        store.check()
        check_reachable(settings)
        records = [] if mode == "deployed" else [
            adapt_requested(config, settings, store, r) for r in store.records() if r.status == REQUESTED]
        return records + [guarded_cycle(config, settings, store, path, mode)
                          for path in find_new_batches(config, store.processed())]


def guarded_cycle(config: PipelineConfig, settings: Settings, store: StateStore, path: Path,
                  mode: str) -> CycleRecord:
    """A cycle; when it fails the same way twice on a batch, the batch is quarantined with the error
    and the stream goes on (an outage, a held lock or an untrusted registry are never the batch's
    fault: they fail the run and the batch waits)."""
    try:
        return training_cycle(config, settings, path, mode)
    except (StateError, RegistryError, OutageError):
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"
        if not store.note_failure(path.name, error):
            raise
        return reject_unreadable(config, settings, store, path,
                                 f"its cycle failed twice the same way ({error}); quarantined so the "
                                 "batches after it go on")


def _cycle_name() -> str:
    return f"cycle-{Path(flow_run.parameters['batch_path']).name}"


@cycle_flow(name="training-cycle", flow_run_name=_cycle_name)
def training_cycle(config: PipelineConfig, settings: Settings, batch_path: Path,
                   mode: str = "embedded") -> CycleRecord:
    """Load -> validate -> detect drift -> decide (or reuse a former champion) -> adapt -> evaluate
    -> register -> promote. A batch whose cycle crashed after deciding carries out that decision."""
    store = StateStore(settings.state_dir, config.name)
    try:
        batch = load_batch(batch_path, config)
    except BatchError as exc:
        return reject_unreadable(config, settings, store, batch_path, str(exc))
    intent = store.intent(batch.id)
    schema = resolve_schema(batch, config, store.schema())
    # A resumed cycle is judged against the champion it decided against, even if it promoted since.
    champion = load_version(config, settings, intent.champion_version_before) if intent \
        else load_champion(config, settings)
    validation = validate_batch(batch, schema, champion.reference if champion else None, config.validation,
                                store.release_reason(batch.id))
    history = store.records()
    drift = None
    if champion is not None and validation.success:
        drift = measure_drift(batch, schema, champion,
                              reference_accuracy(history, config.policy.reference_batches, champion),
                              config.drift, store.report_dir(batch.id) / "drift_report.html")
        drift.add_shifts(validation.shifted_columns)
    train_idx, _ = holdout_split(batch, config)
    growth = growth_of(history, new_rows=len(train_idx))
    if intent is None:
        decision, reuse, record = decide_cycle(config, settings, store, batch, schema, champion, validation,
                                               drift, history, growth)
    else:
        decision = intent.recorded_decision()
        reuse = resumed_reuse(config, settings, store, batch, schema, decision)
        record = cycle_record(batch, validation, drift, decision, champion, intent.run_id or "")
    change = None
    if decision.action is Action.REJECT:
        note_champion_score(settings, record, score_rejected(champion, batch, schema))
        record.quarantined_to = str(store.quarantine(batch.path, {
            "batch": batch.id, "failures": validation.failures, "shifts": validation.shifts,
            "great_expectations": validation.report}))
    elif decision.action is Action.NOOP:
        change = keep_batch(config, settings, store, batch, schema, champion, record, growth)
    elif decision.action is Action.REUSE:
        change = reuse_batch(config, settings, store, batch, reuse, champion, record)
    elif mode == "deployed":
        change = StateChange(schema=schema.with_classes(validation.new_classes))
        record.status = request_adaptation(config.name, record, decision, drift, champion)
    else:
        change = adapt_batch(config, settings, store, batch, schema.with_classes(validation.new_classes),
                             decision, champion, champion.version if champion else None, record)
    return finish_cycle(config.name, settings, store, record, drift, change)


def decide_cycle(config: PipelineConfig, settings: Settings, store: StateStore, batch: Batch, schema: Schema,
                 champion: Champion | None, validation: ValidationResult, drift: DriftResult | None,
                 history: list[CycleRecord],
                 growth: Growth | None) -> tuple[Decision, Reuse | None, CycleRecord]:
    """Decide (a former champion first, when its concept returned), open the batch's MLflow run and
    record the decision as the batch's intent before anything else changes."""
    decision = decide(validation, drift, fine_tunes_since_retrain(history), config.policy,
                      config.training.window_batches, batches_since_adaptation(history), growth)
    with timed() as searching:  # scoring former champions is evaluation cost
        reuse = find_reusable(config, settings, store, batch, schema, champion, drift, validation, decision)
    decision = with_release(reuse.decision if reuse else decision, validation)
    run_id = log_cycle(config, settings, batch.id, batch.rows, validation, drift, decision,
                       store.attempt(batch.id))
    record = cycle_record(batch, validation, drift, decision, champion, run_id)
    record.add_eval_cost(searching.wall, searching.cpu)
    record_intent(store, record)
    return decision, reuse, record


def reject_unreadable(config: PipelineConfig, settings: Settings, store: StateStore, path: Path,
                      error: str) -> CycleRecord:
    """A batch that cannot even be read is rejected and quarantined like an invalid one."""
    validation = ValidationResult(success=False, failures=[error], expectations=0)
    decision = decide(validation, None, 0, config.policy, config.training.window_batches)
    run_id = log_cycle(config, settings, path.name, 0, validation, None, decision, store.attempt(path.name))
    champion = champion_version(config.name, settings)
    quarantined = store.quarantine(path, {"batch": path.name, "failures": [error]}) if path.exists() else None
    record = CycleRecord(
        batch=path.name, path=str(path), rows=0, validation="unreadable", drift_share=None,
        champion_accuracy_before=None, decision=decision.action.value, reason=decision.reason,
        champion_version_after=int(champion.version) if champion else None, run_id=run_id,
        quarantined_to=str(quarantined) if quarantined else None, unusable=[error],
    )
    return finish_cycle(config.name, settings, store, record)
