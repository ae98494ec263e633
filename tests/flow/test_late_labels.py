"""Labels that arrive later (`data.id`, `labels.source`), with the real stack: a batch served without its
labels is estimated and never trained on; its labels, ingested later, make its real cycle once, where the
gap between estimate and realised metric tells concept change from covariate shift; labels short of
`labels.min_coverage`, or of no batch, expire after `labels.max_wait_batches` newer batches; a kill -9
while the labels are joined leaves them joined once."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import Workspace, make_batch, new_workspace
from perennial.adapters.mlflow_registry import Tag
from perennial.app import cli
from perennial.app.local_server import BIN
from perennial.core.lifelong import KEY

WAITING = "b3.csv"  # the batch served without labels
TRAIN_ROWS = 1050  # its rows a model may learn from once its 1,400 labels are joined (holdout 25%)


def rows(seed: int, **kw) -> pd.DataFrame:
    """A labelled batch of conftest's SEA stream, with a row id `rid` unique across seeds."""
    frame = make_batch(seed=seed, **kw)
    frame.insert(0, "rid", np.arange(seed * 10_000, seed * 10_000 + len(frame)))
    return frame


def near_the_boundary(seed: int) -> pd.DataFrame:
    """Covariate shift: rows crowd the rule's boundary (x one + x-two = 10), where the model is unsure;
    each marginal keeps its range and the rule is the same, so the champion's accuracy drops and its
    calibrated confidence foresees the drop."""
    frame = rows(seed)
    noise = np.random.default_rng(seed + 100).normal(0, 0.3, len(frame))
    frame["x-two"] = (10 - frame["x one"] + noise).round(3)
    frame["label"] = np.where(frame["x one"] + frame["x-two"] <= 10, "low", "high")
    return frame


def labels_of(frame: pd.DataFrame, flip: bool = False) -> pd.DataFrame:
    """A label file's rows: the id and the target (inverted with `flip`: a concept change)."""
    labels = frame[["rid", "label"]].copy()
    if flip:
        labels["label"] = labels["label"].map({"low": "high", "high": "low"})
    return labels


def late_workspace(root: Path, monkeypatch, **labels) -> Workspace:
    ws = new_workspace(root, monkeypatch, data={"id": "rid"}, labels={"source": "labels", **labels})
    (root / "labels").mkdir()
    return ws


def copy_of(seed: Workspace, root: Path, monkeypatch) -> Workspace:
    """A copy of a workspace (batches, labels, state, MLflow store) for one test. Its MLflow store still
    finds and adds artifacts under the seed's folder, and its ledger names the seed's batch files (same
    bytes); the state adopts the copy's batch folder as a user's moved state does (README)."""
    shutil.copytree(seed.root, root)
    (root / "state" / seed.name / "source.json").unlink()
    monkeypatch.setenv("PERENNIAL_STATE_DIR", str(root / "state"))
    monkeypatch.setenv("PERENNIAL_MLFLOW_TRACKING_URI", f"sqlite:///{root / 'state' / 'mlflow.db'}")
    return Workspace(root=root, batches=root / "batches", config_path=root / "perennial.yaml", name=seed.name)


def perennial(ws: Workspace, *args: str, failpoint: str | None = None) -> subprocess.CompletedProcess:
    """The `perennial` command in its own process (on the session's Prefect test server, when started)."""
    from prefect.settings import get_current_settings

    env = dict(os.environ)
    if (api := get_current_settings().api.url) is not None:
        env["PREFECT_API_URL"] = str(api)
    if failpoint:
        env["PERENNIAL_FAILPOINT"] = failpoint
    return subprocess.run([str(BIN / "perennial"), *args, "--config", str(ws.config_path)], env=env,
                          capture_output=True, text=True, timeout=600)


def ledger_lines(ws: Workspace, batch: str | None = None) -> list[dict]:
    lines = [json.loads(x) for x in ws.store.ledger_path.read_text().splitlines()]
    return [x for x in lines if batch is None or x["batch"] == batch]


def final_lines(ws: Workspace, batch: str) -> list[dict]:
    """The batch's lines after it was served: neither its decision recorded ahead (`started`) nor the
    line of its serving."""
    return [x for x in ledger_lines(ws, batch) if x["status"] not in ("started", "awaiting labels")]


def pool_ids(ws: Workspace) -> set[str]:
    return set(ws.store.label_pool().frame["id"])


def ids_of(frame: pd.DataFrame) -> set[str]:
    return {str(i) for i in frame["rid"]}


