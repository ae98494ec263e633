"""The `monitor` and `adapt` deployments of a model, with their schedules and triggers; of several
(a fleet) for one `perennial serve`, each model's named after it and triggered by its own events.

`perennial serve` serves exactly these; `prefect.yaml` declares the same for workers, for the two
models of the production topology (tests/unit/test_deployments.py keeps the two in step).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from perennial.adapters import prefect_events as events
from perennial.core.config import ConfigError, PipelineConfig, load_config

CONFIG_SUFFIXES = (".yaml", ".yml")

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
            name=f"{config.name}: batch or labels arrived", expect=set(events.MONITOR_EVENTS), match=match,
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


def fleet(paths: list[Path]) -> list[Path]:
    """The configs of a fleet: each file given, and every .yaml / .yml file of a folder given (in name
    order). Each must load, and name a model no other one names: deployment names and the events
    that trigger them are per model. A mistake raises ConfigError naming the file."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.suffix in CONFIG_SUFFIXES and p.is_file())
            if not inside:
                raise ConfigError(f"{path}: a folder without any {' or '.join(CONFIG_SUFFIXES)} config")
            found.extend(inside)
        else:
            found.append(path)
    names: dict[str, Path] = {}
    for path in found:
        name = load_config(path).name
        if name in names:
            raise ConfigError(f"{path}: model '{name}' is in {names[name]} too; a fleet serves each "
                              "model once")
        names[name] = path
    return found


def build_fleet(paths: list[Path]) -> list[Any]:
    """Every model's two deployments (see `fleet` for `paths`), the models in the order given."""
    return [deployment for path in fleet(paths) for deployment in build(path)]


def serve(paths: list[Path]) -> None:
    """Serve every model's deployments from this process until interrupted (each run in a process of
    its own, as `prefect.serve` starts them)."""
    from prefect import serve as prefect_serve

    prefect_serve(*build_fleet(paths))
