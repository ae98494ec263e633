"""The champion's alias history read back, and `perennial rollback` refusing what it cannot do: one
line, exit code 2, nothing moved. Real MLflow on SQLite; no cycle runs here (tests/flow/test_rollback.py
runs them)."""

from __future__ import annotations

import pytest

from conftest import new_workspace
from perennial.app.cli import main
from perennial.core.history import previous_champion, settled
from perennial.core.types import AliasMove

REFUSAL = "Perennial loads only the skops models it saved (refusing to run code from the registry)"


def move(seq: int, from_version: int | None, to_version: int, decision: str = "retrain") -> AliasMove:
    return AliasMove(seq, "2026-01-01T00:00:00+00:00", from_version, to_version, decision, f"b{seq}.csv",
                     "why")


def test_an_entry_whose_alias_move_never_happened_is_left_out():
    done = [move(1, None, 1), move(2, 1, 2)]
    # Crashed between the entry of 2 -> 3 and the alias move: the alias is still on v2.
    assert settled([*done, move(3, 2, 3)], champion=2) == done
    assert settled([*done, move(3, 2, 3)], champion=3) == [*done, move(3, 2, 3)]
    # ... and then another move from v2 happened: the stale entry stays out.
    reuse = move(4, 2, 4, "reuse")
    assert settled([*done, move(3, 2, 3), reuse], champion=4) == [*done, reuse]
    # The very first promotion crashed: no champion, no history.
    assert settled([move(1, None, 1)], champion=None) == []


def test_a_rollback_returns_to_where_the_current_champion_came_from():
    history = [move(1, None, 1), move(2, 1, 2), move(3, 2, 1, "reuse")]
    assert previous_champion(history, 1) == 2
    assert previous_champion(history[:2], 2) == 1
    assert previous_champion(history[:1], 1) is None  # the first champion had none before it
    assert previous_champion(history, 7) is None  # put there outside Perennial: not in the history


def test_a_move_round_trips_through_its_compact_json():
    entry = AliasMove(12, "2026-03-01T10:00:00+00:00", None, 4, "rollback", None, "v5 rejects loans — ü")
    text = entry.to_json()
    assert " " not in text.split('"reason"')[0]  # compact
    assert AliasMove.from_json(12, text) == entry


def registry_with_versions(tmp_path, monkeypatch):
    """A workspace whose registered model has two pickled versions, one tagged as Perennial tags its
    own (it is still refused: pickle), and `champion` set by hand on the untagged one (v1)."""
    import mlflow
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from perennial.adapters.mlflow_registry import Tag

    ws = new_workspace(tmp_path, monkeypatch)
    mlflow.set_tracking_uri(ws.settings.tracking_uri())
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("elsewhere", artifact_location=(ws.root / "elsewhere").as_uri())
    client.create_registered_model(ws.name)
    for tags in ({}, {Tag.HOLDOUT_ACCURACY: "0.990000", Tag.CONCEPT: "1"}):
        run = client.create_run(experiment)
        with mlflow.start_run(run_id=run.info.run_id):
            info = mlflow.sklearn.log_model(Pipeline([("s", StandardScaler())]), name="model",
                                            pip_requirements=[], serialization_format="pickle")
        client.create_model_version(ws.name, info.model_uri, run_id=run.info.run_id,
                                    model_id=info.model_id, tags=tags)
    client.set_registered_model_alias(ws.name, "champion", "1")
    return ws, client


def rollback_error(ws, capsys, *args: str) -> str:
    capsys.readouterr()  # MLflow's logging of the setup
    assert main(["rollback", "--config", str(ws.config_path), *args]) == 2
    # MLflow logs it creates a fresh SQLite store's tables; the rest is ours: one line.
    (line,) = [line for line in capsys.readouterr().err.splitlines() if " INFO mlflow." not in line]
    return line


def test_rollback_refuses_clearly_and_moves_nothing(tmp_path, monkeypatch, capsys):
    ws, client = registry_with_versions(tmp_path, monkeypatch)
    name = ws.name
    assert rollback_error(ws, capsys, "--reason", "bad") == (
        f"perennial: error: model {name}: the champion history records no version before v1; "
        "name one with --to VERSION")
    assert rollback_error(ws, capsys, "--to", "1", "--reason", "bad") == (
        f"perennial: error: model {name}: v1 is the champion already")
    assert rollback_error(ws, capsys, "--to", "9", "--reason", "bad") == (
        f"perennial: error: model {name}: there is no version 9")
    assert rollback_error(ws, capsys, "--to", "2", "--reason", "bad") == (
        f"perennial: error: model {name} v2: saved as pickle; {REFUSAL}")
    assert rollback_error(ws, capsys, "--to", "2", "--reason", "  ") == (
        f"perennial: error: model {name}: --reason must say why the champion is rolled back")
    client.set_registered_model_alias(name, "champion", "2")
    assert rollback_error(ws, capsys, "--to", "1", "--reason", "bad") == (
        f"perennial: error: model {name} v1: not a version Perennial registered (no "
        "perennial.holdout_accuracy tag); not rolled back to")
    assert ws.champion() == 2
    assert not any(key.startswith("perennial.") for key in client.get_registered_model(name).tags)
    assert all("rolled_back" not in v for v in ws.versions())


def test_rollback_without_a_champion_and_history_of_an_unregistered_model(tmp_path, monkeypatch, capsys):
    ws = new_workspace(tmp_path, monkeypatch)
    assert rollback_error(ws, capsys, "--reason", "bad") == (
        f"perennial: error: model {ws.name}: no champion to roll back")
    assert main(["status", "--config", str(ws.config_path), "--history"]) == 0
    assert capsys.readouterr().out.startswith(f"{ws.name}: no move of the champion recorded yet")


@pytest.mark.parametrize("argv", [["rollback", "--reason", "x"], ["rollback", "--to", "2"]])
def test_rollback_needs_a_config_and_a_reason(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "the following arguments are required" in capsys.readouterr().err
