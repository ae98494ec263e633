"""Labels that arrive later, deployed: `perennial serve` on a real Prefect server on 127.0.0.1 serves a
batch without its labels (an estimate, an event), and `perennial ingest-labels` later starts the
monitor through `perennial.labels.arrived`, which learns from the batch through the `adapt` deployment.

One server and one `perennial serve` process, as tests/deployed/test_deployed.py starts them (its
`Deployed` helpers and model name); five flow runs, each a fresh Python process.
"""

from __future__ import annotations

import subprocess
from datetime import datetime

import pandas as pd
import pytest
import yaml
from test_deployed import MODEL, NEVER_IN_A_TEST, Deployed, serving

from conftest import ROWS, make_batch, wait_for
from perennial.adapters.prefect_events import LABELS_ARRIVED, PERFORMANCE_ESTIMATED, resource_id
from perennial.core.metrics import metric_named_or_accuracy

ACTION_EXECUTED = "prefect.automation.action.executed"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> Deployed:
    root = tmp_path_factory.mktemp("late-labels")
    for folder in ("batches", "labels"):
        (root / folder).mkdir()
    (root / "perennial.yaml").write_text(yaml.safe_dump({
        "name": MODEL, "data": {"source": "batches", "target": "label", "id": "id"},
        "labels": {"source": "labels"}, "deploy": {"cron": NEVER_IN_A_TEST},
        # One way to train per adaptation and no data-growth retrain: each batch takes one known path.
        "policy": {"drift_share_moderate": 0.2, "drift_share_severe": 0.7, "growth_ratio": None,
                   "candidate_budget": 0.0},
    }))
    yield from serving(root, OMP_NUM_THREADS="1")


def with_ids(frame: pd.DataFrame, first: int) -> pd.DataFrame:
    """The batch with its row key (`data.id`) first."""
    return frame.assign(id=range(first, first + len(frame)))[["id", *frame.columns]]


def events(d: Deployed, name: str, **filters) -> list[dict]:
    return d.http.post("/events/filter", json={"filter": {"event": {"name": [name]}, **filters},
                                               "limit": 50}).json()["events"]


