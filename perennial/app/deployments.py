"""The `monitor` and `adapt` deployments of one model, with their schedules and triggers.

`perennial serve` serves exactly these; `prefect.yaml` declares the same for workers
(tests/test_deployments.py keeps the two in step).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from perennial.adapters import prefect_events as events
from perennial.core.config import PipelineConfig, load_config

# What an `adapt` run receives from the event that triggers it (`events.ADAPTATION_EVENTS`).
ADAPT_PARAMETERS = {
    "batch_ids": "{{ event.payload.batch_ids }}",
    "mode": "{{ event.payload.recommended_action }}",
    "reason": "{{ event.payload.reason }}",
    "window_batches": "{{ event.payload.window_batches }}",
    "champion_version": "{{ event.payload.champion_version }}",
}


def monitor_name(config: PipelineConfig) -> str:
    return f"monitor-{config.name}"


def adapt_name(config: PipelineConfig) -> str:
    return f"adapt-{config.name}"


def one_at_a_time() -> Any:
    """A deployment concurrency limit of 1 that queues, rather than drops, runs over the limit."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    return ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


def build(config_path: str | Path) -> list[Any]:
    """RunnerDeployments for `serve`: monitor on a schedule and on arrivals, adapt on drift."""
    from prefect.events import DeploymentEventTrigger
    from prefect.schedules import Cron

    from perennial.pipeline.flows.adapt import adapt
    from perennial.pipeline.flows.continuous_training import continuous_training

    path = str(Path(config_path).resolve())
    config = load_config(path)
    match = {"prefect.resource.id": events.resource_id(config.name)}
    monitor = continuous_training.to_deployment(
        name=monitor_name(config),
        schedules=[Cron(config.deploy.cron, timezone=config.deploy.timezone)],
        parameters={"config_path": path, "mode": "deployed"},
        triggers=[DeploymentEventTrigger(
            name=f"{config.name}: batch arrived", expect={events.BATCH_ARRIVED}, match=match,
            parameters={"config_path": path, "mode": "deployed"})],
        concurrency_limit=one_at_a_time(),
        tags=["perennial", config.name],
        description=f"Validate, check drift and decide for every new batch of {config.name}.",
    )
    adapt_deployment = adapt.to_deployment(
        name=adapt_name(config),
        parameters={"config_path": path, "batch_ids": [], "mode": "retrain"},
        triggers=[DeploymentEventTrigger(
            name=f"{config.name}: drift detected or data grown", expect=set(events.ADAPTATION_EVENTS),
            match=match,
            parameters={"config_path": path, **ADAPT_PARAMETERS})],
        concurrency_limit=one_at_a_time(),
        tags=["perennial", config.name],
        description=f"Fine-tune or retrain {config.name} when the monitor detects drift or data grew.",
    )
    return [monitor, adapt_deployment]


def serve(config_path: str | Path) -> None:
    """Serve both deployments from this process until interrupted."""
    from prefect import serve as prefect_serve

    prefect_serve(*build(config_path))
