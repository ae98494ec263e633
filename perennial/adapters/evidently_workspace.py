"""Evidently workspace adapter: each accepted batch's drift run in a project named after the model,
with a dashboard of drift share and drifted columns over batches, so `evidently ui` shows the
model's history where Evidently users look for it.

A run is added once per batch, whatever crashes: a marker beside the batch's drift report says
"pending" before the run is added and names the run after; a batch measured again (served without
labels, then learnt on them) replaces its run; after a crash between the two writes, the runs
named after the batch are found and removed before the new one is added.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perennial.core.config import DriftConfig
from perennial.core.files import write_atomically

MARKER = "evidently_run.json"
DESCRIPTION = "Drift of every batch Perennial accepted, against the reference data of the champion."
TAB = "Drift over batches"


@dataclass(frozen=True)
class AddedRun:
    """A batch's run in the workspace."""

    project: str
    run: str
    url: str
    replaced: int  # earlier runs of the same batch removed


def location_of(cfg: DriftConfig, config_dir: Path, state_dir: Path) -> str | None:
    """The workspace a model's runs go to: a folder or an `evidently ui` server's URL; None: off."""
    if cfg.workspace is False:
        return None
    if cfg.workspace is True:
        return str((state_dir / "evidently").resolve())
    if cfg.workspace.lower().startswith(("http://", "https://")):
        return cfg.workspace
    path = Path(cfg.workspace).expanduser()
    return str(path if path.is_absolute() else (config_dir / path).resolve())


def open_workspace(location: str) -> Any:
    """A local folder or a remote `evidently ui` server."""
    if location.lower().startswith(("http://", "https://")):
        from evidently.ui.workspace import RemoteWorkspace

        return RemoteWorkspace(location)
    return _folder_workspace(location)


def _folder_workspace(location: str) -> Any:
    """Evidently's local workspace in Evidently's layout (`evidently ui` reads the folder), with two
    costs taken out: its constructor's dataset manager parses every run of every project (7 s with
    200 runs of 10 columns, growing with the history; runs are added without their data, which is
    all it serves), and a run is written in one piece (Evidently's `json.dump` streams a 0.7 MB run
    in 500,000 small writes: 0.4 s), atomically (a crash never leaves half a run for the UI)."""
    from evidently.legacy.utils import NumpyEncoder
    from evidently.ui.storage.local.base import LocalState
    from evidently.ui.workspace import Workspace

    class FolderState(LocalState):
        def write_snapshot(self, project_id: Any, snapshot_id: Any, snapshot: Any) -> None:
            text = json.dumps(snapshot.dict(), cls=NumpyEncoder).encode()
            target = Path(self.path) / self._snapshot_path(project_id, snapshot_id)
            # Made beside the workspace, not in it: an open `evidently ui` follows the folder and
            # takes a file renamed inside it for the temporary name it had (never shown); one moved
            # in from outside arrives as the run. Where beside it is not writable: seen on a restart.
            try:
                write_atomically(target, text, staging=Path(self.path).parent)
            except PermissionError:
                write_atomically(target, text)

    class FolderWorkspace(Workspace):
        def __init__(self, path: str) -> None:
            self.path = path
            self.state = FolderState(path)

    Path(location).mkdir(parents=True, exist_ok=True)
    return FolderWorkspace(location)


def project_of(workspace: Any, model: str) -> Any:
    """The model's project, created with its dashboard the first time."""
    found = [p for p in workspace.search_project(model) if p.name == model]
    project = found[0] if found else workspace.create_project(model, description=DESCRIPTION)
    if not project.dashboard.model().panels:
        add_dashboard(workspace, project)
    return project


def add_dashboard(workspace: Any, project: Any) -> None:
    """Drift share, the number of drifted columns, and each column's drift score, per batch; saved
    in one piece (Evidently 0.7's `add_panel` lists a panel twice in an existing tab)."""
    from evidently.sdk.models import DashboardModel, DashboardTabModel, PanelMetric
    from evidently.sdk.panels import bar_plot_panel, line_plot_panel

    count = "evidently:metric_v2:DriftedColumnsCount"
    panels = [
        line_plot_panel("Drift share", [PanelMetric(legend="share of drifted columns", metric=count,
                                                    metric_labels={"value_type": "share"})],
                        description="Share of the batch's columns Evidently found drifted", size="half"),
        bar_plot_panel("Drifted columns", [PanelMetric(legend="drifted columns", metric=count,
                                                       metric_labels={"value_type": "count"})],
                       description="How many columns drifted", size="half"),
        line_plot_panel("Drift score per column", [PanelMetric(metric="evidently:metric_v2:ValueDrift")],
                        description="Each column's drift score (its method's distance or p-value), against "
                        "its threshold"),
    ]
    workspace.save_dashboard(project.id, DashboardModel(
        tabs=[DashboardTabModel(title=TAB, panels=[p.id for p in panels])], panels=panels))


def add_drift_run(location: str, model: str, batch: str, snapshot: Any, report_dir: Path) -> AddedRun:
    """Add the batch's drift run to the model's project, replacing any earlier run of the batch."""
    workspace = open_workspace(location)
    project = project_of(workspace, model)
    marker = report_dir / MARKER
    earlier = _read(marker)
    if earlier.get("run"):
        listed = {str(run) for run in workspace.list_runs(project.id)}
        stale = [earlier["run"]] if earlier["run"] in listed else []
    else:
        stale = runs_of(workspace, project.id, batch) if earlier.get("pending") else []
    for run in stale:
        workspace.delete_run(project.id, run)
    write_atomically(marker, json.dumps({"pending": True, "project": str(project.id)}).encode())
    ref = workspace.add_run(project.id, snapshot, name=batch)
    write_atomically(marker, json.dumps({"project": str(project.id), "run": str(ref.id)}).encode())
    return AddedRun(str(project.id), str(ref.id), str(ref.url), len(stale))


def runs_of(workspace: Any, project_id: Any, batch: str) -> list[str]:
    """The runs named after the batch (read one by one: only after a crash left a marker pending)."""
    runs = []
    for run in workspace.list_runs(project_id):
        model = workspace.get_run(project_id, run)
        if model is not None and model.metadata.get("batch") == batch:
            runs.append(str(run))
    return runs


def _read(marker: Path) -> dict[str, Any]:
    try:
        data = json.loads(marker.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


