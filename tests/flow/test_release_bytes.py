"""`perennial release` covers the bytes that were rejected, nothing else (audit issue 20, case 4): a file
edited in the source folder after its rejection is refused, and one edited after its release is never
learnt: the run reads the quarantined copy whose hash the release recorded."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest

from conftest import make_batch, new_workspace
from perennial.app.cli import main

NAME = "release-bytes-model"
WHY = "values above 10.5 are the new normal"


def flip_labels(path) -> None:
    """Every label of a batch file inverted, in place (the audit's edit)."""
    frame = pd.read_csv(path)
    frame["label"] = frame["label"].map({"low": "high", "high": "low"})
    frame.to_csv(path, index=False)


def release(ws, batch: str, capsys) -> tuple[int, str]:
    """Exit code and output (stdout, or the error line) of `perennial release`."""
    capsys.readouterr()
    code = main(["release", batch, "--config", str(ws.config_path), "--reason", WHY])
    captured = capsys.readouterr()
    return code, (captured.out if code == 0 else captured.err.strip())


@pytest.fixture(scope="module")
def rejected(tmp_path_factory, prefect_server):
    """a.csv trains v1; b.csv and c.csv are rejected: 'x one' goes above its declared max."""
    with pytest.MonkeyPatch.context() as mp:
        ws = new_workspace(tmp_path_factory.mktemp("release-bytes"), mp, name=NAME,
                           validation={"columns": {"x one": {"max": 10.5}}})
        ws.add("a.csv", make_batch(seed=61))
        for name, seed in (("b.csv", 62), ("c.csv", 63)):
            ws.add(name, make_batch(seed=seed, shift=1.0))
        records = {r.batch: r for r in ws.run()}
        assert [records[b].decision for b in ("a.csv", "b.csv", "c.csv")] == ["retrain", "reject", "reject"]
        yield ws, records


def test_a_file_changed_since_its_rejection_is_not_released(rejected, capsys):
    ws, records = rejected
    source = ws.batches / "b.csv"
    original = source.read_bytes()
    flip_labels(source)
    try:
        code, err = release(ws, "b.csv", capsys)
        assert code == 2
        assert err == (f"perennial: error: batch b.csv: {source} changed since it was rejected (it differs "
                       f"from its quarantined copy {ws.store.quarantine_dir / 'b.csv'}); a changed file is a "
                       "new batch: ingest it under a new name")
        assert ws.store.record("b.csv").status == "done" and ws.store.release_reason("b.csv") is None
    finally:
        source.write_bytes(original)


def test_a_released_batch_is_learnt_from_the_rejected_bytes_even_if_edited_after(rejected, capsys):
    ws, records = rejected
    for batch in ("b.csv", "c.csv"):
        code, out = release(ws, batch, capsys)
        assert code == 0, out
        assert f"Released {batch} ({WHY})" in out
    copy = ws.store.quarantine_dir / "b.csv"
    rejected_bytes = copy.read_bytes()
    # Both edited after the release; c's quarantined copy is gone too: no file holds its released bytes.
    flip_labels(ws.batches / "b.csv")
    flip_labels(ws.batches / "c.csv")
    (ws.store.quarantine_dir / "c.csv").unlink()

    again = {r.batch: r for r in ws.run()}
    b, c = again["b.csv"], again["c.csv"]
    # b was judged and learnt as it was rejected: v1 scores it as well as its own concept (the flipped
    # file would score under 20%), and its rows were read from the quarantined copy.
    assert b.decision != "reject", b.reason
    assert b.reason.startswith(f"released ({WHY}): ")
    assert b.champion_accuracy_before > 0.8 and b.champion_accuracy_before == pytest.approx(
        records["b.csv"].champion_accuracy_before)
    assert b.rows == 1400 and b.path == str(copy)
    if b.model_version is not None:  # adapted: the challenger learnt the original labels
        assert b.challenger_accuracy > 0.8
    # What it keeps for later training and forgetting checks is the original labels too.
    kept = ws.store.window("b.csv").merge(pd.read_csv(copy), on=["x one", "x-two"],
                                          suffixes=("", "_rejected"))
    assert len(kept) == 350 and (kept["label"] == kept["label_rejected"]).all()
    # c: refused to learn a file that is not the released bytes.
    assert c.decision == "reject" and c.model_version is None
    assert c.reason.startswith("validation failed: batch c.csv: changed since it was released"), c.reason
    assert ws.champion() == (b.champion_version_after or 1)
    # The release line recorded the hash of the rejected bytes.
    lines = [json.loads(line) for line in ws.store.ledger_path.read_text().splitlines()]
    (released,) = [line for line in lines if line["batch"] == "b.csv" and line["status"] == "released"]
    assert released["released_sha256"] == hashlib.sha256(rejected_bytes).hexdigest()
