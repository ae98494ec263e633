"""The continuous-training loop: one cycle per new batch, each decided, explained and recorded."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Literal

from prefect.runtime import flow_run

from perennial.adapters import batch_files
from perennial.adapters.batch_files import has_labels, holdout_split
from perennial.adapters.mlflow_registry import champion_version, check_reachable
from perennial.core import policy
from perennial.core.config import ConfigError, PipelineConfig, Settings
from perennial.core.files import disk_error
from perennial.core.policy import (
    batches_since_adaptation,
    fine_tunes_since_retrain,
    growth_of,
    reference_accuracy,
)
from perennial.core.schema import first_model_problem
from perennial.core.state import REQUESTED, StateChange
from perennial.core.timing import timed
from perennial.core.types import (
    Action,
    Batch,
    BatchError,
    CycleRecord,
    Decision,
    DiskError,
    DriftResult,
    Growth,
    OutageError,
    RegistryError,
    StateError,
    ValidationResult,
)
from perennial.pipeline.context import Cycle
from perennial.pipeline.flows.adapt import (
    adapt_batch,
    adapt_requested,
    cannot_fine_tune,
    keep_batch,
    reuse_batch,
)
from perennial.pipeline.flows.labels import note_labels, realised_when_served, serve_unlabelled, take_labels
from perennial.pipeline.lifelong import Reuse, resumed_reuse
from perennial.pipeline.records import cycle_record, record_intent, with_release
from perennial.pipeline.steps import finish_cycle, first_line, reject_batch
from perennial.pipeline.tasks import (
    cycle_flow,
    find_new_batches,
    find_reusable,
    load_batch,
    load_champion,
    load_version,
    log_cycle,
    measure_drift,
    request_adaptation,
    validate_batch,
    without_heartbeats,
)

Mode = Literal["embedded", "deployed"]


@cycle_flow(name="continuous-training")
def continuous_training(config_path: str, mode: Mode = "embedded",
                        settings: Settings | None = None) -> list[CycleRecord]:
    """Process every batch the ledger does not list yet, oldest name first, holding the model's lock.

    Embedded: adapt in this run (and finish adaptations a deployed run left requested). Deployed:
    emit `perennial.drift.detected` and let the `adapt` deployment do it, one adaptation at a time.
    """
    model = Cycle.open(config_path, settings)
    wait = model.settings.lock_wait_seconds if mode == "deployed" else 0.0
    with model.store.lock(wait, holder=f"monitor of {model.name}"):
        model.store.check()
        model.store.check_source(model.config.source_pattern(), model.config.config_file, claim=True)
        check_reachable(model.settings)
        records = [] if mode == "deployed" else [
            adapt_requested(model, r) for r in model.store.records() if r.status == REQUESTED]
        with without_heartbeats():  # each batch's subflow: this run's heartbeat covers it
            records += [guarded_cycle(model, path, mode)
                        for path in find_new_batches(model.config, model.store.processed())]
            # Then labels, which may complete a batch served earlier or in this run.
            return records + take_labels(model, lambda path: guarded_cycle(model, path, mode))


def guarded_cycle(model: Cycle, path: Path, mode: Mode) -> CycleRecord:
    """A cycle; when it fails the same way twice on a batch, the batch is quarantined with the error
    and the stream goes on (an outage, a held lock or an untrusted registry are never the batch's
    fault: they fail the run and the batch waits)."""
    try:
        return training_cycle(model.config, model.settings, path, mode)
    except (StateError, RegistryError, OutageError, ConfigError, DiskError):
        raise
    except Exception as exc:
        if (disk := disk_error(exc)) is not None:
            raise batch_waits(disk, model, path) from None
        error = first_line(exc)
        if not model.store.note_failure(path.name, error):
            raise
        return reject_unreadable(model, path, f"its cycle failed twice the same way ({error}); quarantined "
                                 "so the batches after it go on")


def batch_waits(disk: OSError, model: Cycle, path: Path) -> DiskError:
    """A disk that refused a write stops the run; the batch is not to blame and waits."""
    where = disk.filename or (f"a disk this run writes to (state folder {model.settings.state_dir.resolve()} "
                              f"or temporary files in {tempfile.gettempdir()})")
    return DiskError(f"{where}: {disk.strerror}; nothing of batch {path.name} was kept, it waits: free space "
                     "and run again")


def _cycle_name() -> str:
    return f"cycle-{Path(flow_run.parameters['batch_path']).name}"


@cycle_flow(name="training-cycle", flow_run_name=_cycle_name)
def training_cycle(config: PipelineConfig, settings: Settings, batch_path: Path,
                   mode: Mode = "embedded") -> CycleRecord:
    """Load -> validate -> detect drift -> decide (or reuse a former champion) -> adapt -> evaluate
    -> register -> promote. A batch whose cycle crashed after deciding carries out that decision."""
    model = Cycle.open(config, settings)
    try:
        batch = load_batch(model.store.judged_file(batch_path), config)
    except BatchError as exc:
        return reject_unreadable(model, batch_path, str(exc))
    if not has_labels(batch, config):
        return serve_unlabelled(model, batch)
    intent = model.store.intent(batch.id)
    cycle = judged_against(model, batch, intent)
    validation, drift = check_batch(cycle)
    growth = growth_of(cycle.store.records(), new_rows=len(holdout_split(cycle.batch, config)[0]))
    if intent is None:
        decision, reuse = decide_cycle(cycle, validation, drift, growth)
    else:
        decision, reuse = resume_cycle(cycle, intent, validation, drift)
    change = carry_out(cycle, decision, reuse, validation, drift, growth, mode)
    if (served := model.store.served(batch.id)) is not None:  # its labels arrived after it was served
        change = note_labels(cycle, served, change)
    return finish_cycle(cycle, drift, change)


def judged_against(model: Cycle, batch: Batch, intent: CycleRecord | None) -> Cycle:
    """The batch's context: its schema, and the champion it is judged against (a resumed cycle's is
    the one it decided against, even if it promoted another since)."""
    champion = load_version(model.config, model.settings, intent.champion_version_before) if intent \
        else load_champion(model.config, model.settings)
    return model.on(batch, batch_files.resolve_schema(batch, model.config, model.store.schema()), champion)


def check_batch(cycle: Cycle) -> tuple[ValidationResult, DriftResult | None]:
    """Validate the batch; when it passes and a champion exists, measure its drift and the champion's
    accuracy on it (against the accuracy of recent batches)."""
    config, store, batch, champion = cycle.config, cycle.store, cycle.batch, cycle.champion
    validation = validate_batch(batch, cycle.schema, champion.reference if champion else None,
                                config.validation, store.release_reason(batch.id))
    if champion is None and validation.success:
        train_rows = batch.frame.iloc[holdout_split(batch, config)[0]]
        if problem := first_model_problem(train_rows, config.data.target, cycle.schema.task):
            validation = validation.refused(problem)
    if champion is None or not validation.success:
        return validation, None
    metric = cycle.metric
    reference = reference_accuracy(store.records(), config.policy.reference_batches, champion, metric)
    drift = measure_drift(batch, cycle.schema, champion, reference, config.drift,
                          store.report_dir(batch.id) / "drift_report.html", metric)
    drift.add_shifts(validation.shifted_columns)
    return validation, drift


def decide_cycle(cycle: Cycle, validation: ValidationResult, drift: DriftResult | None,
                 growth: Growth | None) -> tuple[Decision, Reuse | None]:
    """Decide (a former champion first, when its concept returned), open the batch's MLflow run and
    record the decision as the batch's intent before anything else changes."""
    history, config = cycle.store.records(), cycle.config
    decision = policy.decide(validation, drift, fine_tunes_since_retrain(history), config.policy,
                      config.training.window_batches, batches_since_adaptation(history), growth)
    decision = policy.without_fine_tune(decision, cannot_fine_tune(cycle.champion),
                                        config.training.window_batches)
    if (served := cycle.store.served(cycle.batch.id)) is not None:  # the gap between estimate and realised
        realised = realised_when_served(cycle, served, drift)
        decision = policy.without_fine_tune(
            policy.with_gap(decision, served.estimate, drift, fine_tunes_since_retrain(history),
                            config.policy, config.training.window_batches, batches_since_adaptation(history),
                            realised, served.champion_version_before),
            cannot_fine_tune(cycle.champion), config.training.window_batches)
    with timed() as searching:  # scoring former champions is evaluation cost
        reuse = find_reusable(cycle, drift, validation, decision)
    decision = with_release(reuse.decision if reuse else decision, validation)
    run_id = log_cycle(config, cycle.settings, cycle.batch.id, cycle.batch.rows, validation, drift, decision,
                       cycle.store.attempt(cycle.batch.id))
    cycle.record = cycle_record(cycle.batch, validation, drift, decision, cycle.champion, run_id,
                                cycle.metric)
    cycle.record.add_eval_cost(searching.wall, searching.cpu)
    if served is not None:
        cycle.record.estimate = served.estimate  # with the realised metric of the model that served it
    record_intent(cycle.store, cycle.record)
    return decision, reuse


