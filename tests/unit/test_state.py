"""The state folder under faults, without servers: torn ledger lines, corrupt files, the lock, and
commits that a crash cannot leave half-applied."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import pandas as pd
import pytest

from perennial.core.lifelong import AccuracyMatrix, ReplayMemory, Step, Window
from perennial.core.state import RELEASED, STARTED, StateChange, StateStore
from perennial.core.types import CycleRecord, Schema, StateError


def line(batch: str, **fields) -> CycleRecord:
    defaults = {"rows": 10, "validation": "passed", "drift_share": None, "champion_accuracy_before": None,
                "decision": "noop", "reason": "stable", "champion_version_after": 1}
    return CycleRecord(batch=batch, **{**defaults, **fields})


@pytest.fixture
def store(tmp_path) -> StateStore:
    return StateStore(tmp_path, "m")


def test_a_torn_last_line_is_dropped_with_a_warning_and_the_next_append_stays_whole(store, caplog):
    store.append(line("a.csv"))
    with open(store.ledger_path, "a") as fh:  # power lost halfway through b.csv's line
        fh.write(json.dumps(line("b.csv").to_dict())[:40])
    with caplog.at_level(logging.WARNING):
        assert [r.batch for r in store.records()] == ["a.csv"]
    assert f"{store.ledger_path}: dropped a torn last line (40 bytes)" in caplog.text
    assert store.processed() == {"a.csv"}  # b.csv is processed again, once

    store.append(line("b.csv"))
    text = store.ledger_path.read_text()
    assert [json.loads(x)["batch"] for x in text.splitlines()] == ["a.csv", "b.csv"]


def test_a_whole_last_line_without_its_newline_is_kept(store):
    store.append(line("a.csv"))
    store.ledger_path.write_text(store.ledger_path.read_text().rstrip("\n"))
    store.append(line("b.csv"))
    assert [r.batch for r in store.records()] == ["a.csv", "b.csv"]


def test_a_corrupt_line_inside_the_ledger_names_the_file_and_line(store):
    store.append(line("a.csv"))
    with open(store.ledger_path, "a") as fh:
        fh.write("{not json\n")
    store.append(line("b.csv"))
    with pytest.raises(StateError, match=rf"^{store.ledger_path}: line 2 is not a ledger record"):
        store.records()


@pytest.mark.parametrize("name, read", [("schema.json", "schema"), ("accuracy_matrix.json", "matrix")])
def test_corrupt_json_state_files_are_named(store, name, read):
    store.root.mkdir(parents=True)
    (store.root / name).write_text('{"features": ')
    with pytest.raises(StateError, match=rf"^state file {store.root / name}: not valid JSON"):
        getattr(store, read)()
    with pytest.raises(StateError, match=rf"^state file {store.root / name}"):
        store.check()


def test_a_corrupt_replay_memory_is_named(store):
    store.root.mkdir(parents=True)
    store.replay_path.write_bytes(b"PAR1 not really")
    with pytest.raises(StateError, match=rf"^state file {store.replay_path}"):
        store.check()


def test_a_started_batch_is_not_processed_but_resumed_with_its_decision(store):
    store.append(line("a.csv"))
    store.append(line("b.csv", status=STARTED, decision="retrain", window_batches=3,
                      champion_version_before=1, run_id="r1"))
    assert store.processed() == {"a.csv"}
    assert [r.batch for r in store.records()] == ["a.csv"]
    intent = store.intent("b.csv")
    assert intent.run_id == "r1" and intent.recorded_decision().window_batches == 3
    store.append(line("b.csv", decision="retrain"))
    assert store.intent("b.csv") is None and store.processed() == {"a.csv", "b.csv"}


def test_a_released_batch_started_again_keeps_its_release_reason(store):
    store.append(line("a.csv", decision="reject"))
    store.append(line("a.csv", decision="reject", status=RELEASED, release_reason="new normal"))
    store.append(line("a.csv", status=STARTED))
    assert store.release_reason("a.csv") == "new normal" and "a.csv" not in store.processed()
    assert store.attempt("a.csv") == 1


def change() -> StateChange:
    matrix = AccuracyMatrix([Window("a.csv", 1)], [Step("a.csv", 1, 1, {"a.csv": 0.9})])
    memory = ReplayMemory.empty(100, "label").add(pd.DataFrame({"x": [1.0, 2.0], "label": ["p", "q"]}), 0)
    return StateChange(schema=Schema({"x": "numeric"}, "label", ("p", "q")), matrix=matrix,
                       window=pd.DataFrame({"x": [3.0], "label": ["p"]}), replay=memory)


def test_a_commit_writes_state_and_ledger_line_together(store):
    store.commit(line("a.csv"), change())
    assert store.schema().classes == ("p", "q") and store.matrix().windows[0].batch == "a.csv"
    assert len(store.replay(100, "label")) == 2 and len(store.window("a.csv")) == 1
    assert [r.batch for r in store.records()] == ["a.csv"] and not list(store.staged_dir.iterdir())


def test_a_commit_cut_short_after_staging_is_finished_once_by_the_next_lock(store, monkeypatch):
    monkeypatch.setenv("PERENNIAL_FAILPOINT", "state-written:raise")
    with pytest.raises(RuntimeError, match="failpoint state-written"):
        store.commit(line("a.csv"), change())
    assert store.schema() is not None and store.records() == []  # files in place, no ledger line
    monkeypatch.delenv("PERENNIAL_FAILPOINT")
    with store.lock():
        pass
    with store.lock():  # recovering twice changes nothing more
        pass
    assert store.ledger_path.read_text().count('"a.csv"') == 1
    assert not list(store.staged_dir.iterdir())


def test_a_commit_cut_short_while_staging_leaves_the_state_as_it_was(store, monkeypatch):
    store.staged_dir.mkdir(parents=True)
    (store.staged_dir / ".abc.partial").mkdir()  # a crash while writing the staged copy
    with store.lock():
        pass
    assert store.schema() is None and store.records() == [] and not list(store.staged_dir.iterdir())


def test_a_held_lock_is_refused_with_its_holder_and_freed_when_the_holder_dies(store, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from perennial.core.state import StateStore\n"
        f"s = StateStore(Path({str(tmp_path)!r}), 'm')\n"
        "with s.lock(holder='perennial run'):\n"
        "    print('held', flush=True); time.sleep(600)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        held = rf"^m: another cycle of this model is running \(perennial run, pid {holder.pid} on .* since .*"
        with pytest.raises(StateError, match=held + rf"; lock {store.lock_path}\)"), store.lock():
            pass
        started = time.monotonic()
        with pytest.raises(StateError), store.lock(wait_seconds=1.0):
            pass
        assert time.monotonic() - started >= 1.0  # it waited before giving up
        holder.kill()  # kill -9: the kernel frees the lock with the process
        holder.wait()
        with store.lock():
            assert json.loads(store.lock_path.read_text())["pid"] != holder.pid
    finally:
        holder.kill()
