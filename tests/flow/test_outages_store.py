"""MLflow's HTTP limits, and batch names MLflow's filters cannot hold, on a SQLite store: nothing
registered twice. (The outages themselves, against MLflow servers: tests/deployed/test_outages.py.)"""

from __future__ import annotations

import hashlib
import os

from conftest import make_batch, new_workspace
from perennial.adapters.mlflow_registry import Tag


def test_mlflow_http_limits_come_from_settings_unless_the_user_set_mlflows_own(tmp_path, monkeypatch):
    from perennial.adapters.mlflow_registry import client

    ws = new_workspace(tmp_path, monkeypatch)
    monkeypatch.setenv("PERENNIAL_MLFLOW_TIMEOUT_SECONDS", "3")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")  # the user's own
    client(ws.settings)
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"


# -- batch names with quotes ----------------------------------------------------------------------


def _key(batch_id: str) -> str:
    return hashlib.sha256(batch_id.encode()).hexdigest()[:32]


def _runs(ws) -> list:
    from perennial.adapters.mlflow_registry import client, experiment_id

    return client(ws.settings).search_runs([experiment_id(ws.name, ws.settings)])


def test_batch_names_with_quotes_are_processed_once_and_found_again(workspace):
    from perennial.adapters.batch_files import read_batch
    from perennial.adapters.mlflow_registry import register
    from perennial.core.config import load_config

    ws = workspace
    first, second = "o'brien.csv", 'o\'connor "2".csv'
    ws.add(first, make_batch(seed=1))
    ws.add(second, make_batch(seed=2, flip=True))  # a concept change: a second version
    records = {r.batch: r for r in ws.run()}
    assert [records[b].decision for b in (first, second)] == ["retrain", "retrain"]
    versions = {v["batch"]: v for v in ws.versions()}
    assert versions[first]["version"] == 1 and versions[first]["batch_key"] == _key(first)
    assert versions[second]["version"] == 2

    assert ws.run() == []
    assert len(ws.versions()) == 2 and len(_runs(ws)) == 2
    # A rerun after a crash between registration and the ledger line: the first version, no new one.
    batch = read_batch(ws.batches / first, "auto", "label")
    config = load_config(ws.config_path)
    assert register(config, ws.settings, records[first].run_id, None, batch, None, None, None) == 1
    assert len(ws.versions()) == 2


def test_versions_registered_before_the_batch_key_tag_are_still_found(tmp_path, monkeypatch):
    from perennial.adapters.mlflow_registry import client
    from perennial.adapters.mlflow_registry.registering import existing_version

    ws = new_workspace(tmp_path, monkeypatch)
    mlflow_client = client(ws.settings)
    mlflow_client.create_registered_model(ws.name)
    for batch in ("o'brien.csv", "other.csv"):  # as older Perennial tagged them: the name only
        mlflow_client.create_model_version(ws.name, source=tmp_path.as_uri(), tags={Tag.BATCH: batch})
    assert int(existing_version(ws.name, "o'brien.csv", ws.settings).version) == 1
    assert existing_version(ws.name, "new.csv", ws.settings) is None


def test_logging_a_cycle_twice_for_one_batch_attempt_reuses_its_run(tmp_path, monkeypatch):
    from perennial.adapters.mlflow_registry import client, log_cycle
    from perennial.core.config import load_config
    from perennial.core.types import Action, Decision, ValidationResult

    ws = new_workspace(tmp_path, monkeypatch)
    config = load_config(ws.config_path)
    batch = "o'brien.csv"
    rejected = ValidationResult(success=False, failures=["column 'age': above 120"], expectations=3)
    passed = ValidationResult(success=True, failures=[], expectations=3)
    first = log_cycle(config, ws.settings, batch, 10, rejected, None, Decision(Action.REJECT, "invalid"))
    # The rerun after a crash right after logging: the same run, with the rerun's decision.
    again = log_cycle(config, ws.settings, batch, 10, passed, None, Decision(Action.NOOP, "no drift"))
    assert again == first and len(_runs(ws)) == 1
    run = client(ws.settings).get_run(first)
    assert run.data.tags[Tag.DECISION] == "noop" and run.data.tags[Tag.BATCH] == batch
    assert run.data.metrics["validation_success"] == 1.0

    released = log_cycle(config, ws.settings, batch, 10, passed, None, Decision(Action.NOOP, "no drift"),
                            attempt=1)
    assert released != first and len(_runs(ws)) == 2
