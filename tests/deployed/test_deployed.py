"""Deployed mode against a real Prefect server on 127.0.0.1: serve, events, automations, queueing.

One server and one `perennial serve` process for the module; each flow run that serve starts is a
fresh Python process, so these tests are the slowest of the suite (a few minutes on 2 cores).
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import make_batch, wait_for
from perennial.adapters.mlflow_registry import Tag
from perennial.adapters.prefect_events import (
    BATCH_ARRIVED,
    DATA_GROWN,
    DRIFT_DETECTED,
    MODEL_PROMOTED,
    resource_id,
)
from perennial.app.local_server import BIN, PrefectServer, quiet_env, stop

MODEL = "deployed-model"


class Deployed:
    """The server, the served model's files, and helpers to talk to both."""

    def __init__(self, root: Path, api: str, env: dict[str, str]):
        self.root, self.api, self.env = root, api, env
        self.config = root / "perennial.yaml"
        self.batches = root / "batches"
        self.http = httpx.Client(base_url=api, timeout=30)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "perennial"), *args], env=self.env, capture_output=True,
                              text=True, timeout=180)

    def ledger(self) -> dict[str, dict]:
        path = self.root / "state" / MODEL / "ledger.jsonl"
        out: dict[str, dict] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                out[json.loads(line)["batch"]] = json.loads(line)
        return out

    def emit(self, event: str, payload: dict) -> None:
        response = self.http.post("/events", json=[{
            "id": str(uuid.uuid4()), "occurred": datetime.now(UTC).isoformat(), "event": event,
            "resource": {"prefect.resource.id": resource_id(MODEL)}, "payload": payload}])
        response.raise_for_status()

    def runs(self, deployment: str) -> list[dict]:
        flow = "adapt" if deployment.startswith("adapt") else "continuous-training"
        dep = self.http.get(f"/deployments/name/{flow}/{deployment}").json()
        runs = self.http.post("/flow_runs/filter", json={
            "deployments": {"id": {"any_": [dep["id"]]}}, "sort": "EXPECTED_START_TIME_ASC"}).json()
        return [r for r in runs if r["state_type"] != "SCHEDULED" or r.get("created_by")]

    def champion(self) -> int | None:
        from mlflow import MlflowClient

        client = MlflowClient(self.env["PERENNIAL_MLFLOW_TRACKING_URI"])
        aliases = client.get_registered_model(MODEL).aliases
        return int(aliases["champion"]) if "champion" in aliases else None

    def versions(self) -> dict[int, dict]:
        from mlflow import MlflowClient

        client = MlflowClient(self.env["PERENNIAL_MLFLOW_TRACKING_URI"])
        return {int(v.version): v.tags for v in client.search_model_versions(f"name = '{MODEL}'")}


# The monitor's schedule: the default (hourly, on the hour) ran a monitor at 01:00 in the middle of a test
# that writes a batch without an event, so the batch was decided alone and the next against another
# champion (seen in CI). Once a year, on 1 January at midnight, is never in a test's minutes.
NEVER_IN_A_TEST = "0 0 1 1 *"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> Deployed:
    root = tmp_path_factory.mktemp("deployed")
    (root / "batches").mkdir()
    (root / "perennial.yaml").write_text(yaml.safe_dump({
        "name": MODEL, "data": {"source": "batches", "target": "label"}, "deploy": {"cron": NEVER_IN_A_TEST},
        # Any challenger beats the champion by this margin, so only check-and-set can stop a promotion.
        # One way to train per adaptation and no data-growth retrain until the last test turns it on.
        "policy": {"promotion_margin": -0.5, "drift_share_moderate": 0.2, "drift_share_severe": 0.7,
                   "growth_ratio": None, "candidate_budget": 0.0},
    }))
    yield from serving(root)


