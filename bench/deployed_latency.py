"""Deployed-mode latencies on a local Prefect server with `perennial serve`.

1. `perennial.drift.detected` emitted -> adapt run created (automation), Pending (picked up by
   serve) and Running (its process started the flow): target <= 2 s to Running.
2. `perennial ingest` of a 10k-row drifted batch -> new champion, end to end.

    uv run python -m bench.deployed_latency [--rows 10000] [--repeat 3]

Writes bench/results/deployed_latency.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import yaml

from perennial.app.local_server import BIN, PrefectServer, quiet_env, stop
from perennial.app.streams import sea

MODEL = "latency-model"


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def wait(check, timeout: float = 600, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError("gave up waiting")


def batch(rows: int, flipped: bool, seed: int) -> pd.DataFrame:
    """A SEA batch; `flipped` inverts the labels: an abrupt concept change the monitor must act on."""
    frame = sea(rows, 0, np.random.default_rng(seed))
    return frame.assign(label=1 - frame["label"]) if flipped else frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    report(measure(args.rows, args.repeat))


def measure(rows: int, repeat: int, paused: bool = True) -> dict:
    """Ingest -> champion and event -> Running, `repeat` times each; `paused`: also what a drift event
    does while `serve` is stopped."""
    root = Path(tempfile.mkdtemp(prefix="perennial-latency-"))
    (root / "batches").mkdir()
    config = root / "perennial.yaml"
    config.write_text(yaml.safe_dump({"name": MODEL, "data": {"source": "batches", "target": "label"},
                                      "policy": {"promotion_margin": -1.0}}))
    results: dict[str, Any] = {"rows": rows}
    started = time.perf_counter()
    with PrefectServer(root / "prefect-home") as server:
        results["server_start_s"] = round(time.perf_counter() - started, 1)
        version = httpx.get(f"{server.api}/admin/version").json()
        env = {**quiet_env(), "PREFECT_HOME": str(root / "prefect-home"), "PREFECT_API_URL": server.api,
               "PERENNIAL_STATE_DIR": str(root / "state"),
               "PERENNIAL_MLFLOW_TRACKING_URI": f"sqlite:///{root / 'state' / 'mlflow.db'}"}
        http = httpx.Client(base_url=server.api, timeout=30)
        served = subprocess.Popen([str(BIN / "perennial"), "serve", "--config", str(config)], env=env,
                                  stdout=open(root / "serve.log", "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                  start_new_session=True)
        try:
            adapt = wait(lambda: (r := http.get(f"/deployments/name/adapt/adapt-{MODEL}")).status_code == 200
                         and r.json(), 300)

            def adapt_runs() -> list[dict]:
                return http.post("/flow_runs/filter", json={
                    "deployments": {"id": {"any_": [adapt["id"]]}}}).json()

            def champion() -> int | None:
                from mlflow import MlflowClient

                try:
                    aliases = MlflowClient(env["PERENNIAL_MLFLOW_TRACKING_URI"]).get_registered_model(
                        MODEL).aliases
                except Exception:
                    return None
                return int(aliases["champion"]) if "champion" in aliases else None

            ingests = []
            for i in range(repeat + 1):
                path = root / f"b{i:02d}.csv"
                batch(rows, flipped=i % 2 == 1, seed=i).to_csv(path, index=False)
                before = champion()
                t0 = time.perf_counter()
                subprocess.run([str(BIN / "perennial"), "ingest", str(path), "--config", str(config)],
                               env=env, check=True, capture_output=True)
                wait(lambda b=before: champion() not in (None, b), 600, 0.2)
                ingests.append(round(time.perf_counter() - t0, 1))
            results["ingest_to_champion_s"] = ingests

            latencies = []
            for i in range(repeat):
                known = {r["id"] for r in adapt_runs()}
                emitted = datetime.now(UTC)
                http.post("/events", json=[{
                    "id": str(uuid.uuid4()), "occurred": emitted.isoformat(),
                    "event": "perennial.drift.detected",
                    "resource": {"prefect.resource.id": f"perennial.model.{MODEL}"},
                    "payload": {"model": MODEL, "batch_ids": [f"b{i:02d}.csv"],
                                "recommended_action": "fine_tune", "reason": "latency benchmark",
                                "window_batches": 1,
                                "champion_version": champion()}}]).raise_for_status()
                run = wait(lambda k=known: [r for r in adapt_runs() if r["id"] not in k
                                            and r["state_type"] in ("RUNNING", "COMPLETED")], 600)[0]
                states = http.get("/flow_run_states/", params={"flow_run_id": run["id"]}).json()
                at = {s["type"]: parse_time(s["timestamp"]) for s in states}
                latencies.append({
                    "created": (parse_time(run["created"]) - emitted).total_seconds(),
                    "pending": (at["PENDING"] - emitted).total_seconds(),
                    "running": (at["RUNNING"] - emitted).total_seconds(),
                })
                wait(lambda r=run: http.get(f"/flow_runs/{r['id']}").json()["state_type"]
                     in ("COMPLETED", "FAILED", "CRASHED"), 600, 0.2)
            results["event_to_run"] = latencies

            results["prefect_server_version"] = version
            if not paused:
                return results
            # Stopping serve pauses its deployments; does a trigger still create the run, and does
            # it run once serve is back? (stack-facts: it waits in Scheduled.)
            stop(served)
            paused = http.get(f"/deployments/{adapt['id']}").json()["paused"]
            known = {r["id"] for r in adapt_runs()}
            http.post("/events", json=[{
                "id": str(uuid.uuid4()), "occurred": datetime.now(UTC).isoformat(),
                "event": "perennial.drift.detected",
                "resource": {"prefect.resource.id": f"perennial.model.{MODEL}"},
                "payload": {"model": MODEL, "batch_ids": ["b00.csv"], "recommended_action": "fine_tune",
                            "reason": "while serve is down", "window_batches": 1,
                            "champion_version": champion()}}]).raise_for_status()
            waiting = wait(lambda: [r for r in adapt_runs() if r["id"] not in known], 120)[0]
            time.sleep(5)
            state_while_down = http.get(f"/flow_runs/{waiting['id']}").json()["state_type"]
            served = subprocess.Popen([str(BIN / "perennial"), "serve", "--config", str(config)], env=env,
                                      stdout=open(root / "serve2.log", "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                      start_new_session=True)
            restarted = time.perf_counter()
            final = wait(lambda: (s := http.get(f"/flow_runs/{waiting['id']}").json()["state_type"])
                         in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") and s, 600, 0.5)
            results["paused"] = {"deployment_paused_after_stop": paused,
                                 "run_state_while_down": state_while_down, "after_restart": final,
                                 "restart_to_done_s": round(time.perf_counter() - restarted, 1)}
        finally:
            stop(served)
    return results


def report(results: dict) -> None:
    lat = results["event_to_run"]
    med = {k: statistics.median(x[k] for x in lat) for k in ("created", "pending", "running")}
    lines = [
        "# Deployed-mode latency",
        "",
        f"Prefect server {results['prefect_server_version']} on 127.0.0.1 (SQLite), `perennial serve` with "
        "`PREFECT_RUNNER_POLL_FREQUENCY=1`; 2 cores. Command: `uv run python -m bench.deployed_latency`.",
        "",
        "| drift event emitted -> | " + " | ".join(f"run {i + 1}" for i in range(len(lat))) + " | median |",
        "|---|" + "---|" * (len(lat) + 1),
    ]
    for key, label in [("created", "adapt run created by the automation"),
                       ("pending", "picked up by serve (Pending)"),
                       ("running", "flow running in its new process (Running)")]:
        lines.append(f"| {label} | " + " | ".join(f"{x[key]:.2f} s" for x in lat) + f" | {med[key]:.2f} s |")
    ingests = ", ".join(f"{s} s" for s in results["ingest_to_champion_s"])
    lines += ["", f"`perennial ingest` of a {results['rows']:,}-row batch -> new champion (monitor run, "
              f"drift event, adapt run, promotion), end to end: {ingests}",
              "", f"Server start: {results['server_start_s']} s.", ""]
    paused = results.get("paused")
    if paused:
        lines += [f"With `serve` stopped the adapt deployment had paused="
                  f"{paused['deployment_paused_after_stop']}; "
                  f"a drift event still created its run, which stayed {paused['run_state_while_down']} until "
                  f"`serve` was restarted, then ended {paused['after_restart']} "
                  f"{paused['restart_to_done_s']} s after the restart.", ""]
    out = Path(__file__).parent / "results" / "deployed_latency.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
