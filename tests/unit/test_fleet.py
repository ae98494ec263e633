"""`perennial serve` for a fleet: the deployments built for several configs (or a folder of them),
each model's named after it, triggered only by its own events and run on its own config. Built,
not served: no server starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from perennial.app.cli import main
from perennial.app.deployments import build_fleet


def write_config(folder: Path, name: str, cron: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\ndata: {{source: batches, target: y}}\ndeploy: {{cron: '{cron}'}}\n")
    return path


def check_model(deployments: dict, name: str, config: Path, cron: str) -> None:
    """The model's two deployments: its name, schedule, config and resource, nobody else's."""
    monitor, adapt = deployments[f"monitor-{name}"], deployments[f"adapt-{name}"]
    path = str(config.resolve())
    assert [s.schedule.cron for s in monitor.schedules] == [cron]
    assert monitor.parameters == {"config_path": path, "mode": "deployed"}
    assert adapt.parameters["config_path"] == path
    (arrived,), (drift,) = monitor.triggers, adapt.triggers
    for trigger in (arrived, drift):
        assert trigger.match.root == {"prefect.resource.id": f"perennial.model.{name}"}
        assert trigger.parameters["config_path"] == path
        assert trigger.name.startswith(f"{name}: ")
    assert arrived.expect == {"perennial.batch.arrived", "perennial.labels.arrived"}
    assert drift.expect == {"perennial.drift.detected", "perennial.data.grown"}
    assert drift.parameters["batch_ids"] == "{{ event.payload.batch_ids }}"
    assert monitor.tags == adapt.tags == ["perennial", name]


def test_two_configs_give_each_model_its_own_two_deployments(tmp_path):
    loans = write_config(tmp_path / "a", "loan-approval", "*/15 * * * *")
    churn = write_config(tmp_path / "b", "churn", "0 3 * * *")
    built = build_fleet([loans, churn])
    assert [d.name for d in built] == ["monitor-loan-approval", "adapt-loan-approval",
                                       "monitor-churn", "adapt-churn"]
    by_name = {d.name: d for d in built}
    check_model(by_name, "loan-approval", loans, "*/15 * * * *")
    check_model(by_name, "churn", churn, "0 3 * * *")
    assert {d.flow_name for d in built} == {"continuous-training", "adapt"}


def test_a_folder_serves_every_config_in_it_in_name_order(tmp_path):
    fleet = tmp_path / "fleet"
    churn = write_config(fleet, "churn", "0 3 * * *")
    loans = write_config(fleet, "loan-approval", "0 * * * *")
    (fleet / "README.md").write_text("not a config")
    by_name = {d.name: d for d in build_fleet([fleet])}
    assert list(by_name) == ["monitor-churn", "adapt-churn", "monitor-loan-approval", "adapt-loan-approval"]
    check_model(by_name, "churn", churn, "0 3 * * *")
    check_model(by_name, "loan-approval", loans, "0 * * * *")


@pytest.mark.parametrize("case", ["same model twice", "empty folder", "bad config"])
def test_a_fleet_mistake_is_one_line_before_any_server_starts(tmp_path, capsys, case):
    first = write_config(tmp_path / "a", "churn", "0 3 * * *")
    if case == "same model twice":
        other = write_config(tmp_path / "b", "churn", "0 4 * * *")
        expected = f"{other}: model 'churn' is in {first} too; a fleet serves each model once"
    elif case == "empty folder":
        other = tmp_path / "empty"
        other.mkdir()
        expected = f"{other}: a folder without any .yaml or .yml config"
    else:
        other = tmp_path / "bad.yaml"
        other.write_text("name: x\n")
        expected = f"{other}: "
    assert main(["serve", "--config", str(first), "--config", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"perennial: error: {expected}") and "\n" not in err
    assert "Starting a temporary Prefect server" not in err
