"""C. Orchestration overhead: one full cycle as a Prefect flow and as plain Python, split by stage.

The measured cycle takes the fullest path: a batch whose labels are flipped (an abrupt concept
change) is validated, checked for drift, decided `retrain`, trained on, evaluated, registered and
promoted. Flow mode times `continuous_training` and splits its wall time with Prefect's own
task-run records; plain mode runs the same flow body with every task a plain function call
(`perennial.pipeline.tasks.plain_calls`), timing each. Every measured cycle runs in its own copy of one
workspace whose history the flow processed, so both modes start from the same state.

Called with a Prefect API available (a temporary server, or the tests' `prefect_test_harness`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import numpy as np
import pandas as pd
import yaml

from bench.common import ROOT, Section, Target, embedded_settings, fmt, markdown_table, timed

if TYPE_CHECKING:
    from perennial.core.config import Settings
    from perennial.core.types import CycleRecord

MODEL = "overhead-model"
CONFIG = {
    "name": MODEL,
    "data": {"source": "batches", "format": "parquet", "target": "approved"},
    "model": {"family": "hgb", "params": {}},
}
# Two batches of the first concept make the champion and take every code path the measured cycle
# takes once (Evidently, loading a champion), so no first-use cost lands in the measurement.
HISTORY = ("batch-001.parquet", "batch-002.parquet")
MEASURED = "batch-003.parquet"
SIZES = {"1k": 1_000, "100k": 100_000}
REPEATS = 3  # cycles per mode and size in full mode; each stage is reported as its fastest
TARGET_SHARE = 0.15  # issue 22 (30% before it)
Span = tuple[str, float, float, float]  # task name, start and end (Unix time), seconds Running

TASK_STAGES = {
    "find_new_batches": "load", "load_batch": "load",
    "validate_batch": "validation",
    "measure_drift": "drift",
    "find_reusable": "decide",
    "training_rows": "training", "train": "training",
    "evaluate": "evaluation", "score_windows": "evaluation",
    "load_champion": "MLflow logging", "log_cycle": "MLflow logging", "register": "MLflow logging",
    "promote": "MLflow logging", "log_lifelong": "MLflow logging",
    "publish_cycle": "Prefect artifacts and events",
}
REST = "Prefect orchestration + flow body (wall - tasks)"
STAGES = list(dict.fromkeys(TASK_STAGES.values())) + [REST]
# The cost of recording and orchestrating the work, as opposed to doing it.
BOOKKEEPING = ("MLflow logging", "Prefect artifacts and events", REST)

IMPORTS = {
    "the flow module (Prefect, pandas, the tasks)": "import perennial.pipeline.flows.continuous_training",
    "MLflow (mlflow.sklearn, signatures)": "import mlflow.sklearn, mlflow.models",
    "Great Expectations": "import great_expectations",
    "Evidently": "import evidently, evidently.metrics",
}


def batches(rows: int, flipped: bool = True) -> dict[str, pd.DataFrame]:
    """The demo's mixed-type loan batches (10 features); the measured one has its labels flipped
    (else it is one more batch of the same concept)."""
    from perennial.app.demo import Phase, demo_batch

    rng = np.random.default_rng(rows)
    stable = Phase("stable (Agrawal F1)", 1, function=1)
    frames = {name: demo_batch(stable, rows, rng) for name in (*HISTORY, MEASURED)}
    if flipped:
        labels = frames[MEASURED]["approved"]
        frames[MEASURED] = frames[MEASURED].assign(approved=np.where(labels == "yes", "no", "yes"))
    return frames


def bootstrap(root: Path, frames: dict[str, pd.DataFrame]) -> Path:
    """A workspace whose history batches the flow has processed (untimed); returns its config."""
    from perennial.pipeline.flows.continuous_training import continuous_training

    (root / "batches").mkdir(parents=True)
    config_path = root / "perennial.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    for name in HISTORY:
        frames[name].to_parquet(root / "batches" / name, index=False)
    continuous_training(str(config_path), settings=embedded_settings(root / "state"))
    return config_path


def open_stores(settings: Settings) -> None:
    """Open the workspace's MLflow stores (schema check, connections) before a clock starts.

    A flow cycle in a fresh process pays this too, but a copied workspace would pay it inside the
    measured cycle where a bootstrapped one does not.
    """
    from perennial.adapters.mlflow_registry import champion_version, experiment_id

    experiment_id(MODEL, settings)
    champion_version(MODEL, settings)


def workspace_copy(seed: Path, root: Path, measured: pd.DataFrame) -> tuple[Path, Settings]:
    """A copy of the bootstrapped workspace `seed` at `root` with the measured batch arrived, its
    stores open: every measured cycle starts from the same state."""
    # Its MLflow store still finds (and adds) artifacts under the bootstrap folder, whose absolute
    # paths it holds; cycles only add new runs.
    root = shutil.copytree(seed, root)
    # The state moved with its batches: it adopts the new place, as a user does (docs/your-data.md).
    (root / "state" / MODEL / "source.json").unlink()
    measured.to_parquet(root / "batches" / MEASURED, index=False)
    settings = embedded_settings(root / "state")
    open_stores(settings)
    return root, settings


def task_runs(flow_run_id: UUID, timeout: float = 60) -> list[Span]:
    """The task runs of a flow run and its subflows, by start time, from Prefect's own records."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        subflows = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
        runs = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id, *(s.id for s in subflows)]))
        # A subflow also appears as a task run of its parent; its time is the subflow's tasks'.
        placeholders = {s.parent_task_run_id for s in subflows}
        # Task-run states reach the server as events, so the records can lag the flow's return.
        deadline = time.monotonic() + timeout
        while True:
            done = [r for r in client.read_task_runs(flow_run_filter=runs)
                    if r.id not in placeholders and r.state_type == StateType.COMPLETED and r.end_time]
            names = {r.name.rsplit("-", 1)[0] for r in done}
            if names >= set(TASK_STAGES):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"flow run {flow_run_id}: no completed task runs recorded for "
                                   f"{sorted(set(TASK_STAGES) - names)} after {timeout:.0f} s")
            time.sleep(0.2)
    spans = [(r.name.rsplit("-", 1)[0], r.start_time.timestamp(), r.end_time.timestamp(),
              r.total_run_time.total_seconds() or (r.end_time - r.start_time).total_seconds()) for r in done]
    return sorted(spans, key=lambda span: span[1])


