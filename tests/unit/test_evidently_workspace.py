"""The model's Evidently workspace (perennial/adapters/evidently_workspace.py): a run per batch, named
after it, in a project named after the model with one dashboard; a batch measured again, or after a
crash, keeps a single run. Real Evidently reports on small frames, a local workspace folder, read back
with Evidently's own `Workspace` (what `evidently ui` opens); no server.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import BASE_CONFIG
from perennial.adapters.evidently import evidently_drift
from perennial.adapters.evidently_workspace import MARKER, TAB, add_drift_run, location_of
from perennial.core.config import ConfigError, DriftConfig, load_config
from perennial.core.types import Schema

MODEL = "churn-model"
PANELS = ["Drift share", "Drifted columns", "Drift score per column"]
SCHEMA = Schema({"a": "numeric", "b": "numeric", "c": "numeric"}, "label", ("no", "yes"))


def snapshot(batch: str, seed: int = 0):
    """Evidently's drift run of a 300-row batch whose column `a` moved, named after the batch."""
    rng = np.random.default_rng(seed)
    reference = pd.DataFrame({c: rng.normal(0, 1, 300) for c in "abc"})
    current = pd.DataFrame({c: rng.normal(3 if c == "a" else 0, 1, 300) for c in "abc"})
    drift = evidently_drift(current, reference, SCHEMA, DriftConfig(), None, batch)
    assert [f.column for f in drift.features if f.drifted] == ["a"]  # a real measurement: one drifted
    return drift.evidently_run


def add(folder: Path, batch: str, seed: int = 0):
    """`add_drift_run` as a cycle calls it: the batch's report folder beside the workspace."""
    report_dir = folder / "reports" / batch
    report_dir.mkdir(parents=True, exist_ok=True)
    return add_drift_run(str(folder / "evidently"), MODEL, batch, snapshot(batch, seed), report_dir)


def marker(folder: Path, batch: str) -> Path:
    return folder / "reports" / batch / MARKER


def read_back(folder: Path):
    """The workspace as `evidently ui` opens it: Evidently's own Workspace (its constructor, which
    ours skips, reads every project), the model's project and its runs by id."""
    from evidently.ui.workspace import Workspace

    workspace = Workspace(str(folder / "evidently"))
    projects = workspace.list_projects()
    assert [p.name for p in projects] == [MODEL]
    project = projects[0]
    runs = {str(r): workspace.get_run(project.id, r) for r in workspace.list_runs(project.id)}
    return project, runs


def runs_of(folder: Path, batch: str) -> list[str]:
    """The ids of the runs named after `batch`."""
    return [rid for rid, run in read_back(folder)[1].items() if run.name == batch]


def test_a_run_per_batch_named_after_it_in_the_model_project_with_one_dashboard(tmp_path):
    first = add(tmp_path, "2026-01.csv")
    project, runs = read_back(tmp_path)
    assert (first.project, first.replaced) == (str(project.id), 0)
    assert {rid: run.name for rid, run in runs.items()} == {first.run: "2026-01.csv"}
    assert runs[first.run].metadata == {"batch": "2026-01.csv"} and runs[first.run].tags == ["perennial"]
    assert json.loads(marker(tmp_path, "2026-01.csv").read_text())["run"] == first.run

    second = add(tmp_path, "2026-02.csv", seed=1)
    project, runs = read_back(tmp_path)  # still one project: the model's, found by its name
    assert second.project == first.project == str(project.id)
    assert {rid: r.name for rid, r in runs.items()} == {first.run: "2026-01.csv", second.run: "2026-02.csv"}
    dashboard = project.dashboard.model()
    assert [p.title for p in dashboard.panels] == PANELS  # added once, not again with the second batch
    assert [t.title for t in dashboard.tabs] == [TAB]
    # The tab holds the three, each once (Evidently 0.7.23's add_panel lists a panel added to an
    # existing tab twice: the dashboard is saved in one piece).
    assert dashboard.tabs[0].panels == [p.id for p in dashboard.panels]


def plotted_values(run) -> list[tuple[str, dict, float]]:
    """Every single value of the run with what a dashboard panel selects it by: its metric's type and
    its labels (Evidently's `metric_value_location`)."""
    found = []

    def walk(node) -> None:
        if isinstance(node, dict):
            where = node.get("metric_value_location")
            if where and isinstance(node.get("value"), int | float):
                found.append((where["metric"]["params"]["type"], where["param"], node["value"]))
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(json.loads(run.json())["metric_results"])
    return found


def test_each_dashboard_panel_selects_values_the_run_holds(tmp_path):
    """A panel whose metric or labels no run reports draws an empty chart in `evidently ui`."""
    add(tmp_path, "2026-01.csv")
    project, runs = read_back(tmp_path)
    values = plotted_values(next(iter(runs.values())))
    selected = {panel.title: [value for metric, labels, value in values for series in panel.values
                              if metric == series.metric and series.metric_labels.items() <= labels.items()]
                for panel in project.dashboard.model().panels}
    assert selected["Drift share"] == [pytest.approx(1 / 3)]  # column a of a, b, c
    assert selected["Drifted columns"] == [1]
    assert len(selected["Drift score per column"]) == 3  # a score per column


def test_measuring_a_batch_again_replaces_its_run_and_leaves_the_others(tmp_path):
    other = add(tmp_path, "2026-01.csv")
    earlier = add(tmp_path, "2026-02.csv")
    again = add(tmp_path, "2026-02.csv", seed=2)  # served without labels, then learnt on them
    assert again.replaced == 1
    assert runs_of(tmp_path, "2026-02.csv") == [again.run] != [earlier.run]
    assert runs_of(tmp_path, "2026-01.csv") == [other.run]
    final = json.loads(marker(tmp_path, "2026-02.csv").read_text())
    assert final == {"project": again.project, "run": again.run}
    assert [p.title for p in read_back(tmp_path)[0].dashboard.model().panels] == PANELS


