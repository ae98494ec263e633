"""Labels that arrive later (`labels.source`): a batch served without its labels is watched now and
learnt from when they come.

Now: the batch is validated on its features, checked for feature drift and for drift of the champion's
predictions, and the champion's metric is estimated (`core.estimation`, calibrated on held-out windows
of the champion's concept); it is never trained on. Later: label files are read into the model's label
pool; a waiting batch whose labels cover `labels.min_coverage` of its rows is written with its labelled
rows and goes through the normal cycle (`training_cycle`), where the gap between the estimate and the
realised metric tells covariate shift from concept change (`policy.with_gap`). Its commit takes its
labels out of the pool with its ledger line, so each batch's labels are learnt from once, also after a
crash. A batch still short of labels after `labels.max_wait_batches` newer batches expires, as do
labels of no waiting batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from perennial.adapters.batch_files import (
    label_files,
    read_batch,
    read_label_file,
    write_labelled,
)
from perennial.adapters.prefect_logs import run_logger
from perennial.core import policy
from perennial.core.config import PolicyConfig
from perennial.core.estimation import EstimationError
from perennial.core.evaluation import score
from perennial.core.files import file_sha256
from perennial.core.labels import LabelError, LabelPool, class_mix, ids, join_labels, labelled_rows
from perennial.core.policy import reference_accuracy
from perennial.core.sampling import batch_seed, uniform_rows
from perennial.core.schema import features_frame
from perennial.core.state import AWAITING, EXPIRED, StateChange
from perennial.core.types import (
    Action,
    Batch,
    BatchError,
    CycleRecord,
    Decision,
    DriftResult,
    Reference,
    ValidationResult,
    pct,
)
from perennial.pipeline.context import Cycle
from perennial.pipeline.records import cycle_record
from perennial.pipeline.steps import finish_cycle, reject_batch
from perennial.pipeline.tasks import (
    estimate_metric,
    load_champion,
    load_version,
    log_cycle,
    log_labels,
    measure_feature_drift,
    measure_prediction_drift,
    validate_batch,
)

# Held-out rows the estimate is calibrated on: the newest windows of the champion's concept, up to this.
CALIBRATION_ROWS = 5000
# Rows of a batch the estimate is made on: a uniform sample of a larger batch (its band is the sample's).
ESTIMATE_ROWS = 20_000


# -- Now: a batch served without labels ------------------------------------------------------------------

def serve_unlabelled(model: Cycle, batch: Batch) -> CycleRecord:
    """Validate the batch's features, measure feature and prediction drift and estimate the champion's
    metric; the batch waits for its labels (`await_labels`), or is rejected like any invalid batch."""
    config, store = model.config, model.store
    schema = store.schema()
    champion = load_champion(config, model.settings) if schema is not None else None
    cycle = model.on(batch, schema, champion)
    if champion is None:  # nothing to check it against: its labels will make the first model
        validation = ValidationResult(success=True, failures=[], expectations=0)
        decision = Decision(Action.AWAIT_LABELS, "waits for its labels: no model yet to check it against "
                            "or to estimate with")
        return _served(cycle, validation, None, decision, None, None)
    validation = validate_batch(batch, schema, champion.reference, config.validation,
                                store.release_reason(batch.id))
    if not validation.success:
        decision = policy.decide(validation, None, 0, config.policy, config.training.window_batches)
        cycle.record = _record(cycle, validation, None, decision)
        reject_batch(cycle, validation)
        return finish_cycle(cycle)
    drift = measure_feature_drift(batch, features_frame(champion.reference, schema), schema, config.drift,
                                  store.report_dir(batch.id) / "drift_report.html")
    drift.add_shifts(validation.shifted_columns)
    predicted = measure_prediction_drift(batch, schema, champion, config.drift)
    reference = reference_accuracy(store.records(), config.policy.reference_batches, champion, cycle.metric)
    estimate, why_none = _estimate(cycle)
    if estimate is not None:
        estimate["alarm"] = policy.estimated_alarm(estimate, reference.accuracy, cycle.metric,
                                                   alarm_drop(estimate, reference, cycle, config.policy))
    drifted = f"{pct(drift.drift_share)} of features drifted, " + (
        f"the champion's predictions drifted ({predicted.method} {predicted.score:.3g})"
        if predicted.drifted else "its predictions did not drift")
    decision = policy.await_labels(estimate, reference.accuracy, cycle.metric, why_none, drifted)
    return _served(cycle, validation, drift, decision, estimate, asdict(predicted))


def _estimate(cycle: Cycle) -> tuple[dict | None, str | None]:
    """The champion's metric estimated on the batch, or None and why there is none."""
    held_out = calibration_rows(cycle)
    if held_out.empty:
        return None, "no held-out rows of the champion's concept to calibrate on yet"
    rows = uniform_rows(cycle.batch.frame, ESTIMATE_ROWS, batch_seed(cycle.batch.id))
    try:
        found = estimate_metric(cycle.champion.model, held_out, rows, cycle.schema, cycle.metric)
    except EstimationError as exc:
        return None, str(exc)
    return {**asdict(found), "calibration_rows": len(held_out)}, None


