"""Adaptation with the default policy, end to end: a stable stream keeps learning, and an alarm
compares candidates on the same holdout rows and keeps the best."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import ROWS, make_batch, new_workspace
from perennial.adapters.mlflow_registry import Tag
from perennial.core.types import pct

# conftest turns these off for other tests
DEFAULTS = {"growth_ratio": 1.0, "candidate_budget": 0.5,
            "candidates": ["fine_tune", "retrain_window", "retrain_batch", "retrain_all"]}


def test_a_stable_stream_keeps_learning_through_data_growth_retrains_not_alarms(tmp_path, monkeypatch,
                                                                              prefect_server):
    ws = new_workspace(tmp_path, monkeypatch, policy=DEFAULTS)
    for i in (1, 2, 3):
        ws.add(f"b{i}.csv", make_batch(seed=50 + i))
    first, second, third = ws.run()
    assert (first.decision, first.trigger, first.learned_rows) == ("retrain", "first_model", 1050)
    # b2's 1,050 training rows double what v1 learnt from: a retrain on the concept's batches.
    assert second.decision == "retrain" and second.trigger == "data_growth", second.reason
    assert second.reason == ("data growth: 1,050 new labelled rows since the champion was trained on 1,050 "
                             "(>= 1x); retraining on every batch of its concept")
    assert [(c["kind"], c["chosen"]) for c in second.candidates] == [("retrain_grown", True)]
    assert second.promoted and second.champion_version_after == 2
    assert (second.learned_rows, second.unlearned_rows) == (2100, 0)
    v2 = next(v for v in ws.versions() if v["version"] == 2)
    assert v2["trained_on"] == "b1.csv,b2.csv" and v2["candidate"] == "retrain_grown"
    assert v2["learned_rows"] == "2100"
    # b3 brings 1,050 rows, half of 2,100: nothing to do yet, and no alarm at any point.
    assert third.decision == "noop", third.reason
    assert (third.learned_rows, third.unlearned_rows) == (2100, 1050)
    from mlflow import MlflowClient

    run = MlflowClient(ws.settings.tracking_uri()).get_run(second.run_id)
    assert run.data.tags[Tag.TRIGGER] == "data_growth"


def test_an_alarm_compares_candidates_on_the_same_holdout_rows_and_logs_each(tmp_path, monkeypatch,
                                                                             prefect_server):
    ws = new_workspace(tmp_path, monkeypatch, policy={**DEFAULTS, "candidate_budget": 5.0})
    ws.add("a.csv", make_batch(seed=61))
    ws.add("b.csv", make_batch(seed=62, shift=1.5, theta=10.6))  # inputs and boundary move
    first, second = ws.run()
    assert second.trigger == "drift" and second.reason.startswith("moderate drift"), second.reason
    tried = {c["kind"]: c for c in second.candidates}
    # The window (a and b) is the concept's whole history: trained once, as retrain_all.
    assert set(tried) == {"fine_tune", "retrain_batch", "retrain_all"}
    chosen = [c for c in second.candidates if c["chosen"]]
    # The best on the holdout among those forgetting at most the budget (5%) on a's window.
    within = [c["accuracy"] for c in second.candidates if c["forgetting"] <= 0.05]
    assert len(chosen) == 1 and within and chosen[0]["accuracy"] == max(within)
    kind = chosen[0]["kind"]
    assert second.decision == ("fine_tune" if kind == "fine_tune" else "retrain")
    assert second.challenger_accuracy == chosen[0]["accuracy"]
    assert tried["retrain_batch"]["rows"] == 1050 and tried["fine_tune"]["rows"] == 2100  # + replayed rows
    # The adaptation's cost is every candidate's (each rounded to the millisecond on its own).
    assert second.train_cpu_seconds == pytest.approx(sum(c["train_cpu_seconds"] for c in second.candidates),
                                                     abs=0.002)
    scores = ", ".join(f"{c['kind']} {pct(c['accuracy'])}" + (" (chosen)" if c["chosen"] else "")
                       for c in second.candidates)
    assert second.reason.endswith(f"; candidates on 350 holdout rows: {scores}")
    # The registered version is the chosen candidate; the run shows every candidate's numbers.
    v2 = next(v for v in ws.versions() if v["version"] == second.model_version)
    assert v2["candidate"] == kind and v2["decision"] == second.decision
    from mlflow import MlflowClient

    run = MlflowClient(ws.settings.tracking_uri()).get_run(second.run_id)
    for name, c in tried.items():
        assert run.data.metrics[f"candidate.{name}.accuracy"] == c["accuracy"]
        assert run.data.metrics[f"candidate.{name}.train_cpu_seconds"] == c["train_cpu_seconds"]
    assert run.data.tags[Tag.DECISION] == second.decision
    # ... and so does the cycle's Prefect artifact.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        summaries = [a.data for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["test-model-cycle"])))]
    summary = next(s for s in summaries if "`b.csv`" in s)
    assert "| candidate | holdout accuracy | forgetting | rows | train s (CPU) | |" in summary
    assert summary.count("| chosen |") == 1


def region(seed: int, low: float, high: float, flip: bool = False) -> pd.DataFrame:
    """Rows whose `x one` lies in [low, high): one region of a checkerboard whose labels follow the
    same cells everywhere (a fixed relation), or the opposite ones (`flip`, a concept change); the
    cells beyond 7.5 are grey, a label only the right-hand region shows."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.uniform(low, high, ROWS), rng.uniform(0, 10, ROWS)
    dark = (np.floor(x1 / 2.5) + np.floor(x2 / 2.5)) % 2 == (1 if flip else 0)
    labels = np.where(x1 >= 7.5, "grey", np.where(dark, "dark", "light"))
    return pd.DataFrame({"x one": x1.round(3), "x-two": x2.round(3), "label": labels})