def remembered(ws: Workspace, frame: pd.DataFrame) -> pd.DataFrame:
    """The replay memory's rows (what fine-tunes and retrains learn from again) that came from `frame`."""
    memory = ws.store.replay(100_000, "label").frame
    assert not memory.duplicated(subset=[KEY]).any() and not memory["rid"].duplicated().any()
    return memory[memory["rid"].astype(str).isin(ids_of(frame))]


def mlflow_runs_of(ws: Workspace, batch: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(ws.settings.tracking_uri())
    runs = client.search_runs([client.get_experiment_by_name(ws.name).experiment_id])
    return [r for r in runs if r.data.tags.get(Tag.BATCH) == batch]


def versions_of(ws: Workspace, batch: str) -> list[int]:
    return [v["version"] for v in ws.versions() if v.get("batch") == batch]


# -- Seeds: b1 and b2 train v1; then b3 is served without labels. Each test works on a copy.

@pytest.fixture(scope="module")
def trained(tmp_path_factory, prefect_server) -> Workspace:
    with pytest.MonkeyPatch.context() as mp:
        ws = late_workspace(tmp_path_factory.mktemp("trained"), mp)
        ws.add("b1.csv", rows(1))
        ws.add("b2.csv", rows(2))
        assert [(r.batch, r.decision) for r in ws.run()] == [("b1.csv", "retrain"), ("b2.csv", "noop")]
    return ws


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory) -> Workspace:
    with pytest.MonkeyPatch.context() as mp:
        ws = copy_of(trained, tmp_path_factory.mktemp("served") / "ws", mp)
        ws.add(WAITING, rows(3).drop(columns="label"))
        [b3] = ws.run()
        assert (b3.decision, b3.status) == ("await_labels", "awaiting labels")
    return ws


# -- 1. The whole story through the command ------------------------------------------------------------

def test_served_without_labels_then_learnt_once_its_labels_are_ingested(tmp_path, monkeypatch,
                                                                        prefect_server):
    ws = late_workspace(tmp_path, monkeypatch)
    ws.add("b1.csv", rows(1))
    ws.add("b2.csv", rows(2))
    run = perennial(ws, "run")
    assert run.returncode == 0, run.stderr
    assert versions_of(ws, "b1.csv") == [1] and len(ws.versions()) == 1

    b3 = rows(3)
    ws.add(WAITING, b3.drop(columns="label"))
    run = perennial(ws, "run")
    assert run.returncode == 0, run.stderr
    served_line = served_and_shown(ws, b3)

    given = tmp_path / "l3.csv"
    labels_of(b3).to_csv(given, index=False)
    ingest = perennial(ws, "ingest-labels", str(given))
    assert ingest.returncode == 0, ingest.stderr
    assert (tmp_path / "labels" / "l3.csv").read_bytes() == given.read_bytes()
    assert len(ledger_lines(ws, WAITING)) == 1  # nothing joined before the next run

    run = perennial(ws, "run")
    assert run.returncode == 0, run.stderr
    learnt_once(ws, served_line, b3)


def served_and_shown(ws: Workspace, b3: pd.DataFrame) -> dict:
    """The served batch's one line (no decision recorded ahead, nothing trained), its MLflow run and
    `perennial status`."""
    [served_line] = ledger_lines(ws, WAITING)
    assert (served_line["decision"], served_line["status"]) == ("await_labels", "awaiting labels")
    estimate = served_line["estimate"]
    assert estimate["metric"] == "accuracy" and estimate["low"] <= estimate["value"] <= estimate["high"]
    assert 0.9 < estimate["value"] <= 1.0 and not estimate["alarm"]  # the same concept: v1 still fits
    assert served_line["reason"].startswith("waits for its labels: estimated accuracy")
    assert len(ws.versions()) == 1 and served_line["model_version"] is None  # never trained on
    assert remembered(ws, b3).empty
    [mlflow_run] = mlflow_runs_of(ws, WAITING)
    assert mlflow_run.data.metrics["estimated_accuracy"] == pytest.approx(estimate["value"])

    status = perennial(ws, "status")
    assert status.returncode == 0, status.stderr
    [row] = [line for line in status.stdout.splitlines() if line.startswith(f"│ {WAITING}")]
    assert f"~{estimate['value'] * 100:.1f}%" in row and "await_labels" in row and "awaiting labels" in row
    assert "Labels: 1 batch(es) waiting (b3.csv)" in status.stdout
    return served_line


