"""Validation in the loop: shifted data is learnt from, broken data is quarantined with the champion's
accuracy on it, and `perennial release` lets a rejected batch back in."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from conftest import make_batch, new_workspace, with_nulls
from perennial.adapters.mlflow_registry import Tag
from perennial.adapters.prefect_events import BATCH_ARRIVED, BATCH_REJECTED, resource_id
from perennial.app.cli import main


def events(name: str, model: str, count: int) -> list[dict]:
    """Payloads of the `name` events about `model` the test server has stored (waits for `count`)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    wanted = EventFilter(event=EventNameFilter(name=[name]),
                         resource=EventResourceFilter(id=[resource_id(model)]))
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while True:
            payloads = [e.payload for e in client.read_events(filter=wanted, limit=50).events]
            if len(payloads) >= count or time.monotonic() > deadline:
                return payloads
            time.sleep(0.5)


def test_a_null_rate_rise_at_a_concept_change_is_a_shift_and_the_batch_is_learnt(tmp_path, monkeypatch,
                                                                                  prefect_server):
    ws = new_workspace(tmp_path, monkeypatch)
    ws.add("a.csv", with_nulls(make_batch(seed=31), ["noise", "x one"], 15))
    ws.add("b.csv", with_nulls(make_batch(seed=32, flip=True), ["noise", "x one"], 22))
    first, second = ws.run()
    assert second.decision == "retrain", second.reason
    assert second.reason.startswith("concept change")
    assert second.validation == "passed"
    assert second.shifted_columns == ["x one", "noise"]
    # The reference is the champion's training rows: about 15% missing.
    for shift, column in zip(second.shifts, ["x one", "noise"], strict=True):
        assert re.fullmatch(rf"column '{column}': 22\.0% missing values, reference 1[456]\.\d% \+ "
                            r"tolerance 5\.0%", shift), shift
    assert second.model_version == 2 and second.promoted
    v2 = next(v for v in ws.versions() if v["version"] == 2)
    assert v2["trained_on"] == "b.csv"
    assert ws.store.records()[-1].shifted_columns == ["x one", "noise"]  # on the ledger line


@pytest.fixture(scope="module")
def quarantined(tmp_path_factory, prefect_server):
    """A stream where a declared bound, a missing column and an unseen label reject three batches."""
    with pytest.MonkeyPatch.context() as mp:
        ws = new_workspace(tmp_path_factory.mktemp("release"), mp, name="release-model",
                           validation={"columns": {"x one": {"max": 10.5}}})
        ws.add("a.csv", make_batch(seed=41))
        ws.add("b-above-max.csv", make_batch(seed=42, shift=1.0))  # 'x one' up to 11: above the max
        ws.add("c-no-colour.csv", make_batch(seed=43).drop(columns=["colour"]))
        ws.add("d-new-label.csv", make_batch(seed=44, classes=3))
        records = {r.batch: r for r in ws.run()}
        yield ws, records


def test_a_declared_bound_rejects_and_the_champion_is_still_scored(quarantined):
    ws, records = quarantined
    above = records["b-above-max.csv"]
    assert above.decision == "reject" and above.validation == "failed"
    accuracy = above.champion_accuracy_before
    assert accuracy > 0.8
    assert above.reason.startswith("validation failed: column 'x one': ")
    assert "value(s) above the declared max 10.5" in above.reason
    assert above.reason.endswith(f"; champion v1 scores {accuracy:.1%} on its 1,400 labelled rows")
    assert Path(above.quarantined_to).read_bytes() == (ws.batches / "b-above-max.csv").read_bytes()
    from mlflow import MlflowClient

    run = MlflowClient(ws.settings.tracking_uri()).get_run(above.run_id)
    assert run.data.metrics["champion_accuracy_before"] == accuracy
    assert run.data.tags[Tag.REASON] == above.reason
    rejected = {p["batch"]: p for p in events(BATCH_REJECTED, "release-model", 3)}
    assert rejected["b-above-max.csv"]["champion_accuracy"] == accuracy
    assert rejected["b-above-max.csv"]["champion_version"] == 1
    # A missing feature column counts as missing values: the champion is scored all the same.
    no_colour = records["c-no-colour.csv"]
    assert no_colour.decision == "reject" and no_colour.champion_accuracy_before > 0.8
    assert no_colour.unusable == ["missing column(s) 'colour'"]
    assert ws.champion() == 1


