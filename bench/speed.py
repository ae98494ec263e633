"""E. Speed: what a user waits for, against the targets of "a cycle in about a second".

- One cycle on a 2,000-row batch, `noop` (a batch of the same concept) and adaptation (its labels
  flipped: a promoted retrain), as a Prefect flow and as the same steps in plain Python calls
  (`plain_calls`), each in its own copy of one workspace whose history the flow processed.
- The commands a user types, in fresh processes as they would (the installed `perennial` script):
  `--help`, `status`, `run` with nothing new (both on that workspace) and, in full mode, the whole
  `perennial demo`.
- Deployed, in full mode: drift event -> adapt run Running, and ingest of 10,000 rows -> new
  champion, from `bench.deployed_latency` (a Prefect server and `perennial serve`).

Called with a Prefect API available, like part C (the cycles run in this process).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from bench.common import Section, Target, fmt, markdown_table, timed
from bench.overhead import MEASURED, batches, bootstrap, plain_cycle, workspace_copy

ROWS = 2_000
REPEATS = 3
QUICK_ROWS = 300
PERENNIAL = Path(sys.executable).parent / "perennial"
# name: (limit in seconds, what it is)
LIMITS = {
    "noop cycle": 1.5,
    "adaptation cycle": 3.0,
    "perennial --help": 0.5,
    "perennial status": 2.0,
    "perennial run, nothing new": 6.0,
    "perennial demo": 40.0,
    "drift event -> adapt run Running": 3.0,
    "ingest 10,000 rows -> new champion": 20.0,
    "perennial report, 1,000-batch ledger": 5.0,
}
REPORT_BATCHES, REPORT_MB = 1_000, 5.0
RATIO = 3.0  # a flow cycle within 3x the same steps as plain calls


def flow_wall(config_path: Path, settings: Any, heartbeats: bool = False) -> tuple[float, Any]:
    """Wall seconds of `continuous_training` on the measured batch, and its ledger line; without
    flow-run heartbeats, as `perennial run` runs it, unless `heartbeats` (as a served monitor)."""
    from perennial.pipeline.flows.continuous_training import continuous_training
    from perennial.pipeline.tasks import without_heartbeats

    with timed() as wall, nullcontext() if heartbeats else without_heartbeats():
        [record] = continuous_training(str(config_path), settings=settings)
    return wall.wall, record


def cycles(rows: int, repeats: int, flipped: bool) -> tuple[dict[str, list[float]], Path]:
    """Walls of the measured cycle as a flow (`perennial run`), as a served monitor's flow (heartbeats
    on) and as plain calls; also returns a workspace left with nothing new."""
    expected = ("retrain", True) if flipped else ("noop", None)
    frames = batches(rows, flipped=flipped)
    modes = ("flow", "plain", "served")
    walls: dict[str, list[float]] = {mode: [] for mode in modes}
    tmp = Path(tempfile.mkdtemp(prefix="perennial-speed-"))
    seed = bootstrap(tmp / "bootstrap", frames).parent
    for i in range(repeats):
        for mode in modes if i % 2 == 0 else modes[::-1]:
            root, settings = workspace_copy(seed, tmp / f"{mode}-{i}", frames[MEASURED])
            if mode != "plain":
                wall, record = flow_wall(root / "perennial.yaml", settings, heartbeats=mode == "served")
            else:
                wall, _, record, _ = plain_cycle(root / "perennial.yaml", settings)
            if (record.decision, record.promoted) != expected:
                raise RuntimeError(f"{mode} cycle on {rows} rows: expected {expected}, got "
                                   f"{record.decision} (promoted: {record.promoted}): {record.reason}")
            walls[mode].append(wall)
    return walls, root


def command_walls(args: list[str], repeats: int, env: dict[str, str], cwd: Path) -> list[float]:
    """Wall seconds of `perennial args` in fresh processes; fails loudly when the command does."""
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run([str(PERENNIAL), *args], capture_output=True, text=True, env=env, cwd=cwd,
                              timeout=900)
        walls.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise RuntimeError(f"perennial {' '.join(args)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return walls


def user_env(state: Path | None = None) -> dict[str, str]:
    """The environment a user's shell has: no Prefect API (commands start their temporary server),
    this workspace's state folder, telemetry off, OpenMP bounded as everywhere we time."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PREFECT_API_URL", "PERENNIAL_STATE_URL", "PERENNIAL_MLFLOW_TRACKING_URI")}
    env.update(DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false", MLFLOW_DISABLE_TELEMETRY="true",
               OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    if state is not None:
        env["PERENNIAL_STATE_DIR"] = str(state)
    return env


def commands(workspace: Path, quick: bool) -> dict[str, list[float]]:
    """The commands' walls; `status` and the idle `run` on the demo's workspace after the demo (its
    config sets model parameters, as users' do), in quick mode on `workspace`."""
    repeats = 1 if quick else REPEATS
    walls = {}
    if not quick:
        demo = Path(tempfile.mkdtemp(prefix="perennial-speed-demo-"))
        workspace = demo / "demo"
        walls["perennial demo"] = command_walls(["demo", "--workdir", str(workspace)], 1, user_env(), demo)
    config = str(workspace / "perennial.yaml")
    env = user_env(workspace / "state")
    walls |= {
        "perennial --help": command_walls(["--help"], repeats, env, workspace),
        "perennial status": command_walls(["status", "--config", config], repeats, env, workspace),
        "perennial run, nothing new": command_walls(["run", "--config", config], repeats, env, workspace),
    }
    return walls


def deployed() -> dict[str, list[float]]:
    """Event -> Running and ingest -> champion from `bench.deployed_latency` (full mode only)."""
    from bench.deployed_latency import measure

    results = measure(rows=10_000, repeat=REPEATS, paused=False)
    return {"drift event -> adapt run Running": [x["running"] for x in results["event_to_run"]],
            "ingest 10,000 rows -> new champion": list(results["ingest_to_champion_s"])}


def long_ledger(batches: int) -> tuple[list[Any], Any]:
    """A ledger of `batches` lines with every kind of decision, drifted columns and long reasons, and
    a full accuracy matrix (20 windows, 20 steps: `lifelong.max_windows`)."""
    import numpy as np

    from perennial.core.lifelong import AccuracyMatrix, Step, Window
    from perennial.core.types import CycleRecord

    rng = np.random.default_rng(0)
    kinds = ["noop"] * 6 + ["fine_tune", "retrain", "reuse", "reject"]
    records, version = [], 1
    for i in range(batches):
        kind = kinds[int(rng.integers(len(kinds)))] if i else "retrain"
        trained = kind in ("fine_tune", "retrain")
        version += trained
        records.append(CycleRecord(
            batch=f"batch-{i:04d}.csv", rows=2000, validation="failed" if kind == "reject" else "passed",
            drift_share=float(rng.uniform(0, 0.6)), champion_accuracy_before=float(rng.uniform(0.6, 0.95)),
            decision=kind, reason="accuracy drop: " + "the champion's accuracy fell on the batch " * 6,
            champion_version_before=version - trained, champion_version_after=version,
            model_version=version if trained else None, promoted=trained,
            challenger_accuracy=float(rng.uniform(0.7, 0.95)) if trained else None,
            train_cpu_seconds=float(rng.uniform(0.5, 4)) if trained else None,
            drifted_columns=[f"column {c}" for c in range(int(rng.integers(0, 5)))]))
    windows = [Window(f"batch-{i:04d}.csv", 1) for i in range(batches - 20, batches)]
    steps = [Step(w.batch, i + 1, 1, {x.batch: float(rng.uniform(0.6, 0.95)) for x in windows})
             for i, w in enumerate(windows)]
    return records, AccuracyMatrix(windows, steps)


def report_page(repeats: int) -> tuple[list[float], float]:
    """Walls of `perennial report`'s rendering and writing on a 1,000-batch ledger, and the page's MB."""
    from perennial.adapters.report_page import write_page

    records, matrix = long_ledger(REPORT_BATCHES)
    page = Path(tempfile.mkdtemp(prefix="perennial-report-")) / "report.html"
    walls = []
    for _ in range(repeats):
        with timed() as wall:
            write_page(page, "bench-model", records, matrix)
        walls.append(wall.wall)
    return walls, page.stat().st_size / 2**20


def run(quick: bool, out: Path) -> Section:
    rows, repeats = (QUICK_ROWS, 1) if quick else (ROWS, REPEATS)
    noop, _ = cycles(rows, repeats, flipped=False)
    adapt, workspace = cycles(rows, repeats, flipped=True)
    walls: dict[str, list[float]] = {"noop cycle": noop["flow"], "adaptation cycle": adapt["flow"],
                                     "noop cycle, served monitor": noop["served"],
                                     "adaptation cycle, served monitor": adapt["served"]}
    walls |= commands(workspace, quick)
    if not quick:
        walls |= deployed()
    walls["perennial report, 1,000-batch ledger"], page_mb = report_page(repeats)
    plain = {"noop cycle": noop["plain"], "adaptation cycle": adapt["plain"]}
    medians = {name: statistics.median(values) for name, values in walls.items()}
    targets = []
    for name, limit in LIMITS.items():
        if name not in medians:
            targets.append(Target(f"{name} <= {limit:g} s", None, "full mode only"))
            continue
        size = f" ({rows:,} rows)" if name in plain else ""
        targets.append(Target(f"{name}{size} <= {limit:g} s", None if quick else medians[name] <= limit,
                              f"median {medians[name]:.2f} s"))
    targets.append(Target(f"report page of a {REPORT_BATCHES:,}-batch ledger <= {REPORT_MB:g} MB",
                          page_mb <= REPORT_MB, f"{page_mb:.2f} MB"))
    for name, values in plain.items():
        ratio = medians[name] / statistics.median(values)
        targets.append(Target(f"{name} within {RATIO:g}x the same steps as plain calls",
                              None if quick else ratio <= RATIO, f"{ratio:.2f}x"))
    table = [[name, fmt(LIMITS.get(name), 1), ", ".join(fmt(v, 2) for v in values), fmt(medians[name], 2),
              fmt(statistics.median(plain[name]), 2) if name in plain else "-"]
             for name, values in walls.items()]
    markdown = "\n".join([
        f"Wall seconds on this machine. Cycles: one `{MEASURED}` of {rows:,} rows (the demo's loan data, "
        "Parquet, `hgb`) after two batches of history, each repeat in its own copy of that workspace; "
        "*noop*: a batch of the same concept; *adaptation*: its labels flipped, decided `retrain`, trained, "
        "registered and promoted. The flow runs as `perennial run` runs it (no flow-run heartbeats: "
        "nothing watches its temporary server); *served monitor*: with Prefect's heartbeat, as a served "
        "`monitor` run sends it, whose end waits up to 1 s for the heartbeat thread (once per run, "
        "not per batch). *Plain*: the same flow body with every task a plain function call, in "
        "the same process. Commands: the installed `perennial` script in a fresh process, as a user runs "
        "it without a Prefect server configured; `status` and `run` with nothing new on the demo's "
        "workspace after the demo (in quick mode on the adaptation workspace). Deployed figures: "
        "`bench.deployed_latency` (a Prefect server on 127.0.0.1 and `perennial serve`). Report: "
        f"`perennial report`'s page (rendered and written) for a generated {REPORT_BATCHES:,}-batch ledger "
        f"with every kind of decision and a full accuracy matrix: {page_mb:.2f} MB.",
        "",
        markdown_table(["what", "target (s)", "walls (s)", "median (s)", "plain calls, median (s)"], table),
    ])
    return Section(title="E. Speed", markdown=markdown, targets=targets,
                   data={"rows": rows, "walls_s": walls, "plain_s": plain, "report_page_mb": page_mb})