def learnt_once(ws: Workspace, served_line: dict, b3: pd.DataFrame) -> None:
    """The run after its labels came: one final line naming both figures, the labels taken from the pool,
    the batch's rows learnt once; a further run changes nothing."""
    [done] = final_lines(ws, WAITING)
    assert done["decision"] == "noop" and done["status"] == "done"  # the concept held
    assert re.search(r"realised accuracy [\d.]+% \(v1, which served it\), estimated [\d.]+% \[",
                     done["reason"])
    # The estimate's band held the accuracy its labels show.
    assert done["estimate"]["realised"] == done["champion_accuracy_before"]
    assert done["estimate"]["low"] <= done["estimate"]["realised"] <= done["estimate"]["high"]
    assert done["labels"]["labelled"] == 1400 and done["labels"]["coverage"] == 1.0
    assert done["run_id"] == served_line["run_id"]  # the batch's one MLflow run
    assert pool_ids(ws) == set() and ws.store.label_pool().files.keys() == {"l3.csv"}
    assert len(pd.read_csv(ws.store.labelled_path(WAITING))) == 1400
    # Learnt once: its training rows joined the replay memory once and count once as not learnt yet.
    assert len(remembered(ws, b3)) == TRAIN_ROWS
    b2_line = final_lines(ws, "b2.csv")[0]
    assert done["unlearned_rows"] == b2_line["unlearned_rows"] + TRAIN_ROWS
    assert len(ws.versions()) == 1 and len(mlflow_runs_of(ws, WAITING)) == 1

    ledger = ws.store.ledger_path.read_bytes()
    again = perennial(ws, "run")
    assert again.returncode == 0, again.stderr
    assert "No new batches for test-model" in again.stdout
    assert ws.store.ledger_path.read_bytes() == ledger and len(ws.versions()) == 1


# -- 2. The gap between estimate and realised metric -------------------------------------------------------

def test_labels_that_contradict_the_estimate_are_a_concept_change_and_retrain(served, tmp_path, monkeypatch):
    ws = copy_of(served, tmp_path / "ws", monkeypatch)
    labels_of(rows(3), flip=True).to_csv(ws.root / "labels" / "l3.csv", index=False)
    [b3] = ws.run()
    assert b3.batch == WAITING and b3.decision == "retrain"
    assert b3.reason.startswith("concept change: realised accuracy")
    assert "the estimate did not foresee" in b3.reason
    assert b3.estimate["realised"] < b3.estimate["low"]  # far below what the champion's confidence said
    assert b3.promoted and ws.champion() == b3.model_version == 2
    assert versions_of(ws, WAITING) == [2] and b3.trained_rows == TRAIN_ROWS
    assert pool_ids(ws) == set()


def test_a_drop_the_estimate_foresaw_is_covariate_shift_not_concept_change(trained, tmp_path, monkeypatch):
    ws = copy_of(trained, tmp_path / "ws", monkeypatch)
    b3 = near_the_boundary(3)
    ws.add(WAITING, b3.drop(columns="label"))
    [waiting] = ws.run()
    assert waiting.decision == "await_labels" and waiting.estimate["value"] < 0.97  # the drop, foreseen
    labels_of(b3).to_csv(ws.root / "labels" / "l3.csv", index=False)
    [b3_done] = ws.run()
    assert "concept change" not in b3_done.reason
    assert b3_done.reason.startswith("covariate shift: realised accuracy")
    assert "the estimate foresaw" in b3_done.reason and b3_done.decision == "fine_tune"
    estimate = b3_done.estimate
    assert estimate["low"] <= estimate["realised"] <= estimate["high"] and estimate["realised"] < 0.95
    assert versions_of(ws, WAITING) == [2]


def test_moved_features_under_the_same_rule_are_no_concept_change(trained, tmp_path, monkeypatch):
    ws = copy_of(trained, tmp_path / "ws", monkeypatch)
    b3 = rows(3, shift=2.0)
    ws.add(WAITING, b3.drop(columns="label"))
    [waiting] = ws.run()
    assert waiting.decision == "await_labels" and waiting.drift_share > 0.5
    labels_of(b3).to_csv(ws.root / "labels" / "l3.csv", index=False)
    [b3_done] = ws.run()
    assert "concept change" not in b3_done.reason and b3_done.decision != "retrain"
    assert "realised accuracy" in b3_done.reason and "estimated" in b3_done.reason
    assert b3_done.estimate["low"] <= b3_done.estimate["realised"] <= b3_done.estimate["high"]


# -- 3. Coverage: a batch is learnt from with enough labels, or never ------------------------------------