def resume_cycle(cycle: Cycle, intent: CycleRecord, validation: ValidationResult,
                 drift: DriftResult | None) -> tuple[Decision, Reuse | None]:
    """The decision a crashed cycle recorded, to carry out as it was."""
    decision = intent.recorded_decision()
    cycle.record = cycle_record(cycle.batch, validation, drift, decision, cycle.champion, intent.run_id or "",
                                cycle.metric)
    cycle.record.estimate = intent.estimate  # labels that arrived later: with the realised metric
    return decision, resumed_reuse(cycle, decision)


def carry_out(cycle: Cycle, decision: Decision, reuse: Reuse | None, validation: ValidationResult,
              drift: DriftResult | None, growth: Growth | None, mode: Mode) -> StateChange | None:
    """Reject, keep, reuse, or adapt (in deployed mode: ask the `adapt` deployment to); returns what
    the cycle keeps in its state."""
    record, champion = cycle.record, cycle.champion
    if decision.action is Action.REJECT:
        return reject_batch(cycle, validation)
    if decision.action is Action.NOOP:
        return keep_batch(cycle, growth)
    if decision.action is Action.REUSE:
        return reuse_batch(cycle, reuse)
    schema = cycle.schema.with_classes(validation.new_classes)
    if mode == "deployed":
        record.status = request_adaptation(cycle.name, record, decision, drift, champion)
        return StateChange(schema=schema)
    return adapt_batch(replace(cycle, schema=schema), decision, champion.version if champion else None)


def reject_unreadable(model: Cycle, path: Path, error: str) -> CycleRecord:
    """A batch that cannot even be read is rejected and quarantined like an invalid one."""
    config, store = model.config, model.store
    validation = ValidationResult(success=False, failures=[error], expectations=0)
    decision = policy.decide(validation, None, 0, config.policy, config.training.window_batches)
    run_id = log_cycle(config, model.settings, path.name, 0, validation, None, decision,
                       store.attempt(path.name))
    champion = champion_version(config.name, model.settings)
    quarantined = store.quarantine(path, {"batch": path.name, "failures": [error]}) if path.exists() else None
    record = CycleRecord(
        batch=path.name, path=str(path), rows=0, validation="unreadable", drift_share=None,
        champion_accuracy_before=None, decision=decision.action, reason=decision.reason,
        champion_version_after=int(champion.version) if champion else None, run_id=run_id,
        quarantined_to=str(quarantined) if quarantined else None, unusable=[error],
    )
    return finish_cycle(replace(model, record=record))
