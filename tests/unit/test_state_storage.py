"""The folder storage after the storages were split out: a commit staged by the previous layout
(record.json, window.parquet, dropped.json) is still finished, once, by the next lock."""

from __future__ import annotations

import json

import pandas as pd

from perennial.core.state import StateStore, batch_key
from perennial.core.types import CycleRecord, Schema


def test_a_commit_staged_before_the_storages_is_finished_once(tmp_path):
    store = StateStore(tmp_path, "m")
    record = CycleRecord(batch="b.csv", rows=1, validation="passed", drift_share=None,
                         champion_accuracy_before=None, decision="noop", reason="x", champion_version_after=1)
    store.windows_dir.mkdir(parents=True)
    (store.windows_dir / "a.csv.parquet").write_bytes(b"old window")
    staged = store.staged_dir / batch_key("b.csv")
    staged.mkdir(parents=True)
    (staged / "record.json").write_text(json.dumps(record.to_dict(), default=str))
    (staged / "schema.json").write_text(json.dumps(Schema({"x": "numeric"}, "y", ("p",)).to_dict()))
    pd.DataFrame({"x": [1.0]}).to_parquet(staged / "window.parquet")
    (staged / "dropped.json").write_text('["a.csv"]')
    for _ in range(2):
        with store.lock():
            pass
    assert store.schema().target == "y" and len(store.window("b.csv")) == 1
    assert not (store.windows_dir / "a.csv.parquet").exists() and not list(store.staged_dir.iterdir())
    assert [r.batch for r in store.records()] == ["b.csv"]
    assert len(store.ledger_path.read_text().splitlines()) == 1