def test_a_batch_half_labelled_waits_then_expires_unlearnt(served, tmp_path, monkeypatch, capsys):
    ws = copy_of(served, tmp_path / "ws", monkeypatch)
    ws.configure(labels__max_wait_batches=2)
    b3 = rows(3)
    half = labels_of(b3).iloc[::2]  # 50%, below labels.min_coverage 80%
    half.to_csv(ws.root / "labels" / "l3.csv", index=False)
    assert ws.run() == []
    assert len(ledger_lines(ws, WAITING)) == 1 and ws.store.record(WAITING).status == "awaiting labels"
    assert pool_ids(ws) == ids_of(half)  # kept for when the rest arrive
    assert not ws.store.labelled_path(WAITING).exists()

    ws.add("b4.csv", rows(4))
    assert [r.batch for r in ws.run()] == ["b4.csv"]  # one newer batch: it still waits
    assert ws.store.record(WAITING).status == "awaiting labels" and pool_ids(ws) == ids_of(half)

    ws.add("b5.csv", rows(5))
    records = {r.batch: r for r in ws.run()}
    expired = records[WAITING]
    assert (expired.status, expired.decision) == ("labels expired", "noop")
    assert expired.reason == ("labels expired: 50% of its 1,400 rows labelled after 2 newer batches "
                              "(labels.min_coverage 80%, labels.max_wait_batches 2); not learnt from, 700 "
                              "rows never labelled")
    assert not pool_ids(ws) & ids_of(b3)
    # Never learnt from: no version of it, none of its rows in what later adaptations replay.
    assert versions_of(ws, WAITING) == [] and remembered(ws, b3).empty
    assert not ws.store.labelled_path(WAITING).exists()
    assert cli.main(["status", "--config", str(ws.config_path)]) == 0
    assert "noop (labels expired)" in capsys.readouterr().out

    (ws.root / "labels" / "l3-rest.csv").write_text(labels_of(b3).iloc[1::2].to_csv(index=False))
    ws.add("b6.csv", rows(6))  # the rest, too late: the batch stays expired and unlearnt
    assert [r.batch for r in ws.run()] == ["b6.csv"]
    assert versions_of(ws, WAITING) == [] and remembered(ws, b3).empty


# -- 4. Orphans and repeated ids --------------------------------------------------------------------------

def test_orphan_labels_expire_and_the_last_label_of_an_id_wins(served, tmp_path, monkeypatch):
    ws = copy_of(served, tmp_path / "ws", monkeypatch)
    ws.configure(labels__max_wait_batches=2)
    b3 = rows(3)
    labels = labels_of(b3)
    first, second = labels.iloc[0], labels.iloc[1]
    other = {"low": "high", "high": "low"}
    # The file repeats b3's first id with the other label; a later file (name order) corrects its second.
    pd.concat([labels, pd.DataFrame([{"rid": first["rid"], "label": other[first["label"]]}])]).to_csv(
        ws.root / "labels" / "l3.csv", index=False)
    pd.DataFrame([{"rid": second["rid"], "label": other[second["label"]]}]).to_csv(
        ws.root / "labels" / "m3.csv", index=False)
    orphans = pd.DataFrame({"rid": np.arange(990_000, 990_050), "label": "low"})
    orphans.to_csv(ws.root / "labels" / "orphans.csv", index=False)

    [b3_done] = ws.run()
    assert b3_done.batch == WAITING and b3_done.labels["labelled"] == 1400
    learnt = pd.read_csv(ws.store.labelled_path(WAITING)).set_index("rid")["label"]
    assert len(learnt) == 1400 and not learnt.index.duplicated().any()
    assert learnt[first["rid"]] == other[first["label"]] and learnt[second["rid"]] == other[second["label"]]
    assert learnt[labels.iloc[2]["rid"]] == labels.iloc[2]["label"]
    pool = ws.store.label_pool()
    assert set(pool.frame["id"]) == ids_of(orphans)  # kept: their batch may still arrive
    assert pool.duplicates == 2 and pool.expired == 0

    ws.add("b4.csv", rows(4))
    ws.run()
    assert pool_ids(ws) == ids_of(orphans)  # one newer batch: kept
    ws.add("b5.csv", rows(5))
    ws.run()
    pool = ws.store.label_pool()
    assert pool_ids(ws) == set() and pool.expired == 50  # after labels.max_wait_batches 2 newer batches


# -- 5. ingest-labels refuses what the monitor could not join ---------------------------------------------