def serving(root: Path, **env: str) -> Iterator[Deployed]:
    """A Prefect server and `perennial serve` of `root`/perennial.yaml (state and MLflow in `root`), up
    until the generator is closed; `env` adds to the processes' environment."""
    with PrefectServer(root / "prefect-home") as server:
        env = {**quiet_env(), "PREFECT_HOME": str(root / "prefect-home"), "PREFECT_API_URL": server.api,
               "PERENNIAL_STATE_DIR": str(root / "state"),
               "PERENNIAL_MLFLOW_TRACKING_URI": f"sqlite:///{root / 'state' / 'mlflow.db'}", **env}
        serve_log = open(root / "serve.log", "w")  # noqa: SIM115
        served = subprocess.Popen([str(BIN / "perennial"), "serve", "--config", str(root / "perennial.yaml")],
                                  env=env, stdout=serve_log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            d = Deployed(root, server.api, env)
            wait_for(lambda: d.http.get(f"/deployments/name/adapt/adapt-{MODEL}").status_code == 200,
                     "the served deployments", 180)
            yield d
        finally:
            stop(served)


def test_ingest_alone_drives_monitor_drift_event_adapt_and_a_new_champion(deployed: Deployed):
    d = deployed
    make_batch(seed=1).to_csv(d.root / "a.csv", index=False)
    result = d.cli("ingest", str(d.root / "a.csv"), "--config", str(d.config))
    assert result.returncode == 0, result.stderr
    assert "Emitted perennial.batch.arrived" in result.stdout
    assert (d.batches / "a.csv").exists() and not list(d.batches.glob(".*"))
    wait_for(lambda: d.ledger().get("a.csv", {}).get("status") == "done", "a.csv adapted")
    assert d.champion() == 1

    make_batch(seed=2, flip=True).to_csv(d.root / "b.csv", index=False)  # an abrupt concept change
    assert d.cli("ingest", str(d.root / "b.csv"), "--config", str(d.config)).returncode == 0
    b = wait_for(lambda: (r := d.ledger().get("b.csv")) and r["status"] == "done" and r, "b.csv adapted")
    assert b["decision"] == "retrain" and b["reason"].startswith("concept change")
    assert b["promoted"] and d.champion() == b["model_version"] == 2

    # The ledger line is written inside the run, a moment before the run itself is Completed.
    def completed_adapt_runs() -> list[dict] | None:
        runs = d.runs(f"adapt-{MODEL}")
        return runs if [r["state_type"] for r in runs] == ["COMPLETED", "COMPLETED"] else None

    adapt_runs = wait_for(completed_adapt_runs, "both adapt runs completed", 120)
    assert all(r["created_by"]["type"] == "AUTOMATION" for r in adapt_runs)
    assert adapt_runs[1]["parameters"]["batch_ids"] == ["b.csv"]
    assert adapt_runs[1]["parameters"]["mode"] == "retrain"
    assert len(d.runs(f"monitor-{MODEL}")) >= 2

    def events() -> list[dict]:
        return d.http.post("/events/filter", json={"filter": {
            "event": {"prefix": ["perennial."]},
            "resource": {"id": [resource_id(MODEL)]}}, "limit": 50}).json()["events"]

    # The server persists events in batches, a few seconds after they were sent.
    seen = wait_for(lambda: (e := events()) and sum(x["event"] == MODEL_PROMOTED for x in e) == 2
                    and e, "both promotion events", 60)
    names = [e["event"] for e in seen]
    assert names.count(BATCH_ARRIVED) == 2 and names.count(DRIFT_DETECTED) == 2
    promoted = [e["payload"] for e in seen if e["event"] == MODEL_PROMOTED]
    assert sorted(p["version"] for p in promoted) == [1, 2]


def test_adaptations_queue_with_check_and_set_and_forged_or_redelivered_events_change_nothing(
        deployed: Deployed):
    d = deployed
    # The boundary moves: both batches call for an adaptation, decided in one monitor run against v2.
    make_batch(seed=3, theta=14.0, flip=True).to_csv(d.batches / "c.csv", index=False)  # no event
    make_batch(seed=4, theta=14.0, flip=True).to_csv(d.root / "d.csv", index=False)
    champion, before = d.champion(), len(d.runs(f"adapt-{MODEL}"))
    assert d.cli("ingest", str(d.root / "d.csv"), "--config", str(d.config)).returncode == 0
    runs = wait_for(lambda: len(r := d.runs(f"adapt-{MODEL}")[before:]) == 2
                    and all(x["state_type"] == "COMPLETED" for x in r) and r, "two adapt runs")
    first, second = sorted(runs, key=lambda r: r["start_time"])
    assert first["end_time"] <= second["start_time"]  # one at a time, not in parallel
    ledger = d.ledger()
    assert {ledger[b]["champion_version_before"] for b in ("c.csv", "d.csv")} == {champion}
    won, lost = sorted((ledger["c.csv"], ledger["d.csv"]), key=lambda r: not r["promoted"])
    assert won["promoted"] and not lost["promoted"]
    assert lost["promotion"].startswith(f"not promoted: the champion moved from v{champion} to "
                                        f"v{won['model_version']}")
    assert d.champion() == won["model_version"]
    tags = d.versions()
    assert {tags[r["model_version"]][Tag.BATCH] for r in (won, lost)} == {"c.csv", "d.csv"}

    # A redelivered request for a settled batch, and a forged one asking a settled batch's former
    # champion to be demoted by a noop: both refused, nothing changes.
    settled = (d.root / "state" / MODEL / "ledger.jsonl").read_text()
    champion, before = d.champion(), len(d.runs(f"adapt-{MODEL}"))
    d.emit(DRIFT_DETECTED, {"model": MODEL, "batch_ids": ["c.csv"],
                                        "recommended_action": ledger["c.csv"]["decision"], "reason": "again",
                                        "window_batches": 1, "champion_version": 2})
    d.emit(DRIFT_DETECTED, {"model": MODEL, "batch_ids": ["b.csv"], "recommended_action": "noop",
                                        "reason": "forged", "window_batches": 1,
                                        "champion_version": champion})
    refused = wait_for(lambda: len(r := d.runs(f"adapt-{MODEL}")[before:]) == 2
                       and all(x["state_type"] == "COMPLETED" for x in r) and r, "the refused adapt runs")
    assert {tuple(r["parameters"]["batch_ids"]) for r in refused} == {("c.csv",), ("b.csv",)}
    assert (d.root / "state" / MODEL / "ledger.jsonl").read_text() == settled
    assert d.champion() == champion and d.versions() == tags
    run_ids = [r["id"] for r in refused]

    def messages() -> str | None:  # run logs reach the server in batches, after the run's state
        logs = d.http.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": run_ids}}}).json()
        text = " ".join(x["message"] for x in logs)
        return text if text.count(" refused: ") == 2 else None

    text = wait_for(messages, "both refusals in the runs' logs", 60)
    assert "adaptation of c.csv refused: batch c.csv is not awaiting an adaptation" in text
    assert ("adaptation of b.csv refused: batch b.csv is not awaiting an adaptation (its decision: "
            "retrain, v2") in text


def test_a_data_growth_retrain_reaches_the_adapt_deployment_through_its_own_event(deployed: Deployed):
    d = deployed
    config = yaml.safe_load(d.config.read_text())
    config["policy"]["growth_ratio"] = 0.1  # any new batch grows the data enough; each run reads the file
    d.config.write_text(yaml.safe_dump(config))
    before = len(d.runs(f"adapt-{MODEL}"))
    make_batch(seed=5, theta=14.0, flip=True).to_csv(d.root / "e.csv", index=False)  # concept in service
    assert d.cli("ingest", str(d.root / "e.csv"), "--config", str(d.config)).returncode == 0
    e = wait_for(lambda: (r := d.ledger().get("e.csv")) and r["status"] == "done" and r, "e.csv adapted")
    assert e["decision"] == "retrain" and e["trigger"] == "data_growth", e["reason"]
    assert re.match(r"data growth: [\d,]+ new labelled rows", e["reason"]), e["reason"]
    assert e["promoted"] and d.versions()[e["model_version"]][Tag.CANDIDATE] == "retrain_grown"
    [run] = wait_for(lambda: len(r := d.runs(f"adapt-{MODEL}")[before:]) == 1 and r, "the growth's adapt run")
    assert run["created_by"]["type"] == "AUTOMATION" and run["parameters"]["batch_ids"] == ["e.csv"]
    grown = wait_for(lambda: [x for x in d.http.post("/events/filter", json={"filter": {
        "event": {"name": [DATA_GROWN]}, "resource": {"id": [resource_id(MODEL)]}},
        "limit": 10}).json()["events"]], "the perennial.data.grown event", 60)
    assert grown[0]["payload"]["trigger"] == "data_growth" and grown[0]["payload"]["batch_ids"] == ["e.csv"]
