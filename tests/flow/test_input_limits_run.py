"""A hostile batch in a run: quarantined, and the stream goes on. (Each limit alone:
tests/unit/test_input_limits.py.)"""

from __future__ import annotations

from pathlib import Path

from conftest import hostile_header, make_batch, new_workspace


def test_a_hostile_batch_is_quarantined_and_the_next_one_is_processed(tmp_path, monkeypatch, prefect_server):
    ws = new_workspace(tmp_path, monkeypatch)
    ws.add("a.csv", make_batch(seed=1))
    hostile = hostile_header(ws.batches / "b-wide.csv")
    repeated = ws.add("c-repeated.csv", make_batch(seed=2).rename(columns={"noise": "x one"}))
    ws.add("d.csv", make_batch(seed=3))
    records = {r.batch: r for r in ws.run()}
    assert [records[b].decision for b in ["a.csv", "b-wide.csv", "c-repeated.csv", "d.csv"]] == [
        "retrain", "reject", "reject", "noop"]
    errors = {"b-wide.csv": f"batch file {hostile}: 200,000 columns, more than data.max_columns (2,000)",
              "c-repeated.csv": f"batch file {repeated}: repeated column name(s) 'x one' (2x); every column "
                                "needs its own name"}
    for name, error in errors.items():
        record = records[name]
        assert record.reason == f"validation failed: {error}"
        assert record.unusable == [error]
        assert Path(record.quarantined_to) == ws.store.quarantine_dir / name
        assert Path(record.quarantined_to).read_bytes() == (ws.batches / name).read_bytes()
    assert ws.champion() == 1
