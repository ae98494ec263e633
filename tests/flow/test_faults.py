"""Faults in the loop, with the real stack: kill -9 at chosen points, two runs at once, a torn ledger,
corrupt or lost state files, a batch that makes its cycle fail. After each, every batch is in the
ledger once and in the registry at most once, the replay memory holds no row twice, and the
champion moved only as a finished cycle decided."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter

import pytest

from conftest import make_batch
from perennial.adapters.mlflow_registry import Tag
from perennial.app import cli
from perennial.app.local_server import BIN
from perennial.core.lifelong import KEY


def perennial_process(ws, *args: str, failpoint: str | None = None) -> subprocess.Popen:
    """`perennial run` in its own process, on the session's Prefect test server."""
    from prefect.settings import get_current_settings

    env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url)}
    if failpoint:
        env["PERENNIAL_FAILPOINT"] = failpoint
    return subprocess.Popen([str(BIN / "perennial"), "run", "--config", str(ws.config_path), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def ledger_lines(ws) -> list[dict]:
    return [json.loads(x) for x in ws.store.ledger_path.read_text().splitlines()]


def assert_each_batch_once(ws, batches: list[str]) -> None:
    """Once in the ledger (finished), at most once in the registry, one MLflow run each, and a replay
    memory without a row twice."""
    from mlflow import MlflowClient

    finished = Counter(x["batch"] for x in ledger_lines(ws) if x["status"] != "started")
    assert finished == Counter(batches)
    registered = Counter(v.get("batch") for v in ws.versions())
    assert all(n == 1 for n in registered.values()), registered
    client = MlflowClient(ws.settings.tracking_uri())
    runs = client.search_runs([client.get_experiment_by_name(ws.name).experiment_id])
    assert Counter(r.data.tags[Tag.BATCH] for r in runs) == Counter(batches)
    memory = ws.store.replay(100_000, "label").frame
    assert not memory.duplicated(subset=[KEY]).any() and not memory.drop(columns=[KEY]).duplicated().any()


@pytest.mark.parametrize("point", ["registered", "promoted", "staged", "state-written"])
def test_killed_mid_adaptation_the_next_run_resumes_the_same_decision(workspace, point):
    ws = workspace
    ws.add("b1.csv", make_batch(seed=1))
    ws.add("b2.csv", make_batch(seed=2, flip=True))  # a concept change: a retrain replaces v1
    proc = perennial_process(ws, failpoint=f"{point}@2")  # the second time: b2's adaptation
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL, out
    assert ws.store.intent("b2.csv").decision == "retrain"

    resumed = ws.run()  # the lock its holder held died with it
    # Killed before its commit was staged, the cycle is resumed; after, taking the lock finishes it.
    assert [r.batch for r in resumed] == ([] if point in ("staged", "state-written") else ["b2.csv"])
    record = ws.store.record("b2.csv")
    assert record.decision == "retrain" and record.promoted
    assert record.reason.startswith("concept change")
    assert ws.champion() == record.model_version == 2
    assert_each_batch_once(ws, ["b1.csv", "b2.csv"])
    assert ws.store.matrix().steps[-1].version == 2 and ws.store.matrix().steps[-1].concept == 2
    assert ws.run() == []


def test_a_second_run_while_one_holds_the_lock_is_refused_and_changes_nothing(workspace, capsys):
    ws = workspace
    for i in range(1, 4):
        ws.add(f"b{i}.csv", make_batch(seed=i))
    first = perennial_process(ws)
    deadline = time.monotonic() + 300
    while not ws.store.lock_path.exists() or str(first.pid) not in ws.store.lock_path.read_text():
        assert time.monotonic() < deadline and first.poll() is None, "the first run never took the lock"
        time.sleep(0.2)
    assert cli.main(["run", "--config", str(ws.config_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("perennial: error: test-model: another cycle of this model is running "
                          f"(perennial run, pid {first.pid} on ")
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out
    assert_each_batch_once(ws, ["b1.csv", "b2.csv", "b3.csv"])
    assert ws.champion() == 1


def test_a_torn_ledger_line_is_dropped_once_and_its_batch_processed_once(workspace, caplog):
    ws = workspace
    ws.add("b1.csv", make_batch(seed=1))
    ws.run()
    with open(ws.store.ledger_path, "a") as fh:  # power lost while b2's line was being appended
        fh.write('{"batch": "b2.csv", "rows": 14')
    ws.add("b2.csv", make_batch(seed=2))
    [b2] = ws.run()
    assert b2.batch == "b2.csv" and b2.decision == "noop"
    assert "dropped a torn last line" in caplog.text
    ws.add("b3.csv", make_batch(seed=3))
    assert [r.batch for r in ws.run()] == ["b3.csv"]
    assert [x["batch"] for x in ledger_lines(ws) if x["status"] == "done"] == ["b1.csv", "b2.csv", "b3.csv"]


@pytest.mark.parametrize("name", ["schema.json", "accuracy_matrix.json"])
def test_a_corrupt_state_file_stops_run_and_status_in_one_line_before_anything_is_written(
        workspace, capsys, name):
    ws = workspace
    ws.add("b1.csv", make_batch(seed=1))
    ws.run()
    path = ws.store.root / name
    path.write_text(path.read_text()[:30])
    ledger = ws.store.ledger_path.read_text()
    ws.add("b2.csv", make_batch(seed=2))
    capsys.readouterr()
    assert cli.main(["run", "--config", str(ws.config_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"perennial: error: state file {path}: not valid JSON")
    assert "Traceback" not in err and err.count("\n") == 1
    assert ws.store.ledger_path.read_text() == ledger and not (ws.store.reports_dir / "b2.csv").exists()
    if name == "accuracy_matrix.json":
        assert cli.main(["status", "--config", str(ws.config_path)]) == 2
        assert capsys.readouterr().err.startswith(f"perennial: error: state file {path}")


def test_a_lost_replay_memory_is_restored_from_the_champions_version(workspace, caplog):
    ws = workspace
    ws.add("b1.csv", make_batch(seed=1))
    ws.run()
    kept = len(ws.store.replay(100_000, "label"))
    ws.store.replay_path.unlink()
    ws.add("b2.csv", make_batch(seed=2))
    [b2] = ws.run()
    assert b2.decision == "noop"
    assert f"{ws.store.replay_path} is missing: restored the replay memory from v1's copy" in caplog.text
    memory = ws.store.replay(100_000, "label")
    assert len(memory) > kept  # v1's rows and b2's, not b2's alone
    assert not memory.frame.duplicated(subset=[KEY]).any()


def test_a_batch_that_fails_its_cycle_twice_the_same_way_is_quarantined_and_the_stream_goes_on(
        workspace, monkeypatch):
    ws = workspace
    ws.add("b1.csv", make_batch(seed=1))
    ws.run()
    ws.add("b2.csv", make_batch(seed=2, flip=True))
    monkeypatch.setenv("PERENNIAL_FAILPOINT", "registered:raise")  # b2's retrain fails once registered
    with pytest.raises(RuntimeError, match="failpoint registered reached"):
        ws.run()
    assert ws.store.intent("b2.csv").decision == "retrain" and ws.champion() == 1
    [b2] = ws.run()  # resumed, the same failure again: quarantined
    assert b2.decision == "reject" and b2.batch == "b2.csv"
    assert b2.reason == ("validation failed: its cycle failed twice the same way (FailpointError: failpoint "
                         "registered reached); quarantined so the batches after it go on")
    assert (ws.store.quarantine_dir / "b2.csv").exists()
    assert ws.champion() == 1  # v2 stays registered as the failed attempt left it, never promoted
    monkeypatch.delenv("PERENNIAL_FAILPOINT")
    ws.add("b3.csv", make_batch(seed=3))
    assert [(r.batch, r.decision) for r in ws.run()] == [("b3.csv", "noop")]
    assert ws.champion() == 1