def test_release_refuses_what_it_cannot_release(quarantined, capsys):
    ws, _ = quarantined
    config = str(ws.config_path)

    def release(batch: str) -> str:
        assert main(["release", batch, "--config", config, "--reason", "new normal"]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err
        return err

    assert release("a.csv") == ("perennial: error: batch a.csv: not rejected (its decision was retrain: "
                                "no champion yet: training the first model); only a rejected batch can be "
                                "released")
    assert release("zz.csv") == (f"perennial: error: batch zz.csv: not in the ledger of release-model "
                                 f"({ws.store.ledger_path}); only a rejected batch can be released")
    assert release("c-no-colour.csv") == (
        "perennial: error: batch c-no-colour.csv: cannot be released, no model can learn from it as it is "
        "(missing column(s) 'colour'); fix the file and ingest it under a new name")
    moved = ws.batches / "b-above-max.csv"
    moved.rename(ws.root / "elsewhere.csv")
    try:
        assert release("b-above-max.csv") == (
            f"perennial: error: batch b-above-max.csv: file {moved} is no longer there; ingest it again "
            f"(`perennial ingest FILE --config {config}`), then release it")
    finally:
        (ws.root / "elsewhere.csv").rename(moved)
    assert ws.store.processed() == {"a.csv", "b-above-max.csv", "c-no-colour.csv", "d-new-label.csv"}


def test_a_released_batch_is_processed_again_and_learnt_from(quarantined, capsys):
    ws, _ = quarantined
    config = str(ws.config_path)
    for batch, reason in [("b-above-max.csv", "values above 10.5 are the new normal"),
                          ("d-new-label.csv", "'mid' is a new grade")]:
        assert main(["release", batch, "--config", config, "--reason", reason]) == 0
        assert f"Released {batch}" in capsys.readouterr().out
    assert "b-above-max.csv" not in ws.store.processed()
    arrived = events(BATCH_ARRIVED, "release-model", 2)
    assert sorted((p["batch"], p["released"]) for p in arrived) == [
        ("b-above-max.csv", True), ("d-new-label.csv", True)]
    assert main(["status", "--config", config]) == 0
    status = capsys.readouterr().out.splitlines()
    assert any("b-above-max.csv" in line and "reject" in line and "released" in line for line in status)

    again = {r.batch: r for r in ws.run()}
    assert list(again) == ["b-above-max.csv", "d-new-label.csv"]
    above, new_label = again["b-above-max.csv"], again["d-new-label.csv"]
    assert above.decision != "reject" and above.validation == "passed"
    assert above.reason.startswith("released (values above 10.5 are the new normal): ")
    assert above.release_reason == "values above 10.5 are the new normal"
    assert re.match(r"column 'x one': \d+ value\(s\) above the declared max 10\.5 \(e\.g\. ", above.shifts[0])
    # Its unseen label is a new class: a retrain learns it.
    assert new_label.decision == "retrain", new_label.reason
    assert new_label.reason.startswith("released ('mid' is a new grade): new label(s) mid")
    assert new_label.promoted and ws.store.schema().classes == ("high", "low", "mid")

    ledger = [r.batch for r in ws.store.records()]
    assert ledger == ["a.csv", "c-no-colour.csv", "b-above-max.csv", "d-new-label.csv"]
    assert [w.batch for w in ws.store.matrix().windows] == ["a.csv", "b-above-max.csv", "d-new-label.csv"]
    lines = [json.loads(line) for line in ws.store.ledger_path.read_text().splitlines()]
    assert [line["status"] for line in lines if line["batch"] == "b-above-max.csv"] == [
        "started", "done", "released", "started", "done"]
    assert ws.run() == []


def test_a_rule_for_an_unknown_column_stops_the_first_run_writing_nothing(tmp_path, monkeypatch, capsys,
                                                                          prefect_server):
    ws = new_workspace(tmp_path, monkeypatch, validation={"columns": {"x_one": {"max": 10}}})
    ws.add("a.csv", make_batch(seed=51))
    assert main(["run", "--config", str(ws.config_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"perennial: error: {ws.config_path}: key 'validation.columns.x_one': not a feature "
                   "column (features: x one, x-two, noise, colour, is member)")
    assert not ws.store.ledger_path.exists() and not ws.store.quarantine_dir.exists()