def test_a_marker_left_pending_by_a_crash_removes_the_orphan_run(tmp_path):
    other = add(tmp_path, "2026-01.csv")
    orphan = add(tmp_path, "2026-02.csv")
    # Killed between adding the run and naming it in the marker: the marker still says pending.
    marker(tmp_path, "2026-02.csv").write_text(json.dumps({"pending": True}))
    rerun = add(tmp_path, "2026-02.csv", seed=2)
    assert rerun.replaced == 1
    assert runs_of(tmp_path, "2026-02.csv") == [rerun.run] != [orphan.run]
    assert runs_of(tmp_path, "2026-01.csv") == [other.run]
    assert "pending" not in json.loads(marker(tmp_path, "2026-02.csv").read_text())


def test_a_crash_while_adding_the_run_leaves_the_marker_pending_and_the_rerun_one_run(tmp_path, monkeypatch):
    """The crash made for real: the run is written, then the process dies before the marker names it."""
    from evidently.ui.workspace import Workspace

    other = add(tmp_path, "2026-01.csv")
    write_run = Workspace._add_run

    def written_then_killed(self, project_id, run):
        write_run(self, project_id, run)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(Workspace, "_add_run", written_then_killed)
    with pytest.raises(KeyboardInterrupt):
        add(tmp_path, "2026-02.csv")
    assert json.loads(marker(tmp_path, "2026-02.csv").read_text()).get("pending") is True
    (orphan,) = runs_of(tmp_path, "2026-02.csv")
    monkeypatch.undo()

    rerun = add(tmp_path, "2026-02.csv", seed=2)
    assert (rerun.replaced, runs_of(tmp_path, "2026-02.csv")) == (1, [rerun.run])
    assert rerun.run != orphan
    assert runs_of(tmp_path, "2026-01.csv") == [other.run]


def test_a_pending_marker_without_a_run_removes_nothing(tmp_path):
    """Killed after the pending write, before the run was added: no run of the batch to remove."""
    other = add(tmp_path, "2026-01.csv")
    report_dir = tmp_path / "reports" / "2026-02.csv"
    report_dir.mkdir(parents=True)
    (report_dir / MARKER).write_text(json.dumps({"pending": True}))
    added = add(tmp_path, "2026-02.csv")
    assert (added.replaced, runs_of(tmp_path, "2026-02.csv")) == (0, [added.run])
    assert runs_of(tmp_path, "2026-01.csv") == [other.run]


def test_the_workspace_location_of_each_setting(tmp_path):
    config_dir, state_dir = tmp_path.resolve() / "config", tmp_path.resolve() / "state"

    def location(workspace=None) -> str | None:
        cfg = DriftConfig() if workspace is None else DriftConfig(workspace=workspace)
        return location_of(cfg, config_dir, state_dir)

    assert location() == location(True) == str(state_dir / "evidently")  # the default: in the state folder
    assert location(False) is None
    assert location("views/ev") == str(config_dir / "views" / "ev")  # relative to the config file
    assert location("../shared/ev") == str(tmp_path.resolve() / "shared" / "ev")
    assert location(str(tmp_path / "elsewhere" / "ev")) == str(tmp_path / "elsewhere" / "ev")
    assert location("~/ev") == str(Path.home() / "ev")
    for url in ("http://127.0.0.1:8000", "https://evidently.example.com/team"):
        assert location(url) == url


def config_with(tmp_path: Path, workspace) -> Path:
    path = tmp_path / "perennial.yaml"
    path.write_text(yaml.safe_dump({**BASE_CONFIG, "drift": {"workspace": workspace}}))
    return path


@pytest.mark.parametrize("url", ["https://alice:s3cr3t-pw@evidently.example.com/",
                                 "http://s3cr3t-token@127.0.0.1:8000"])
def test_a_workspace_url_with_credentials_is_refused_without_echoing_them(tmp_path, url):
    with pytest.raises(ConfigError) as refused:
        load_config(config_with(tmp_path, url))
    message = str(refused.value)
    assert ("key 'drift.workspace': expected true, false, a folder or an http(s) URL without credentials"
            in message), message
    assert "s3cr3t" not in message and url not in message


def test_a_workspace_url_without_credentials_a_folder_and_false_load(tmp_path):
    for value in ("http://127.0.0.1:8000", "https://evidently.example.com/p@th", "views/ev", False, True):
        assert load_config(config_with(tmp_path, value)).drift.workspace == value


def test_a_run_added_while_evidently_ui_is_open_reaches_its_view(tmp_path):
    """`evidently ui` loads the folder once, then follows it with a watchdog handler (its `autorefresh`,
    on by default): a run added after it started must reach the handler's state, as a run added by
    Evidently's own `Workspace` does. The handler runs here without the server around it."""
    import time

    from evidently.ui.service.storage.local.base import LocalState
    from evidently.ui.service.storage.local.watcher import WorkspaceDirHandler
    from watchdog.observers import Observer

    first = add(tmp_path, "2026-01.csv")
    state = LocalState.load(str(tmp_path / "evidently"), None)  # what the server read at its start
    observer = Observer()
    observer.schedule(WorkspaceDirHandler(state), str(tmp_path / "evidently"), recursive=True)
    observer.start()

    def seen() -> set[str]:
        return {str(run) for runs in state.snapshots.values() for run in runs}

    try:
        added = add(tmp_path, "2026-02.csv")
        deadline = time.monotonic() + 5
        while added.run not in seen() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        observer.stop()
        observer.join(10)
    assert seen() == {first.run, added.run}
