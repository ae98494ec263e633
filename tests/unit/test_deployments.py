"""Deployment definitions load, for `perennial serve` and for prefect.yaml (the topology's two models),
and agree."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import pytest
import yaml

from perennial.adapters.prefect_events import BATCH_ARRIVED, LABELS_ARRIVED, resource_id
from perennial.app.deployments import ADAPT_PARAMETERS, build, build_fleet
from perennial.core.config import DeployConfig

ROOT = Path(__file__).parents[2]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "perennial.yaml"
    path.write_text("name: loan-approval\ndata: {source: batches, target: approved}\n"
                    "deploy: {cron: '*/15 * * * *'}\n")
    return path


def test_served_deployments_have_names_schedules_triggers_and_queues(config):
    monitor, adapt = build(config)
    path = str(config.resolve())
    assert (monitor.name, adapt.name) == ("monitor-loan-approval", "adapt-loan-approval")
    assert [s.schedule.cron for s in monitor.schedules] == ["*/15 * * * *"]
    assert adapt.schedules == []
    assert monitor.parameters == {"config_path": path, "mode": "deployed"}

    (arrived,) = monitor.triggers
    assert arrived.expect == {BATCH_ARRIVED, LABELS_ARRIVED}
    assert arrived.match.root == {"prefect.resource.id": resource_id("loan-approval")}
    (drift,) = adapt.triggers
    assert drift.expect == {"perennial.drift.detected", "perennial.data.grown"}
    assert drift.match.root == {"prefect.resource.id": "perennial.model.loan-approval"}
    assert drift.parameters == {
        "config_path": path,
        "batch_ids": "{{ event.payload.batch_ids }}",
        "mode": "{{ event.payload.recommended_action }}",
        "reason": "{{ event.payload.reason }}",
        "window_batches": "{{ event.payload.window_batches }}",
        "champion_version": "{{ event.payload.champion_version }}",
    }
    for deployment in (monitor, adapt):
        assert deployment.concurrency_limit == 1
        assert deployment.concurrency_options.collision_strategy.value == "ENQUEUE"


def test_trigger_parameters_are_parameters_of_the_adapt_flow():
    from perennial.pipeline.flows.adapt import adapt

    accepted = set(inspect.signature(adapt.fn).parameters)
    assert set(ADAPT_PARAMETERS) | {"config_path"} <= accepted


def test_prefect_yaml_declares_the_deployments_serve_serves_for_each_model(tmp_path, monkeypatch):
    from prefect.flows import load_flow_from_entrypoint

    models = tmp_path / "models"  # the topology's two models, as `prefect deploy` finds them
    shutil.copytree(ROOT / "deployments" / "topology" / "models", models)
    served = {d.name: d for d in build_fleet([models])}
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    entries = yaml.safe_load(yaml.safe_dump(spec["deployments"]).replace(
        "{{ $PERENNIAL_MODELS }}", str(models.resolve())))
    assert [e["name"] for e in entries] == list(served) == [
        "monitor-loan-approval", "adapt-loan-approval", "monitor-sensor-alarm", "adapt-sensor-alarm"]
    monkeypatch.chdir(ROOT)
    for entry in entries:
        deployment = served[entry["name"]]
        flow = load_flow_from_entrypoint(entry["entrypoint"])
        assert flow.name == deployment.flow_name
        assert entry["parameters"] == deployment.parameters
        assert entry["tags"] == deployment.tags
        monitors = entry["name"].startswith("monitor")
        assert [s["cron"] for s in entry.get("schedules", [])] == ([DeployConfig().cron] if monitors else [])
        assert entry["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
        assert entry["work_pool"] == {"name": "perennial"}
        (trigger,) = entry["triggers"]
        (expected,) = deployment.triggers
        assert trigger["name"] == expected.name
        assert set(trigger["expect"]) == expected.expect
        assert trigger["match"] == expected.match.root
        assert trigger["parameters"] == expected.parameters
