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
# The events that start the `adapt` deployment.
ADAPTATION_EVENTS = (DRIFT_DETECTED, DATA_GROWN)


def resource_id(model: str) -> str:
    """The resource every event about `model` names; triggers match on it."""
    return f"perennial.model.{model}"


def emit(event: str, model: str, payload: dict[str, Any]) -> bool:
    """Emit an event about `model`; False when no Prefect API is there to receive it."""
    from prefect.events import emit_event

    sent = emit_event(event=event, resource={"prefect.resource.id": resource_id(model),
                                             "prefect.resource.name": model},
                      payload={"model": model, **payload})
    return sent is not None


def request_adaptation(model: str, record: CycleRecord, decision: Decision, drift: DriftResult | None,
                       champion: Champion | None) -> str:
    """Hand the batch to the `adapt` deployment: a `perennial.drift.detected` event, or
    `perennial.data.grown` for a data-growth retrain."""
    event = DATA_GROWN if decision.trigger is Trigger.DATA_GROWTH else DRIFT_DETECTED
    sent = emit(event, model, {
        "batch_ids": [record.batch],
        "drift_share": drift.drift_share if drift else None,
        "drifted_columns": drift.drifted_columns if drift else [],
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