def test_ingest_labels_refuses_a_file_it_cannot_join_and_copies_nothing(tmp_path, monkeypatch):
    ws = late_workspace(tmp_path, monkeypatch)
    folder = tmp_path / "labels"
    for column, given in [("id", pd.DataFrame({"label": ["low"]})), ("target", pd.DataFrame({"rid": [1]}))]:
        path = tmp_path / f"no-{column}.csv"
        given.to_csv(path, index=False)
        refused = perennial(ws, "ingest-labels", str(path))
        assert refused.returncode == 2, refused.stdout
        wanted = "rid" if column == "id" else "label"
        named = re.escape(str(path))
        assert re.fullmatch(rf"perennial: error: label file {named}: {column} column '{wanted}' "
                            r"missing \(found: \w+\)\n", refused.stderr), refused.stderr
        assert list(folder.iterdir()) == []  # not even a partial copy

    plain = new_workspace(tmp_path / "plain", monkeypatch)  # labels come with the batches
    path = tmp_path / "plain.csv"
    pd.DataFrame({"rid": [1], "label": ["low"]}).to_csv(path, index=False)
    refused = perennial(plain, "ingest-labels", str(path))
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"perennial: error: {plain.config_path}: key 'labels.source' is not set")


# -- 6. kill -9 while labels are joined ---------------------------------------------------------------------

@pytest.mark.parametrize("point", ["decided", "registered", "state-written"])
def test_killed_while_joining_labels_the_next_run_joins_them_once(served, tmp_path, monkeypatch, point):
    """The labels of b3 (flipped: a concept change, so a retrain registers a version) are joined by a
    `perennial run` killed with SIGKILL the first time it reaches `point`: that run has no new batch (b1-b3
    were processed by the seed's run), so the first time is in b3's cycle on its labels — `decided` after
    its decision is recorded ahead, `registered` after v2 is registered, `state-written` after the state
    files (the pool without b3's labels) are in place and before its ledger line. Exit -9 and the state
    the kill left (below) show where it stopped. The next run finishes the cycle; b3 must then have one
    final ledger line, no label left in the pool, its 1,050 training rows trained on once and remembered
    once, one registered version and one MLflow run."""
    ws = copy_of(served, tmp_path / "ws", monkeypatch)
    b3 = rows(3)
    labels_of(b3, flip=True).to_csv(ws.root / "labels" / "l3.csv", index=False)

    killed = perennial(ws, "run", failpoint=point)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert final_lines(ws, WAITING) == []
    assert ws.store.labelled_path(WAITING).exists()
    if point == "state-written":
        assert ws.store.staged_dir.exists() and any(ws.store.staged_dir.iterdir())
        assert not pool_ids(ws) & ids_of(b3)  # the pool already lost them; the line is not written
    else:
        assert ws.store.intent(WAITING).decision == "retrain" and pool_ids(ws) == ids_of(b3)
    assert len(versions_of(ws, WAITING)) == (0 if point == "decided" else 1)

    ws.run()
    [done] = final_lines(ws, WAITING)
    assert done["decision"] == "retrain" and done["reason"].startswith("concept change")
    assert done["promoted"] and ws.champion() == done["model_version"] == 2
    assert done["trained_rows"] == done["learned_rows"] == TRAIN_ROWS
    assert done["labels"]["labelled"] == 1400
    assert ws.store.intent(WAITING) is None and ws.store.pending() == []
    assert not pool_ids(ws) & ids_of(b3)
    assert len(remembered(ws, b3)) == TRAIN_ROWS  # the new concept's memory: b3's rows, once
    assert versions_of(ws, WAITING) == [2] and len(mlflow_runs_of(ws, WAITING)) == 1
    assert Counter(x["batch"] for x in ledger_lines(ws) if x["status"] == "done") == Counter(
        ["b1.csv", "b2.csv", WAITING])

    ledger = ws.store.ledger_path.read_bytes()
    assert ws.run() == [] and ws.store.ledger_path.read_bytes() == ledger



def test_a_resumed_cycle_on_labels_keeps_the_realised_metric_on_its_line(served, tmp_path, monkeypatch):
    """The realised metric of the model that served the batch, recorded ahead with the decision, stays on
    the line whether the cycle ran through or was resumed after a crash."""
    ws = copy_of(served, tmp_path / "ws", monkeypatch)
    labels_of(rows(3), flip=True).to_csv(ws.root / "labels" / "l3.csv", index=False)
    monkeypatch.setenv("PERENNIAL_FAILPOINT", "decided:raise")
    with pytest.raises(RuntimeError, match="failpoint decided reached"):
        ws.run()
    recorded = ws.store.intent(WAITING).estimate
    assert recorded["served_by"] == 1 and recorded["realised"] < recorded["low"]
    monkeypatch.delenv("PERENNIAL_FAILPOINT")
    [done] = ws.run()
    assert done.reason.startswith("concept change") and done.estimate == recorded