def outside_tasks(started: float, ended: float, spans: list[Span]) -> dict[str, float]:
    """A flow call's time outside its (sequential) task runs: before the first, between, after the last."""
    return {"before first task": spans[0][1] - started,
            "between tasks": sum(max(0.0, b[1] - a[2]) for a, b in pairwise(spans)),
            "after last task": ended - spans[-1][2]}


def flow_cycle(config_path: Path, settings: Settings) -> tuple[float, dict[str, float], CycleRecord,
                                                              dict[str, float]]:
    """`continuous_training` on the measured batch: wall, task seconds, ledger line, time outside tasks."""
    from perennial.pipeline.flows.continuous_training import continuous_training

    started = time.time()
    with timed() as wall:
        state = continuous_training(str(config_path), settings=settings, return_state=True)
    [record] = state.result()
    spans = task_runs(state.state_details.flow_run_id)
    seconds: dict[str, float] = defaultdict(float)
    for name, _, _, ran in spans:
        seconds[name] += ran
    return wall.wall, dict(seconds), record, outside_tasks(started, started + wall.wall, spans)


class TaskClock:
    """Inside `plain_calls`: calls each task's function directly, adding its wall seconds under its name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def __call__(self, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[name] += time.perf_counter() - start


def plain_cycle(config_path: Path, settings: Settings) -> tuple[float, dict[str, float], CycleRecord,
                                                               dict[str, float]]:
    """The measured cycle as plain Python: the flow's own body run by `plain_calls`, every task a plain
    call of its function (the same code as the flow mode, without Prefect)."""
    from perennial.pipeline.flows.continuous_training import continuous_training
    from perennial.pipeline.tasks import plain_calls

    clock = TaskClock()
    with warnings.catch_warnings():
        # Prefect still takes artifacts made outside a run, with a FutureWarning.
        warnings.simplefilter("ignore", FutureWarning)
        with timed() as wall, plain_calls(clock):
            [record] = continuous_training(str(config_path), settings=settings)
    return wall.wall, dict(clock.seconds), record, {}


def by_stage(wall: float, seconds: dict[str, float]) -> dict[str, float]:
    """Task seconds summed by stage; the rest of the wall time is orchestration and flow-body code."""
    stages = dict.fromkeys(STAGES, 0.0)
    for name, value in seconds.items():
        stages[TASK_STAGES.get(name, REST)] += value
    stages[REST] = wall - sum(v for k, v in stages.items() if k != REST)
    return stages


def import_seconds() -> dict[str, float]:
    """Import time of the flow module and of the tools its tasks import lazily, in a fresh process."""
    script = ("import json, time\nout = {}\n"
              + "".join(f"t = time.perf_counter()\n{stmt}\nout[{label!r}] = time.perf_counter() - t\n"
                        for label, stmt in IMPORTS.items())
              + "print(json.dumps(out))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"timing imports failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def share(stages: dict[str, float]) -> float:
    """Share of the cycle's wall time spent on Prefect and MLflow bookkeeping."""
    return sum(stages[s] for s in BOOKKEEPING) / sum(stages.values())


