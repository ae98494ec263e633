"""The `perennial` command as a user runs it: run, status, demo, and errors on bad input."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import make_batch, new_workspace
from perennial.app.cli import main
from perennial.core.state import StateStore


def test_run_then_status(tmp_path, monkeypatch, capsys, prefect_server):
    ws = new_workspace(tmp_path, monkeypatch, model={"family": "hgb"})
    ws.add("2026-01.parquet", make_batch(seed=1, classes=3))
    ws.add("2026-02.csv", make_batch(seed=2, classes=3))
    assert main(["run", "--config", str(ws.config_path)]) == 0
    out = capsys.readouterr().out
    assert "2026-01.parquet" in out and "retrain" in out and "noop" in out

    assert main(["run", "--config", str(ws.config_path)]) == 0
    assert "No new batches for test-model" in capsys.readouterr().out

    assert main(["status", "--config", str(ws.config_path)]) == 0
    out = capsys.readouterr().out
    assert "test-model: champion v1" in out
    assert "Registered versions" in out and "Last 2 decisions" in out


def test_unreadable_and_empty_batches_are_quarantined_and_the_stream_goes_on(tmp_path, monkeypatch,
                                                                             prefect_server):
    ws = new_workspace(tmp_path, monkeypatch)
    ws.add("a.csv", make_batch(seed=1))
    (ws.batches / "b.parquet").write_bytes(b"PAR1 garbage")
    (ws.batches / "c.csv").write_text("x one,label\n")
    ws.add("d.csv", make_batch(seed=2).drop(columns=["label"]))
    ws.add("e.csv", make_batch(seed=3))
    records = {r.batch: r for r in ws.run()}
    assert [records[b].decision for b in ["a.csv", "b.parquet", "c.csv", "d.csv", "e.csv"]] == [
        "retrain", "reject", "reject", "reject", "noop"]
    assert "b.parquet: cannot be read as parquet" in records["b.parquet"].reason
    assert records["c.csv"].reason.endswith("c.csv: has no rows")
    assert "d.csv: target column 'label' missing" in records["d.csv"].reason
    for name in ("b.parquet", "c.csv", "d.csv"):
        assert Path(records[name].quarantined_to).read_bytes() == (ws.batches / name).read_bytes()
        assert records[name].champion_version_after == 1
    assert ws.champion() == 1


def test_new_label_is_rejected_unless_allowed_then_forces_a_retrain(tmp_path, monkeypatch, prefect_server):
    ws = new_workspace(tmp_path, monkeypatch)
    ws.add("a.csv", make_batch(seed=1))
    ws.add("b.csv", make_batch(seed=2, classes=3))  # a third label, "mid", appears
    first, second = ws.run()
    assert second.decision == "reject"
    assert "label column 'label': labels never seen before: mid" in second.reason

    ws.configure(validation__allow_new_classes=True)
    ws.add("c.csv", make_batch(seed=3, classes=3))
    (third,) = ws.run()
    assert third.decision == "retrain"
    assert third.reason.startswith("new label(s) mid")
    assert third.promoted
    assert ws.store.schema().classes == ("high", "low", "mid")


def test_demo_shows_every_decision_and_a_second_run_does_not_fail(tmp_path, monkeypatch, capsys,
                                                                  prefect_server):
    for var in ("PERENNIAL_STATE_DIR", "PERENNIAL_MLFLOW_TRACKING_URI", "PREFECT_HOME"):
        monkeypatch.setenv(var, "set-by-the-demo")  # restored after the test
    demo = ["demo", "--workdir", str(tmp_path / "demo"), "--rows", "1400"]
    assert main(demo) == 0
    out = capsys.readouterr().out
    summary = next(line for line in out.splitlines() if line.startswith("Summary:"))
    counts = {name: int(n) for name, n in re.findall(r"(reject|noop|fine_tune|retrain|reuse) (\d+)", summary)}
    assert counts["reject"] == 1, summary  # the corrupt batch
    assert all(counts[d] >= 1 for d in ("noop", "retrain", "reuse")), summary
    # The older applicants (a covariate shift) are met by comparing a fine-tune with a retrain on the
    # concept's whole history on the same holdout rows; the history, which still holds, wins.
    assert "fine_tune" in out and "retrain_all" in out
    assert "mlflow ui --backend-store-uri sqlite:///" in out and "prefect server start" in out
    assert_the_demo_page_tells_its_life(out, counts)

    assert main(demo) == 0
    assert "All batches were already processed in this workdir" in capsys.readouterr().out


def assert_the_demo_page_tells_its_life(out: str, counts: dict[str, int]) -> None:
    """The page the demo prints: every batch, the decisions the run printed, v2 reinstated; and its
    Evidently project with a run per batch measured for drift."""
    from evidently.ui.workspace import Workspace as EvidentlyWorkspace

    page = Path(re.search(r"Report: +(\S+)", out).group(1)).read_text()
    told = re.search(r"<b>(\d+)</b> batches: ([^.]+)\.", page)
    shown = {kind: int(n) for kind, n in re.findall(r"(\w+) (\d+)", told.group(2))}
    assert int(told.group(1)) == 11 == sum(shown.values())
    assert shown.get("retrain", 0) + shown.get("growth", 0) == counts["retrain"]
    assert all(shown.get(kind) == counts[kind] for kind in ("reject", "noop", "reuse")), (shown, counts)
    assert "Champion now: <b>v2</b>" in page and "concept returned: v2 scores" in page  # the reuse
    workspace = EvidentlyWorkspace(re.search(r"evidently ui --workspace (\S+)", out).group(1))
    (project,) = workspace.search_project("loan-approval")
    assert len(workspace.list_runs(project.id)) == 11 - 1 - 1  # not the first batch, not the rejected


def test_the_demo_with_delayed_labels_estimates_waits_and_decides_when_labels_arrive(tmp_path, monkeypatch,
                                                                                     capsys, prefect_server):
    """`perennial demo --delayed-labels`: batches 3-11 served without labels (an estimate each, never
    trained on), their labels one batch later; the concept change is told by the gap, the first
    season's model reused when its concept returns."""
    for var in ("PERENNIAL_STATE_DIR", "PERENNIAL_MLFLOW_TRACKING_URI", "PREFECT_HOME"):
        monkeypatch.setenv(var, "set-by-the-demo")
    workdir = tmp_path / "demo"
    assert main(["demo", "--workdir", str(workdir), "--rows", "1400", "--delayed-labels"]) == 0
    out = capsys.readouterr().out
    served = re.findall(r"(batch-\d+\.csv): await_labels \(estimated accuracy [\d.]+% \[", out)
    learnt = re.findall(r"(batch-\d+\.csv): \w+ on its labels: realised [\d.]+%, estimated [\d.]+% "
                        "when served", out)
    labelled_later = [f"batch-{i:03d}.csv" for i in range(3, 12) if i != 9]  # 9 is the corrupt batch
    assert sorted(served) == sorted(learnt) == labelled_later
    assert "batch-009.csv: reject" in out
    store = StateStore(workdir / "state", "loan-approval")
    final = {r.batch: r for r in store.records()}
    # Nothing waits; only the rejected batch's labels are left, kept until labels.max_wait_batches.
    assert not store.pending() and set(store.label_pool().frame["id"].str[:4]) == {"A009"}
    assert final["batch-004.csv"].reason.startswith("concept change: realised accuracy")
    assert final["batch-010.csv"].decision == "reuse"
    # Never trained on unlabelled rows: every version was registered by a batch once its labels came.
    assert all(final[r.batch].estimate is not None for r in store.records() if r.model_version
               and r.batch not in ("batch-001.csv", "batch-002.csv"))