def test_a_shift_into_a_region_never_seen_keeps_the_history_and_a_changed_relation_does_not(
        tmp_path, monkeypatch, prefect_server):
    ws = new_workspace(tmp_path, monkeypatch, model={"family": "hgb", "params": {}}, policy=DEFAULTS)
    ws.add("a.csv", region(71, 0, 5))
    ws.add("b.csv", region(72, 5, 7.5))  # a region the model has never seen: its trees know nothing there
    ws.add("c.csv", region(73, 0, 5))  # the first region again
    ws.add("d.csv", region(74, 0, 7.5, flip=True))  # every cell changes colour: the relation itself changed
    first, second, third, fourth = ws.run()

    # The drop looks like a concept change; the history's candidate shows that it still holds.
    assert second.reason.startswith("concept change"), second.reason
    assert "; history still holds: retrain_all on 2,100 rows of the concept's history" in second.reason
    assert second.reason.endswith("retrain_all kept, no new concept"), second.reason
    assert [c["kind"] for c in second.candidates if c["chosen"]] == ["retrain_all"]
    assert second.decision == "retrain" and second.promoted and not second.supersedes
    assert second.concept == first.concept  # no reset: a's rows, window and replay memory stay its concept's
    assert (second.learned_rows, second.trained_rows) == (2100, 2100)  # a's 1,050 training rows and b's
    v2 = next(v for v in ws.versions() if v["version"] == second.model_version)
    assert v2["trained_on"] == "a.csv,b.csv"

    # The first region comes back: the model of both serves it, no alarm, no reuse of a's model.
    assert third.decision == "noop" and third.champion_version_after == second.model_version, third.reason

    # A changed relation: the history now teaches the wrong labels, and a new concept starts.
    assert fourth.reason.startswith("concept change"), fourth.reason
    assert "; history conflicts: retrain_all" in fourth.reason, fourth.reason
    assert fourth.reason.endswith("a new concept starts")
    assert [c["kind"] for c in fourth.candidates if c["chosen"]] == ["retrain_batch"]
    assert fourth.supersedes and fourth.concept == first.concept + 1


def test_new_labels_from_a_region_never_seen_keep_the_history_that_still_holds(tmp_path, monkeypatch,
                                                                              prefect_server):
    ws = new_workspace(tmp_path, monkeypatch, model={"family": "hgb", "params": {}}, policy=DEFAULTS,
                       validation={"allow_new_classes": True}, training={"window_batches": 2})
    ws.add("a.csv", region(81, 0, 5))
    ws.add("a2.csv", region(82, 0, 5))
    ws.add("b.csv", region(83, 5, 10))  # a new region, and with it a new label: grey
    first, _, third = ws.run()
    assert third.trigger == "new_labels" and third.reason.startswith("new label(s) grey"), third.reason
    # The label set changed, yet the earlier regions still hold: their history is kept.
    assert "; history still holds: retrain_all" in third.reason, third.reason
    assert [c["kind"] for c in third.candidates] == ["retrain_window", "retrain_all"]
    assert [c["kind"] for c in third.candidates if c["chosen"]] == ["retrain_all"]
    assert third.promoted and not third.supersedes and third.concept == first.concept