def plot(results: dict[str, dict[str, dict[str, float]]], path: Path) -> Path:
    """Stacked bars of stage seconds, plain and flow side by side, one panel per batch size."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * len(results) + 3.8, 4.8), layout="constrained")
    axes = fig.subplots(1, len(results), squeeze=False)[0]
    for ax, (size, modes) in zip(axes, results.items(), strict=True):
        bottoms = np.zeros(len(modes))
        for stage in STAGES:
            heights = np.array([stages[stage] for stages in modes.values()])
            ax.bar(list(modes), heights, bottom=bottoms, label=stage, edgecolor="white", linewidth=0.5,
                   hatch="//" if stage in BOOKKEEPING else None)
            bottoms += heights
        ax.set_title(f"{size} rows")
        ax.set_ylabel("seconds (wall)")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, title_fontsize=8,
                    title="hatched: bookkeeping")
    fig.suptitle("One retrain cycle by stage: plain Python vs Prefect flow")
    fig.savefig(path, dpi=120)
    return path


def measure(label: str, rows: int, repeats: int) -> dict[str, list[dict[str, Any]]]:
    """`repeats` cycles per mode, each in its own copy of one bootstrapped workspace."""
    frames = batches(rows)
    cycles: dict[str, list[dict[str, Any]]] = {"flow": [], "plain": []}
    with tempfile.TemporaryDirectory(prefix="perennial-overhead-") as tmp:
        seed = bootstrap(Path(tmp) / "bootstrap", frames).parent
        for i in range(repeats):
            # Alternate which mode goes first, so a busier moment of the machine hits both.
            for mode in ("flow", "plain") if i % 2 == 0 else ("plain", "flow"):
                root, settings = workspace_copy(seed, Path(tmp) / f"{mode}-{i}", frames[MEASURED])
                wall, seconds, record, outside = (flow_cycle if mode == "flow" else plain_cycle)(
                    root / "perennial.yaml", settings)
                if (record.decision, record.promoted) != ("retrain", True):
                    raise RuntimeError(f"{label} {mode}: expected a promoted retrain, got {record.decision} "
                                       f"(promoted: {record.promoted}): {record.reason}")
                cycles[mode].append({"wall": wall, "stages": by_stage(wall, seconds), "tasks": seconds,
                                     "outside_tasks": outside})
    return cycles


def fastest(values: list[dict[str, float]]) -> dict[str, float]:
    """Key by key minimum of dicts with the same keys."""
    return {key: min(v[key] for v in values) for key in values[0]}


def rounded(value: Any) -> Any:
    """Floats rounded to milliseconds, in nested dicts and lists too (for Section.data)."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def run(quick: bool, out: Path) -> Section:
    """Measure flow and plain cycles per batch size (quick: one of each on 1k rows)."""
    out.mkdir(parents=True, exist_ok=True)
    sizes = {k: v for k, v in SIZES.items() if not quick or k == "1k"}
    repeats = 1 if quick else REPEATS
    # A fresh interpreter importing everything takes 15 s or more here: full mode only.
    imports = {} if quick else import_seconds()
    results: dict[str, dict[str, dict[str, float]]] = {}
    walls: dict[str, dict[str, list[float]]] = {}
    outside: dict[str, dict[str, float]] = {}
    training: dict[str, list[float]] = {}
    data: dict[str, Any] = {"sizes": list(sizes), "repeats": repeats, "imports_s": imports}
    for label, rows in sizes.items():
        cycles = measure(label, rows, repeats)
        # Other processes on the machine only ever add time (training's OpenMP threads most of all), so
        # each stage's fastest run is the closest to its own cost, as in `best_of`.
        results[label] = {mode: fastest([c["stages"] for c in cycles[mode]]) for mode in ("plain", "flow")}
        walls[label] = {mode: [c["wall"] for c in cycles[mode]] for mode in ("plain", "flow")}
        outside[label] = fastest([c["outside_tasks"] for c in cycles["flow"]])
        training[label] = [c["stages"]["training"] for mode in ("plain", "flow") for c in cycles[mode]]
        for mode in ("plain", "flow"):
            data[f"cycle_{mode}_s_{label}"] = sum(results[label][mode].values())
            data[f"cycles_{mode}_s_{label}"] = walls[label][mode]
        data[f"bookkeeping_share_{label}"] = share(results[label]["flow"])
        data[f"flow_outside_tasks_s_{label}"] = outside[label]
        data[f"runs_{label}"] = cycles
    data["stages_s"] = results
    data = rounded(data)

    name = f"Prefect + MLflow bookkeeping < {TARGET_SHARE:.0%} of the cycle on the 100k batch"
    if "100k" in results:
        measured = data["bookkeeping_share_100k"]
        target = Target(name, measured < TARGET_SHARE,
                        f"{measured:.1%} of a {data['cycle_flow_s_100k']:.1f} s flow cycle")
    else:
        target = Target(name, None, f"100k not run in quick mode; 1k: {data['bookkeeping_share_1k']:.1%}")
    png = plot(results, out / "overhead.png")
    return Section(title="C. Orchestration overhead",
                   markdown=report(results, walls, outside, training, imports, sizes, repeats),
                   targets=[target], plots=[png], data=data)