def alarm_drop(estimate: dict, reference: Reference, cycle: Cycle, rules: PolicyConfig) -> float:
    """The least estimated drop that raises an alarm: `policy.drop_moderate`, or two standard errors of
    the difference when more (a reference measured on a few holdout rows is loose, as with labels)."""
    se = abs(estimate["high"] - estimate["low"]) / (2 * 1.96)
    if cycle.metric.kind == "error":  # in utility units: relative to the error
        se /= max(estimate["value"], 1e-12)
    noise = cycle.metric.drop_noise(reference.accuracy, reference.rows, estimate["value"], estimate["rows"],
                                    se)
    return max(rules.drop_moderate, noise)


def calibration_rows(cycle: Cycle) -> pd.DataFrame:
    """Held-out labelled rows of the champion's concept (never trained on: the windows the accuracy
    matrix keeps), newest first, up to `CALIBRATION_ROWS`."""
    store, frames, rows = cycle.store, [], 0
    for window in reversed(store.matrix().windows):
        if window.concept != cycle.champion.concept or rows >= CALIBRATION_ROWS:
            continue
        frames.append(store.window(window.batch))
        rows += len(frames[-1])
    return pd.concat(frames, ignore_index=True).head(CALIBRATION_ROWS) if frames else pd.DataFrame()


def _record(cycle: Cycle, validation: ValidationResult, drift: DriftResult | None,
            decision: Decision) -> CycleRecord:
    run_id = log_cycle(cycle.config, cycle.settings, cycle.batch.id, cycle.batch.rows, validation, drift,
                       decision, cycle.store.attempt(cycle.batch.id))
    return cycle_record(cycle.batch, validation, drift, decision, cycle.champion, run_id, cycle.metric)


def _served(cycle: Cycle, validation: ValidationResult, drift: DriftResult | None, decision: Decision,
            estimate: dict | None, predicted: dict | None) -> CycleRecord:
    """The batch's line: waiting for its labels, with the estimate, the predictions' drift and mix."""
    record = cycle.record = _record(cycle, validation, drift, decision)
    record.status, record.estimate, record.prediction_drift = AWAITING, estimate, predicted
    record.labels = {"rows": cycle.batch.rows, "labelled": 0, "coverage": 0.0,
                     "predicted_mix": _predicted_mix(cycle)}
    log_labels(cycle.settings, record.run_id, estimate, None, predicted)
    return finish_cycle(cycle, drift, StateChange())


def _predicted_mix(cycle: Cycle) -> dict[str, float] | None:
    """Share of each class among the champion's predictions on the batch (the mix its labels should
    show when they are not biased); None for a regressor or without a champion."""
    if cycle.champion is None or cycle.schema.regression:
        return None
    from perennial.adapters.evidently import predictions

    shares = predictions(cycle.champion.model, cycle.batch.frame, cycle.schema).value_counts(normalize=True)
    return {str(k): round(float(v), 4) for k, v in sorted(shares.items())}


# -- Later: labels arrive ----------------------------------------------------------------------------------

def take_labels(model: Cycle, run_cycle: Callable[[Path], CycleRecord]) -> list[CycleRecord]:
    """Read new label files into the pool; then each waiting batch whose labels cover
    `labels.min_coverage` of its rows goes through `run_cycle` with them, one whose cycle on labels
    was cut short by a crash is resumed, and one that waited `labels.max_wait_batches` newer batches
    expires."""
    config, store = model.config, model.store
    if config.labels.source is None:
        return []
    waiting = {r.batch: r for r in store.pending()}
    frames = {b: _unlabelled(model, r) for b, r in waiting.items() if store.intent(b) is None}
    gather_labels(model, {i for f in frames.values() if f is not None for i in ids(f, config.data.id)})
    done = []
    for batch_id, served in waiting.items():
        if store.intent(batch_id) is not None:  # its cycle on labels started and did not finish
            done.append(run_cycle(Path(served.path)))
            continue
        frame = frames[batch_id]
        joined, join = (None, None) if frame is None else join_labels(
            frame, store.label_pool().labels(config.data.id, config.data.target), config.data.id,
            config.data.target, config.labels.min_coverage, batch_id, _task(model))
        if join is not None and join.ready:
            write_labelled(labelled_rows(joined, config.data.target), store.labelled_path(batch_id),
                           Path(served.path), config.data.format)
            done.append(run_cycle(Path(served.path)))
        elif frame is None or store.newer_batches(batch_id) >= config.labels.max_wait_batches:
            done.append(expire(model, served, join, frame))
    return done


def _task(model: Cycle) -> str:
    schema = model.store.schema()
    return schema.task if schema is not None else "classification"


