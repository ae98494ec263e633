"""The continuous-training flow end to end: real Prefect, MLflow on SQLite, GX and Evidently."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import Workspace, make_batch, new_workspace
from perennial.adapters.mlflow_registry import Tag


@pytest.fixture(scope="module")
def stream(tmp_path_factory, prefect_server):
    """One monitored stream covering every decision, processed by a single flow run."""
    with pytest.MonkeyPatch.context() as mp:
        ws = new_workspace(tmp_path_factory.mktemp("stream"), mp, name="stream-model")
        ws.add("b01-first.csv", make_batch(seed=1))
        ws.add("b02-same.parquet", make_batch(seed=2))
        ws.add("b03-concept-change.csv", make_batch(seed=3, flip=True))
        # Inputs move and the boundary with them a little: a drop the champion must not ignore.
        ws.add("b04-shift.csv", make_batch(seed=4, flip=True, shift=1.5, theta=10.6))
        bad = make_batch(seed=5, flip=True).drop(columns=["colour"])
        bad["x one"] = bad["x one"].astype(object)
        bad.loc[::3, "x one"] = "twelve"
        ws.add("b05-broken.csv", bad)
        # Back to b03's boundary (theta 10): the concept v2 learnt returns.
        ws.add("b06-good-again.csv", make_batch(seed=6, flip=True, shift=1.5))
        # The very first concept returns.
        ws.add("b07-first-concept-again.csv", make_batch(seed=7))
        records = {r.batch: r for r in ws.run()}
        versions = ws.versions()
        yield ws, records, versions


def test_first_batch_is_retrained_and_becomes_champion(stream):
    ws, records, versions = stream
    first = records["b01-first.csv"]
    assert first.decision == "retrain"
    assert first.reason.startswith("no champion yet")
    assert first.model_version == 1 and first.promoted
    assert first.challenger_accuracy > 0.9
    v1 = next(v for v in versions if v["version"] == 1)
    assert v1["batch"] == "b01-first.csv" and v1["trained_on"] == "b01-first.csv"


def test_batch_without_drift_is_a_noop_and_keeps_the_champion(stream):
    _, records, _ = stream
    same = records["b02-same.parquet"]
    assert same.decision == "noop", same.reason
    assert same.drift_share == 0.0
    assert same.model_version is None
    assert same.champion_version_after == 1


def test_abrupt_concept_change_retrains_on_that_batch_and_promotes(stream):
    _, records, versions = stream
    change = records["b03-concept-change.csv"]
    assert change.decision == "retrain", change.reason
    assert change.reason.startswith("concept change")
    assert change.champion_accuracy_before < 0.2  # the old model is now mostly wrong
    assert change.promoted and change.champion_version_after == change.model_version == 2
    v2 = next(v for v in versions if v["version"] == 2)
    assert v2["trained_on"] == "b03-concept-change.csv"  # old concept superseded: not in the window


def test_moderate_covariate_shift_fine_tunes_the_champion(stream):
    _, records, versions = stream
    shift = records["b04-shift.csv"]
    assert shift.decision == "fine_tune", shift.reason
    assert {"x one", "x-two", "noise"} <= set(shift.drifted_columns)
    assert shift.model_version == 3
    v3 = next(v for v in versions if v["version"] == 3)
    assert v3["parent_version"] == "2" and v3["decision"] == "fine_tune"


def test_schema_violating_batch_is_rejected_quarantined_and_changes_nothing(stream):
    ws, records, versions = stream
    broken = records["b05-broken.csv"]
    assert broken.decision == "reject"
    assert "missing column(s) 'colour'" in broken.reason
    assert "column 'x one': values of type object, expected numbers" in broken.reason
    assert broken.model_version is None
    assert broken.champion_version_after == records["b04-shift.csv"].champion_version_after
    # Monitoring goes on: the champion is scored on the rejected batch ('colour' counts as missing).
    assert broken.champion_accuracy_before > 0.5
    assert broken.reason.endswith(f"; champion v3 scores {broken.champion_accuracy_before:.1%} on its "
                                  "1,400 labelled rows")
    quarantined = Path(broken.quarantined_to)
    assert quarantined.read_bytes() == (ws.batches / "b05-broken.csv").read_bytes()
    report = json.loads(quarantined.with_name("b05-broken.csv.validation.json").read_text())
    assert any("colour" in f for f in report["failures"])
    assert (ws.batches / "b05-broken.csv").exists()  # nothing deleted
    assert not any(v["batch"] == "b05-broken.csv" for v in versions)


def test_next_good_batch_after_a_reject_is_processed(stream):
    _, records, _ = stream
    after = records["b06-good-again.csv"]
    assert after.validation == "passed"
    assert after.decision != "reject", after.reason


def test_returning_concepts_reinstate_former_champions_without_training(stream):
    ws, records, versions = stream
    # b06 follows b03's boundary again: v2 (trained on b03) beats the fine-tuned v3 on it.
    back = records["b06-good-again.csv"]
    assert back.decision == "reuse", back.reason
    assert back.reason.startswith("concept returned: v2 scores")
    assert back.model_version == 2 and back.champion_version_after == 2 and back.train_seconds is None
    # b07 is b01's concept: the champion is now mostly wrong, and v1 comes back instead of a retrain.
    first_again = records["b07-first-concept-again.csv"]
    assert first_again.champion_accuracy_before < 0.2
    assert first_again.decision == "reuse", first_again.reason
    assert first_again.champion_version_after == 1 and first_again.concept == 1
    assert max(v["version"] for v in versions) == 3  # no version registered for either batch
    assert ws.champion() == 1


def test_each_version_carries_the_replay_memory_it_learnt_and_it_reloads(stream):
    ws, records, versions = stream
    from perennial.adapters.batch_files import holdout_split, load_batch
    from perennial.adapters.mlflow_registry import replay_memory
    from perennial.core.config import load_config

    config = load_config(ws.config_path)
    v1 = next(v for v in versions if v["version"] == 1)
    assert v1["replay_memory"] == f"runs:/{v1['run_id']}/replay/memory.parquet"  # referenced from the version
    v1_memory = replay_memory(config, ws.settings, 1)
    first = load_batch(ws.batches / "b01-first.csv", config)
    train_idx, _ = holdout_split(first, config)
    # v1's memory is the training rows of b01 (fewer than replay_rows), the holdout kept out.
    expected = first.frame.iloc[train_idx]
    order = ["x one", "x-two", "noise"]
    got = v1_memory.rows().sort_values(order).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected.sort_values(order).reset_index(drop=True), check_dtype=False)
    # The fine-tune on b04 mixed in as many replayed rows (of b03, its concept's memory) as it had new ones.
    v3 = next(v for v in versions if v["version"] == 3)
    assert v3["trained_on"] == f"b04-shift.csv,replay ({len(train_idx)} rows)"
    # After b07 reinstated v1, the state's memory is v1's plus b07's training rows.
    state_memory = ws.store.replay(config.lifelong.replay_rows, config.data.target)
    assert len(state_memory) == 2 * len(train_idx)


def test_accuracy_matrix_and_costs_are_logged(stream):
    ws, records, _ = stream
    from mlflow import MlflowClient

    matrix = ws.store.matrix()
    accepted = [b for b, r in sorted(records.items()) if r.decision != "reject"]
    assert [w.batch for w in matrix.windows] == accepted
    assert [w.concept for w in matrix.windows] == [1, 1, 2, 2, 2, 1]
    client = MlflowClient(ws.settings.tracking_uri())
    fine_tune = records["b04-shift.csv"]
    run = client.get_run(fine_tune.run_id)
    for key in ("train_seconds", "train_cpu_seconds", "eval_seconds", "trained_rows", "accuracy_reached",
                "avg_accuracy", "bwt", "forgetting", "concept_forgetting", "challenger_forgetting"):
        assert key in run.data.metrics, key
    assert run.data.metrics["trained_rows"] == fine_tune.trained_rows == 2 * 1050
    lifelong = {a.path for a in client.list_artifacts(fine_tune.run_id, "lifelong")}
    assert lifelong == {"lifelong/accuracy_matrix.csv", "lifelong/accuracy_matrix.png"}
    # b03 superseded b01's concept: the retrain's forgetting is measured on its own concept only.
    assert records["b03-concept-change.csv"].forgetting > 0.5  # on b01/b02, over all windows
    assert client.get_run(records["b03-concept-change.csv"].run_id).data.metrics["concept_forgetting"] == 0


def test_ledger_lists_every_batch_once_and_a_second_run_does_nothing(stream):
    ws, records, _ = stream
    ledger = [r.batch for r in ws.store.records()]
    assert ledger == sorted(records)
    assert ws.run() == []


def test_registry_lineage_and_artifacts(stream):
    ws, records, versions = stream
    from mlflow import MlflowClient

    client = MlflowClient(ws.settings.tracking_uri())
    run = client.get_run(records["b03-concept-change.csv"].run_id)
    assert run.data.tags[Tag.DECISION] == "retrain"
    assert run.data.metrics["champion_accuracy_before"] < 0.2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"drift", "validation", "lineage.json", "reference"} <= artifacts
    drift_files = {a.path for a in client.list_artifacts(run.info.run_id, "drift")}
    assert "drift/drift_report.html" in drift_files
    import mlflow

    model = mlflow.sklearn.load_model("models:/stream-model@champion")
    assert set(model.classes_) == {"low", "high"}


def test_worse_challenger_is_registered_but_not_promoted(tmp_path, monkeypatch, prefect_server):
    ws = new_workspace(tmp_path, monkeypatch, policy={"promotion_margin": 0.5})
    ws.add("a.csv", make_batch(seed=11))
    ws.add("b.csv", make_batch(seed=12, shift=1.5, theta=10.6))
    first, second = ws.run()
    assert second.decision == "fine_tune", second.reason
    assert second.model_version == 2 and second.promoted is False
    assert second.champion_version_after == 1
    assert "not promoted" in second.promotion
    by_version = {v["version"]: v for v in ws.versions()}
    assert by_version[1]["aliases"] == ["champion"]
    assert by_version[2]["aliases"] == ["challenger"]
    assert by_version[2]["promoted"] == "false"
    assert by_version[2]["promotion"].startswith("not promoted: challenger")


def test_fine_tune_that_forgets_beyond_the_budget_is_registered_not_promoted(tmp_path, monkeypatch,
                                                                            prefect_server):
    ws = new_workspace(tmp_path, monkeypatch, lifelong={"forgetting_budget": 0.0, "replay_ratio": 0.0})
    ws.add("a.csv", make_batch(seed=21))
    ws.add("b.csv", make_batch(seed=22))
    ws.add("c.csv", make_batch(seed=23, shift=1.5, theta=10.6))
    first, second, third = ws.run()
    assert second.decision == "noop"
    assert third.decision == "fine_tune", third.reason
    assert third.model_version == 2 and third.promoted is False and third.champion_version_after == 1
    assert third.promotion.startswith("not promoted: forgets ")
    assert third.promotion.endswith("on 2 earlier window(s) of its concept (budget 0.0%)")
    assert ws.champion() == 1


def test_rerun_after_a_crash_processes_no_batch_twice(workspace: Workspace, monkeypatch):
    ws = workspace
    ws.add("a.csv", make_batch(seed=21))
    ws.run()
    ws.add("b.csv", make_batch(seed=22, flip=True))
    ws.add("c.csv", make_batch(seed=23, flip=True))
    # b.csv's cycle crashes mid-way, after it was validated, decided and its MLflow run logged,
    # before anything was registered or recorded.
    monkeypatch.setenv("PERENNIAL_FAILPOINT", "decided:raise")
    with pytest.raises(Exception, match="failpoint decided reached"):
        ws.run()
    assert [r.batch for r in ws.store.records()] == ["a.csv"]
    monkeypatch.delenv("PERENNIAL_FAILPOINT")
    rerun = ws.run()
    assert [r.batch for r in rerun] == ["b.csv", "c.csv"]
    assert [r.batch for r in ws.store.records()] == ["a.csv", "b.csv", "c.csv"]
    registered = [v["batch"] for v in ws.versions()]
    assert len(registered) == len(set(registered))


def test_each_cycle_leaves_prefect_artifacts(stream):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(
            any_=["stream-model-cycle", "stream-model-drift", "stream-model-mlflow-run"])))
    by_key: dict[str, list] = {}
    for artifact in artifacts:
        by_key.setdefault(artifact.key, []).append(artifact)
    assert len(by_key["stream-model-cycle"]) == 7  # one summary per batch
    assert len(by_key["stream-model-drift"]) == 5  # batches compared with a champion
    assert len(by_key["stream-model-mlflow-run"]) == 7
    summaries = " ".join(a.data for a in by_key["stream-model-cycle"])
    assert "`b05-broken.csv` -> **reject**" in summaries
    assert all("/#/experiments/" in a.data for a in by_key["stream-model-mlflow-run"])


def test_registering_the_same_batch_twice_returns_the_first_version(stream):
    """What a rerun does when a crash fell between registration and the ledger line."""
    ws, records, _ = stream
    from perennial.adapters.batch_files import read_batch
    from perennial.adapters.mlflow_registry import champion_version, register
    from perennial.core.config import load_config

    config = load_config(ws.config_path)
    batch = read_batch(ws.batches / "b03-concept-change.csv", "auto", "label")
    before = len(ws.versions())
    again = register(config, ws.settings, records[batch.id].run_id, None, batch, None, None, None)
    assert again == records[batch.id].model_version
    assert len(ws.versions()) == before
    assert int(champion_version(ws.name, ws.settings).version) == ws.champion()


def test_each_cycle_rewrites_the_report_page_logged_on_the_latest_version_and_linked(stream):
    """The page of the model's life after every cycle: in the state, on the run of the latest version
    in MLflow (the version tagged with where), and a Prefect link to it per cycle."""
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    ws, records, versions = stream
    page = ws.store.root / "report.html"
    text = page.read_text()
    assert "<b>7</b> batches" in text and "<script src" not in text
    assert 'Rejected: <span title="validation failed' in text and ">b05-broken.csv</span>" in text
    latest = max(versions, key=lambda v: v["version"])
    client = MlflowClient(ws.settings.tracking_uri())
    version = client.get_model_version("stream-model", str(latest["version"]))
    assert version.tags[Tag.REPORT] == f"runs:/{version.run_id}/report/report.html"
    logged = Path(client.download_artifacts(version.run_id, "report/report.html", str(ws.root)))
    assert logged.read_text() == text  # the page as of the last cycle
    with get_client(sync_client=True) as prefect:
        links = prefect.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(
            any_=["stream-model-report"])))
    assert len(links) == len(records)  # one per cycle
    assert {a.data for a in links} == {f"[Report page of stream-model]({page.resolve().as_uri()})"}


def test_each_batch_measured_for_drift_has_one_run_in_the_models_evidently_project(stream):
    """`drift.workspace` by default: `<state>/evidently`, read here by Evidently's own workspace."""
    from evidently.ui.workspace import Workspace as EvidentlyWorkspace

    ws, records, _ = stream
    evidently = EvidentlyWorkspace(str(ws.settings.state_dir / "evidently"))
    (project,) = evidently.search_project("stream-model")
    names = sorted(evidently.get_run(project.id, run).name for run in evidently.list_runs(project.id))
    measured = sorted(b for b, r in records.items() if r.drift_share is not None)
    assert names == measured and len(measured) == 5  # not the first batch (no champion), not the rejected
    assert "b05-broken.csv" not in names
    assert [p.title for p in project.dashboard.model().panels] == [
        "Drift share", "Drifted columns", "Drift score per column"]