def report(results: dict[str, dict[str, dict[str, float]]], walls: dict[str, dict[str, list[float]]],
           outside: dict[str, dict[str, float]], training: dict[str, list[float]], imports: dict[str, float],
           sizes: dict[str, int], repeats: int) -> str:
    """The section's markdown: stages by size and mode, totals and shares, then imports."""
    columns = [(size, mode) for size in results for mode in ("plain", "flow")]
    stage_rows = [[stage, ", ".join(f"`{t}`" for t, s in TASK_STAGES.items() if s == stage) or "-",
                   *(fmt(results[size][mode][stage], 2) for size, mode in columns)] for stage in STAGES]
    stage_rows.append(["**cycle**", "sum of the above",
                       *(f"**{fmt(sum(results[size][mode].values()), 2)}**" for size, mode in columns)])
    stage_rows.append(["cycle walls measured", "",
                       *(", ".join(fmt(w, 1) for w in walls[size][mode]) for size, mode in columns)])
    totals = []
    for size, modes in results.items():
        plain, flow = sum(modes["plain"].values()), sum(modes["flow"].values())
        totals.append([f"{sizes[size]:,}", fmt(plain, 2), fmt(flow, 2), fmt(flow - plain, 2),
                       fmt(modes["flow"]["MLflow logging"], 2),
                       fmt(modes["flow"]["Prefect artifacts and events"], 2),
                       fmt(modes["flow"][REST], 2), fmt(modes["plain"][REST], 2),
                       ", ".join(f"{k} {v:.2f}" for k, v in outside[size].items()),
                       f"**{share(modes['flow']):.1%}**"])
    lines = [
        "One full cycle on a batch whose labels flipped (Agrawal F1 loan data, the demo's 10 mixed-type "
        "features, Parquet, `hgb`): validate, drift, decide `retrain`, train on the batch, evaluate, "
        "register, promote. Every cycle starts from its own copy of the same history (two batches of "
        "the first concept, processed by the flow, untimed): state folder and SQLite MLflow store. "
        "*Flow*: wall time of `continuous_training(config)` on the Prefect API of this process, split "
        "with Prefect's task-run records (time in Running, summed by task). *Plain*: the same flow body "
        "run by `plain_calls`, every task a plain call of its function, each timed. "
        f"{repeats} cycle(s) per mode and size, alternating which mode goes first"
        + ("; each stage is its fastest over them (other processes only add time), so a cycle is the "
           "sum of those." if repeats > 1 else "."),
        "",
        "Seconds (wall) per stage:",
        "",
        markdown_table(["stage", "tasks", *(f"{size} {mode}" for size, mode in columns)], stage_rows),
        "",
        markdown_table(["rows", "plain cycle (s)", "flow cycle (s)", "flow - plain (s)", "MLflow logging (s)",
                        "Prefect artifacts + events (s)", "flow: wall - tasks (s)", "plain: wall - tasks (s)",
                        "flow outside tasks (s)", "bookkeeping share (flow)"], totals),
        "",
        "*Bookkeeping share* = (MLflow logging + Prefect artifacts and events + flow wall - task run "
        "time) / flow cycle. *Wall - tasks* holds Prefect's orchestration (creating the two flow runs "
        "and every task run, their states, log and event shipping, the engine's start and finish) and "
        "the flows' own code between tasks (ledger reads, holdout split, MLflow run URL); the plain "
        "column is that code alone, so nearly all of it is Prefect's. *After last task* covers the end "
        "of the `training-cycle` subflow and of its parent: the parent waits there for its heartbeat "
        "thread, which sleeps in 1 s steps (Prefect 3.9 sends flow heartbeats by default; the subflow "
        "sends none, and nothing on a command's temporary server does: part E). Loading the "
        "champion counts as MLflow logging: it is MLflow's registry and artifact store at work.",
        "",
        "Training is the noisiest stage when other processes share the cores (scikit-learn's OpenMP "
        "threads spin while they wait for one): across these cycles it took "
        + ", ".join(f"{min(t):.2f}-{max(t):.2f} s on {size} rows" for size, t in training.items()) + ".",
        "",
        "Imports, once per process (fresh interpreter, in this order; not part of the cycle, because a "
        "long-lived `serve` process or worker pays them once): "
        + (", ".join(f"{label} {value:.1f} s" for label, value in imports.items())
           + f"; total {sum(imports.values()):.1f} s." if imports else "measured in full mode only."),
    ]
    return "\n".join(lines)