def _unlabelled(model: Cycle, served: CycleRecord) -> pd.DataFrame | None:
    """A waiting batch's rows as served (its file, unchanged); None when the file is gone or changed."""
    path = Path(served.path)
    try:
        if served.sha256 is not None and file_sha256(path) != served.sha256:
            raise BatchError(f"batch file {path}: changed since it was served")
        return read_batch(path, model.config.data.format, model.config.data.target, labels_later=True).frame
    except (BatchError, OSError) as exc:
        run_logger().warning("%s waits for labels, but its rows cannot be read (%s): it expires",
                             served.batch, exc)
        return None


def gather_labels(model: Cycle, waiting_ids: set[str]) -> LabelPool:
    """The label pool with every label file not read yet (or changed since) added, in name order, and
    labels of no waiting batch older than `labels.max_wait_batches` dropped; written when it changed."""
    config, store = model.config, model.store
    pool = before = store.label_pool()
    now = len(store.records())
    for path in label_files(config.labels_pattern()):
        sha = file_sha256(path)
        if pool.files.get(path.name) == sha:
            continue
        try:
            pool = pool.add(read_label_file(path, config), config.data.id, config.data.target, sha, now)
        except LabelError as exc:
            run_logger().warning("%s; it is skipped until it changes", exc)
            pool = pool.refuse(path.name, sha, str(exc))
    pool = pool.expire(now, config.labels.max_wait_batches, waiting_ids)
    if pool is not before:
        store.write_label_pool(pool)
    return pool


def realised_when_served(cycle: Cycle, served: CycleRecord, drift: DriftResult | None) -> float | None:
    """The metric, on the batch's labelled rows, of the model that served it (the champion in service
    when its estimate was made); the champion's own (`drift`) when it is still that model. Kept on the
    line's estimate (`realised`, `served_by`)."""
    version = served.champion_version_before
    if drift is None or version is None or served.estimate is None:
        return None
    if version == cycle.champion.version:
        realised = drift.champion_accuracy
    else:
        model = load_version(cycle.config, cycle.settings, version).model
        realised = score(model, cycle.batch.frame, cycle.schema, cycle.metric)
    served.estimate = {**served.estimate, "realised": realised, "served_by": version}
    return realised


def labels_seen(cycle: Cycle, served: CycleRecord) -> tuple[dict, StateChange]:
    """For a cycle on a batch whose labels arrived: what its labels were (coverage, their class mix
    against the predicted mix) and the label pool without them, committed with its ledger line."""
    config, frame = cycle.config, cycle.batch.frame
    seen = dict(served.labels or {})
    rows = int(seen.get("rows") or served.rows)
    seen |= {"labelled": len(frame), "coverage": round(len(frame) / rows, 4) if rows else 0.0,
             "never_labelled": max(rows - len(frame), 0),
             "class_mix": None if cycle.schema.regression else class_mix(frame, config.data.target)}
    pool = cycle.store.label_pool().without(ids(frame, config.data.id))
    return seen, StateChange(labels=pool)


def note_labels(cycle: Cycle, served: CycleRecord, change: StateChange | None) -> StateChange:
    """The cycle's line carries the estimate made when its batch was served and what its labels were;
    its state change takes those labels out of the pool."""
    seen, taken = labels_seen(cycle, served)
    record = cycle.record
    record.estimate = record.estimate or served.estimate
    record.prediction_drift, record.labels = served.prediction_drift, seen
    if record.run_id:
        log_labels(cycle.settings, record.run_id, None, seen, None)
    return replace(change or StateChange(), labels=taken.labels)


def expire(model: Cycle, served: CycleRecord, join, frame: pd.DataFrame | None) -> CycleRecord:
    """A batch whose labels did not reach `labels.min_coverage` in time: never learnt from (its few early
    labels would be a biased sample); its labels leave the pool, its unlabelled rows are counted."""
    config, store = model.config, model.store
    labelled = join.labelled if join is not None else 0
    rows = served.rows
    why = "its rows can no longer be read" if frame is None else (
        f"{pct(labelled / rows if rows else 0.0)} of its {rows:,} rows labelled after "
        f"{store.newer_batches(served.batch)} newer batches (labels.min_coverage "
        f"{pct(config.labels.min_coverage)}, labels.max_wait_batches {config.labels.max_wait_batches})")
    pool = store.label_pool()
    if frame is not None:
        pool = pool.without(ids(frame, config.data.id))
    record = replace(served, status=EXPIRED, decision=Action.NOOP,
                     reason=f"labels expired: {why}; not learnt from, {rows - labelled:,} rows never "
                     "labelled",
                     labels={**(served.labels or {}), "labelled": labelled,
                             "coverage": round(labelled / rows, 4) if rows else 0.0,
                             "never_labelled": rows - labelled})
    return finish_cycle(replace(model, record=record), None, StateChange(labels=pool))
