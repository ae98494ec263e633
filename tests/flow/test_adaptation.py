"""Adaptation with the default policy, end to end: a stable stream keeps learning, and an alarm
compares candidates on the same holdout rows and keeps the best."""

from __future__ import annotations

import pytest

from conftest import make_batch, new_workspace
from perennial.adapters.mlflow_registry import Tag
from perennial.core.types import pct

DEFAULTS = {"growth_ratio": 1.0, "candidate_budget": 0.5}  # conftest turns both off for other tests


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
    assert set(tried) == {"fine_tune", "retrain_window", "retrain_batch"}
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
