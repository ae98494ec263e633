"""The model's Evidently workspace as `evidently ui` serves it: a real server on 127.0.0.1 (a child
process), read through its HTTP API as the UI's pages read it.

A short stream goes through the installed `perennial run` (a first model, a rejected batch, two batches
measured against the champion): the server opened on the workspace folder the cycles wrote lists the
model's project with one run per measured batch and a dashboard that draws them. A second model's
config names the running server (`drift.workspace: http://...`): its runs reach the server. A later
cycle of the first model adds a run to the folder the open server follows.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from conftest import Workspace, make_batch, new_workspace, wait_for
from docs.screenshots import perennial
from perennial.app.local_server import BIN, free_port, quiet_env, stop
from perennial.core.state import StateStore

PANELS = ["Drift share", "Drifted columns", "Drift score per column"]
SHARE = {"metric": "evidently:metric_v2:DriftedColumnsCount", "metric_labels": {"value_type": "share"}}


@contextmanager
def evidently_ui(folder: Path, log: Path) -> Iterator[httpx.Client]:
    """`evidently ui` on `folder` and a free port, answering; stopped on the way out, whatever happened."""
    port = free_port()
    with open(log, "w") as out:
        command = [str(BIN / "evidently"), "ui", "--workspace", str(folder), "--host", "127.0.0.1",
                   "--port", str(port)]
        server = subprocess.Popen(command, env=quiet_env(), stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

        def answering() -> bool:
            if server.poll() is not None:
                raise AssertionError(f"evidently ui ended ({server.returncode}):\n{log.read_text()[-3000:]}")
            return http.get("/api/version").status_code == 200

        wait_for(answering, "evidently ui answering", 60)
        yield http
    finally:
        stop(server)


def stream(root: Path, monkeypatch, name: str, **config) -> Workspace:
    """A model's folder of four batches: the first model, a rejected batch (no label column), then two
    accepted batches whose drift is measured against the champion (the second an abrupt concept
    change)."""
    ws = new_workspace(root, monkeypatch, name=name, **config)
    ws.add("a.csv", make_batch(seed=1))
    ws.add("b.csv", make_batch(seed=2).drop(columns=["label"]))
    ws.add("c.csv", make_batch(seed=3))
    ws.add("d.csv", make_batch(seed=4, flip=True))
    return ws


def run(ws: Workspace, prefect_home: Path) -> dict[str, str]:
    """`perennial run` as a user runs it, in the state folder `ws` was made with; each batch's decision."""
    state = ws.root / "state"
    env = {**quiet_env(), "PREFECT_HOME": str(prefect_home), "OMP_NUM_THREADS": "1",
           "PERENNIAL_STATE_DIR": str(state), "PERENNIAL_MLFLOW_TRACKING_URI": f"sqlite:///{state}/mlflow.db"}
    perennial("run", "--config", str(ws.config_path), env=env)
    decisions = {r.batch: r.decision for r in StateStore(state, ws.name).records()}
    assert list(decisions)[:4] == ["a.csv", "b.csv", "c.csv", "d.csv"], decisions
    assert decisions["a.csv"] == "retrain" and decisions["b.csv"] == "reject", decisions
    return decisions


def project(http: httpx.Client, name: str) -> dict:
    """The server's one project of that name (`/api/projects`, the UI's project list)."""
    projects = http.get("/api/projects").raise_for_status().json()
    found = [p for p in projects if p["name"] == name]
    assert len(found) == 1, [p["name"] for p in projects]
    return found[0]


def runs(http: httpx.Client, project_id: str) -> list[dict]:
    """The project's runs as the UI's Reports page lists them."""
    return http.get(f"/api/projects/{project_id}/snapshots").raise_for_status().json()


def assert_runs_of_measured_batches(http: httpx.Client, name: str, measured=("c.csv", "d.csv")) -> str:
    """One run per batch whose drift was measured (c, d), named after it, each opening as a report;
    none for the first batch (no champion to compare with) or the rejected one. The project's id."""
    project_id = project(http, name)["id"]
    listed = runs(http, project_id)
    assert sorted(r["name"] for r in listed) == list(measured), listed
    assert all(r["metadata"] == {"batch": r["name"]} and "perennial" in r["tags"] for r in listed), listed
    for r in listed:  # the UI's report view of the run: its widgets
        assert http.get(f"/api/projects/{project_id}/{r['id']}/data").raise_for_status().json()["widgets"]
    return project_id


def assert_dashboard_draws(http: httpx.Client, project_id: str) -> None:
    """The dashboard's panels, and the drift-share series the UI asks for: a point per run."""
    dashboard = http.get(f"/api/v2/dashboards/{project_id}").raise_for_status().json()
    assert [p["title"] for p in dashboard["panels"]] == PANELS
    asked = {"series_filter": [{"tags": [], "metadata": {}, **SHARE}]}
    series = http.post(f"/api/v2/snapshots/{project_id}/data_series_batch", json=asked)
    series = series.raise_for_status().json()
    assert len(series["sources"]) == 2, series
    (share,) = series["series"]
    assert len(share["values"]) == 2 and all(0 <= v <= 1 for v in share["values"]), share


@pytest.fixture(scope="module")
def ui(tmp_path_factory) -> Iterator[tuple[httpx.Client, Path]]:
    """`evidently ui` on the workspace folder a model's cycles wrote (`drift.workspace: true`, the
    default: `<state>/evidently`), up for the module."""
    root = tmp_path_factory.mktemp("evidently-ui")
    with pytest.MonkeyPatch.context() as monkeypatch:
        local = stream(root / "local", monkeypatch, "ev-local")
        run(local, root / "prefect")
    folder = root / "local" / "state" / "evidently"
    assert folder.is_dir()
    with evidently_ui(folder, root / "evidently-ui.log") as http:
        yield http, root


def test_evidently_ui_lists_a_run_per_measured_batch_of_the_workspace_the_cycles_wrote(ui):
    http, _ = ui
    assert_dashboard_draws(http, assert_runs_of_measured_batches(http, "ev-local"))


def test_a_config_naming_the_server_sends_the_runs_to_it(ui, tmp_path, monkeypatch):
    http, root = ui
    url = str(http.base_url).rstrip("/")
    local = runs(http, project(http, "ev-local")["id"])
    remote = stream(tmp_path / "remote", monkeypatch, "ev-remote", drift={"workspace": url})
    run(remote, root / "prefect")
    assert not (tmp_path / "remote" / "state" / "evidently").exists()  # sent, not written locally
    assert_dashboard_draws(http, assert_runs_of_measured_batches(http, "ev-remote"))
    assert runs(http, project(http, "ev-local")["id"]) == local  # the other model's project untouched


def test_the_open_server_shows_the_runs_later_cycles_add_to_its_folder(ui):
    """`evidently ui` left open on the folder (the command the demo prints) while cycles go on (`perennial
    serve`): it follows the folder (watchdog, its `autorefresh`), so a later batch's run appears."""
    http, root = ui
    folder = root / "local"
    local = Workspace(folder, folder / "batches", folder / "perennial.yaml", "ev-local")
    local.add("e.csv", make_batch(seed=5, shift=3.0))  # a covariate shift
    assert run(local, root / "prefect")["e.csv"] != "reject"
    measured = ("c.csv", "d.csv", "e.csv")
    wait_for(lambda: sorted(r["name"] for r in runs(http, project(http, "ev-local")["id"])) == list(measured),
             "the server's list to show e.csv's run", 20)
    assert_runs_of_measured_batches(http, "ev-local", measured)
