"""Prefect events adapter: what Perennial tells other systems, one resource per model."""

from __future__ import annotations

from typing import Any

from perennial.core.types import Champion, CycleRecord, Decision, DriftResult, Trigger

BATCH_ARRIVED = "perennial.batch.arrived"
BATCH_REJECTED = "perennial.batch.rejected"
DRIFT_DETECTED = "perennial.drift.detected"
# Labelled rows doubled while stable: a retrain that is not a drift alarm.
DATA_GROWN = "perennial.data.grown"
MODEL_PROMOTED = "perennial.model.promoted"
# A batch served without labels: the champion's metric estimated on it (an alarm when it dropped).
PERFORMANCE_ESTIMATED = "perennial.performance.estimated"
# A label file arrived (`perennial ingest-labels`): the monitor joins it to the batches waiting for it.
LABELS_ARRIVED = "perennial.labels.arrived"
# The events that start the `monitor` deployment besides its schedule.
MONITOR_EVENTS = (BATCH_ARRIVED, LABELS_ARRIVED)
# The events that start the `adapt` deployment.
ADAPTATION_EVENTS = (DRIFT_DETECTED, DATA_GROWN)


def resource_id(model: str) -> str:
    """The resource every event about `model` names; triggers match on it."""
    return f"perennial.model.{model}"


# Longest text and list an event carries: far below Prefect's event size limit (1.5 MB by default),
# which a reason quoting huge values once exceeded (EventTooLarge), leaving the batch unreleasable.
PAYLOAD_TEXT_CHARS, PAYLOAD_ITEMS = 2000, 50


def emit(event: str, model: str, payload: dict[str, Any]) -> bool:
    """Emit an event about `model`; False when no Prefect API is there to receive it."""
    from prefect.events import emit_event

    sent = emit_event(event=event, resource={"prefect.resource.id": resource_id(model),
                                             "prefect.resource.name": model},
                      payload=within_bounds({"model": model, **payload}))
    return sent is not None


def within_bounds(value: Any) -> Any:
    """`value` with every text cut to `PAYLOAD_TEXT_CHARS` and every list to `PAYLOAD_ITEMS` items."""
    if isinstance(value, str):
        return value if len(value) <= PAYLOAD_TEXT_CHARS else value[:PAYLOAD_TEXT_CHARS - 3] + "..."
    if isinstance(value, dict):
        return {within_bounds(k): within_bounds(v) for k, v in list(value.items())[:PAYLOAD_ITEMS]}
    if isinstance(value, list | tuple):
        return [within_bounds(v) for v in value[:PAYLOAD_ITEMS]]
    return value


def request_adaptation(model: str, record: CycleRecord, decision: Decision, drift: DriftResult | None,
                       champion: Champion | None) -> str:
    """Hand the batch to the `adapt` deployment: a `perennial.drift.detected` event, or
    `perennial.data.grown` for a data-growth retrain."""
    event = DATA_GROWN if decision.trigger is Trigger.DATA_GROWTH else DRIFT_DETECTED
    sent = emit(event, model, {
        "batch_ids": [record.batch],
        "drift_share": drift.drift_share if drift else None,
        "drifted_columns": drift.drifted_columns if drift else [],
        # The drop of the metric named (in its utility: points of a share, ~relative for an error).
        "metric": drift.judged_by.name if drift else record.metric,
        "accuracy_drop": drift.accuracy_drop if drift else None,
        "recommended_action": decision.action.value,
        "trigger": decision.trigger.value,
        "reason": decision.reason,
        "window_batches": decision.window_batches,
        "supersedes": decision.supersedes,
        "champion_version": champion.version if champion else 0,
        "run_id": record.run_id,
    })
    if not sent:
        raise RuntimeError(f"deployed mode needs a Prefect server (PREFECT_API_URL) to send "
                           f"{event}; `perennial run` adapts in-process instead")
    return "adaptation requested"