def when(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def announced_estimate(d: Deployed, served: dict) -> None:
    """The served batch's `perennial.performance.estimated` event is on the server, with its estimate."""
    about = {"id": [resource_id(MODEL)]}
    [event] = wait_for(lambda: [e for e in events(d, PERFORMANCE_ESTIMATED, resource=about)
                                if e["payload"]["batch"] == served["batch"]],
                       "the performance.estimated event", 60)
    assert event["payload"]["estimate"] == served["estimate"] and event["payload"]["alarm"] is False
    assert event["payload"]["metric"] == served["metric"] and event["payload"]["reason"] == served["reason"]
    assert event["payload"]["champion_version"] == 1


def monitor_run_started_by(d: Deployed, arrived: dict) -> str:
    """The monitor run the automation created on the event `arrived` (its record of what it did names
    the event that triggered it and the run it created)."""
    def runs_started_by_the_event() -> list[str]:
        acted = events(d, ACTION_EXECUTED, related={"id": [f"prefect.event.{arrived['id']}"]})
        return [r["prefect.resource.id"].removeprefix("prefect.flow-run.")
                for e in acted for r in e["related"] if r["prefect.resource.role"] == "flow-run"]

    [run_id] = wait_for(runs_started_by_the_event, f"the automation's run on {arrived['event']}", 60)
    monitor_runs = {r["id"]: r for r in d.runs(f"monitor-{MODEL}")}
    assert run_id in monitor_runs, "the event's run is not a run of the monitor deployment"
    run = monitor_runs[run_id]
    assert run["created_by"]["type"] == "AUTOMATION"
    assert when(run["created"]) >= when(arrived["occurred"])
    return run_id


def test_a_batch_served_without_labels_is_estimated_then_learnt_from_when_its_labels_arrive(
        deployed: Deployed):
    d = deployed

    def ingest(name: str, frame: pd.DataFrame, command: str = "ingest") -> subprocess.CompletedProcess:
        frame.to_csv(d.root / name, index=False)
        result = d.cli(command, str(d.root / name), "--config", str(d.config))
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def settled(batch: str, status: str = "done"):
        return wait_for(lambda: (r := d.ledger().get(batch)) and r["status"] == status and r,
                        f"{batch} {status}")

    # Two labelled batches: the first model (trained by the adapt deployment), then a batch it keeps,
    # taken by the next monitor run with the batch after it (no event of its own: one run less).
    ingest("a.csv", with_ids(make_batch(seed=1), 0))
    assert settled("a.csv")["decision"] == "retrain" and d.champion() == 1
    with_ids(make_batch(seed=2), ROWS).to_csv(d.batches / "b.csv", index=False)

    # A batch without its labels (an abrupt concept change the features cannot show): estimated, waits.
    flipped = with_ids(make_batch(seed=3, flip=True), 2 * ROWS)
    ingest("c.csv", flipped.drop(columns="label"))
    served = settled("c.csv", "awaiting labels")
    assert d.ledger()["b.csv"]["decision"] == "noop" and d.ledger()["b.csv"]["status"] == "done"
    assert served["decision"] == "await_labels" and served["model_version"] is None
    estimate = served["estimate"]
    assert estimate["metric"] == served["metric"] and estimate["low"] <= estimate["value"] <= estimate["high"]
    assert estimate["value"] > 0.8  # the features did not move: the champion looks as good as ever
    announced_estimate(d, served)

    # Its labels arrive: the event reaches the server and starts the monitor, which joins them.
    result = ingest("c-labels.csv", flipped[["id", "label"]], "ingest-labels")
    assert f"Emitted {LABELS_ARRIVED}" in result.stdout, result.stdout
    assert (d.root / "labels" / "c-labels.csv").is_file()
    [arrived] = wait_for(lambda: events(d, LABELS_ARRIVED, resource={"id": [resource_id(MODEL)]}),
                         "the labels.arrived event", 60)
    assert arrived["payload"]["file"] == "c-labels.csv" and arrived["payload"]["labels"] == ROWS

    run_id = monitor_run_started_by(d, arrived)

    learnt_from_its_labels(d, settled("c.csv"), estimate, flipped)
    assert wait_for(lambda: d.http.get(f"/flow_runs/{run_id}").json()["state_type"] == "COMPLETED",
                    "the labels' monitor run completed", 60)


def learnt_from_its_labels(d: Deployed, learnt: dict, estimate: dict, flipped: pd.DataFrame) -> None:
    """Realised far below the estimate: a concept change, retrained by the adapt deployment, from the
    batch's labelled rows (which later retrains read from the line's path)."""
    assert learnt["decision"] == "retrain" and learnt["promoted"]
    assert d.champion() == learnt["model_version"] == 2
    m = metric_named_or_accuracy(learnt["metric"])
    assert learnt["estimate"] == {**estimate, "realised": learnt["champion_accuracy_before"], "served_by": 1}
    figures = (f"realised {m.name} {m.format(learnt['champion_accuracy_before'])} (v1, which served it), "
               f"estimated {m.format(estimate['value'])} [{m.format(estimate['low'])}, "
               f"{m.format(estimate['high'])}] when served")
    assert learnt["reason"].startswith(f"concept change: {figures}"), learnt["reason"]
    assert learnt["labels"]["labelled"] == ROWS and learnt["labels"]["coverage"] == 1.0
    adapt_runs = d.runs(f"adapt-{MODEL}")
    assert [r["parameters"]["batch_ids"] for r in adapt_runs] == [["a.csv"], ["c.csv"]]
    assert pd.read_csv(learnt["path"])[["id", "label"]].equals(flipped[["id", "label"]])
