"""`perennial demo`: a synthetic Agrawal stream with known drift, processed batch by batch."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from perennial.app import streams
from perennial.core.files import place_atomically

if TYPE_CHECKING:
    from perennial.core.config import Settings
    from perennial.core.state import StateStore

DEMO_CONFIG = """\
# Perennial config of the demo stream; every key: docs/configuration.md.
name: loan-approval
data:
  source: batches          # relative to this file
  format: csv
  target: approved
model:
  family: hgb
  params: {max_iter: 100, learning_rate: 0.1}
policy:
  drift_share_moderate: 0.2
  drift_share_severe: 0.5
  drop_moderate: 0.05
  drop_severe: 0.15
  max_fine_tunes: 3
  promotion_margin: 0.0
training:
  window_batches: 3
  holdout_fraction: 0.25
"""

# `perennial demo --delayed-labels`: each row has an id; batches arrive without their labels, which
# arrive one batch later in label files (the first two batches come labelled, to train a first model).
DELAYED_CONFIG = DEMO_CONFIG.replace("  target: approved\n",
                                     "  target: approved\n  id: application id\n") + """\
labels:
  source: labels           # label files: the application id and approved columns
  min_coverage: 0.8
  max_wait_batches: 3
"""
ID_COLUMN, LABELLED_FIRST = "application id", 2


@dataclass(frozen=True)
class Phase:
    name: str
    batches: int
    function: int
    # Applicants are 20-60 at first; the covariate shift brings older ones the model never saw.
    age_shift: float = 0.0
    salary_scale: float = 1.0
    corrupt: bool = False


# A stable start, an abrupt concept change, a gradual covariate shift, a corrupt batch,
# and the return of the first season: its applicants and its rule (Perennial reuses its model).
PHASES = [
    Phase("stable (Agrawal F1)", 3, function=1),
    Phase("abrupt concept change (F1 -> F2)", 2, function=2),
    *[Phase("gradual covariate shift (older applicants)", 1, function=2, age_shift=7.0 * step)
      for step in (1, 2, 3)],
    Phase("corrupt batch", 1, function=2, age_shift=21.0, corrupt=True),
    Phase("recurring concept (F2 -> F1, first season's applicants again)", 2, function=1),
]


def demo_batch(phase: Phase, rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """One batch with readable, mixed-type columns (spaces, dashes, categories, a boolean, nulls)."""
    raw = streams.agrawal(rows, phase.function, rng, ages=(20 + phase.age_shift, 60 + phase.age_shift),
                          salary_scale=phase.salary_scale)
    frame = pd.DataFrame({
        "salary": raw["salary"].round(0),
        "commission": raw["commission"].round(0),
        "has commission": raw["commission"] > 0,
        "age": raw["age"].round(1),
        "education-level": "level-" + raw["elevel"].astype(str),
        "car make": "make-" + raw["car"].astype(str),
        "zip code": "zip-" + raw["zipcode"].astype(str),
        "house value": raw["hvalue"].round(0).where(rng.random(rows) > 0.02),  # 2% unknown
        "years in house": raw["hyears"],
        "loan": raw["loan"].round(0),
        "approved": np.where(raw["label"] == 1, "yes", "no"),
    })
    if phase.corrupt:
        # An upstream export bug: a column lost, text in a numeric column, a label nobody knows.
        frame = frame.drop(columns=["house value"])
        frame["age"] = frame["age"].astype(object)
        frame.loc[frame.index[::7], "age"] = "unknown"
        frame.loc[frame.index[::50], "approved"] = "pending"
    return frame


def write_stream(folder: Path, rows: int, seed: int = 7, ids: bool = False) -> list[tuple[Path, str]]:
    """Write every batch of the demo stream (idempotent) and return (file, phase name) in order; with
    `ids`, each row has an application id (for labels that arrive later)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out, index = [], 0
    for phase in PHASES:
        for _ in range(phase.batches):
            index += 1
            path = folder / f"batch-{index:03d}.csv"
            frame = demo_batch(phase, rows, rng)
            if ids:
                frame.insert(0, ID_COLUMN, [f"A{index:03d}-{row:05d}" for row in range(rows)])
            if not path.exists():
                frame.to_csv(path, index=False)
            out.append((path, phase.name))
    return out


def quiet_console() -> None:
    """Only warnings on the console so the table stays readable; Prefect's UI keeps every log."""
    for handler in logging.getLogger().handlers + logging.getLogger("prefect").handlers:
        if type(handler).__name__ == "PrefectConsoleHandler":
            handler.setLevel(logging.WARNING)
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    # log_model warns that the uv environment has no pip to pin; the model's requirements are explicit.
    logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)


def run_demo(workdir: Path | None, rows: int = 2000, run: bool = True, delayed_labels: bool = False) -> int:
    """Generate the stream, let batches arrive one by one, run the flow on each, print the table; with
    `delayed_labels`, batches arrive without labels and their labels one batch later."""
    from perennial.app.commands import console
    from perennial.core.config import Settings

    workdir = (workdir or Path(f"perennial-demo-{datetime.now():%Y%m%d-%H%M%S}")).resolve()
    state = workdir / "state"
    # Embedded infrastructure for this demo only, passed to the flow (never a shared state database).
    settings = Settings(state_dir=state, state_url=None,
                        mlflow_tracking_uri=f"sqlite:///{state / 'mlflow.db'}")
    os.environ["PREFECT_HOME"] = str(workdir / "prefect")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    started = time.perf_counter()
    config_path = workdir / "perennial.yaml"
    if not config_path.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        config_path.write_text(DELAYED_CONFIG if delayed_labels else DEMO_CONFIG)
    stream = write_stream(workdir / "stream", rows, ids=delayed_labels)
    console.print(f"[bold]Perennial demo[/] in {workdir}: {len(stream)} batches of {rows} rows")
    for phase in PHASES:
        console.print(f"  - {phase.name}: {phase.batches} batch(es)")
    (workdir / "batches").mkdir(exist_ok=True)
    if delayed_labels:
        (workdir / "labels").mkdir(exist_ok=True)
        console.print(f"  Labels arrive later: batches {LABELLED_FIRST + 1}-{len(stream)} without the "
                      "approved column, their labels one batch later (labels/)")
    if not run:
        console.print(f"Stream in {workdir / 'stream'}; config {config_path} (source: {workdir / 'batches'})")
        return 0
    store, already = _feed(console, stream, workdir, config_path, settings, delayed_labels)
    records = store.records()
    if not [r for r in records if r.batch not in already] and already:
        console.print("All batches were already processed in this workdir; showing the ledger.")
    from perennial.app.commands import cycles_table

    console.print(cycles_table(records, "Perennial demo: one row per batch"))
    _print_summary(console, records, time.perf_counter() - started, store.matrix())
    _print_where(console, workdir, config_path, settings, store.report_page)
    return 0


def _feed(console, stream: list[tuple[Path, str]], workdir: Path, config_path: Path,
          settings: Settings, delayed_labels: bool = False) -> tuple[StateStore, set[str]]:
    """Let each batch arrive in the monitored folder and run the flow on it (with `delayed_labels`,
    without its labels, which arrive with the next batch); the state and the batches processed before."""
    with console.status("Loading Prefect, MLflow, Great Expectations and Evidently..."):
        from perennial.core.config import load_config
        from perennial.core.state import StateStore
        from perennial.pipeline.flows.continuous_training import continuous_training

        quiet_console()
    store = StateStore(settings.state_dir, load_config(config_path).name)
    inbox = workdir / "batches"
    inbox.mkdir(exist_ok=True)
    already = store.processed()
    for i, (path, phase) in enumerate(stream, 1):
        if path.name in already:
            continue
        served = delayed_labels and i > LABELLED_FIRST
        _arrive(inbox / path.name, path, without_labels=served)
        if delayed_labels and i > LABELLED_FIRST + 1:
            _labels_arrive(workdir / "labels", stream[i - 2][0])
        with console.status(f"Batch {i}/{len(stream)} ({phase}): validate, drift, decide, adapt..."):
            for record in continuous_training(str(config_path), settings=settings):
                console.print(f"  {record.batch}: {describe(record)}")
    if delayed_labels and not (workdir / "labels" / f"labels-{stream[-1][0].name}").exists():
        _labels_arrive(workdir / "labels", stream[-1][0])
        with console.status("The last batch's labels: join, decide, adapt..."):
            for record in continuous_training(str(config_path), settings=settings):
                console.print(f"  {record.batch}: {describe(record)}")
    return store, already


def _arrive(arrived: Path, source: Path, without_labels: bool) -> None:
    """A batch lands in the monitored folder whole (the flow never sees half a file)."""
    if arrived.exists():
        return
    data = source.read_bytes() if not without_labels else \
        pd.read_csv(source).drop(columns=["approved"]).to_csv(index=False).encode()
    place_atomically(arrived, lambda out: out.write(data))


def _labels_arrive(folder: Path, batch: Path) -> None:
    """The labels of a batch arrive as a label file (its ids and the approved column)."""
    target = folder / f"labels-{batch.name}"
    if not target.exists():
        data = pd.read_csv(batch)[[ID_COLUMN, "approved"]].to_csv(index=False).encode()
        place_atomically(target, lambda out: out.write(data))


def describe(record) -> str:
    """A cycle in one line: the decision, and for labels that arrive later the estimate or the gap."""
    from perennial.core.metrics import metric_named_or_accuracy

    m = metric_named_or_accuracy(record.metric)
    line = f"[bold]{record.decision}[/]"
    e = record.estimate
    if e and record.status == "awaiting labels":
        line += f" (estimated {e['metric']} {m.format(e['value'], 1)} [{m.format(e['low'], 1)}, " \
                f"{m.format(e['high'], 1)}]{', alarm' if e.get('alarm') else ''})"
    elif e and record.champion_accuracy_before is not None:
        realised = e.get("realised", record.champion_accuracy_before)  # of the model that served it
        line += f" on its labels: realised {m.format(realised, 1)}, estimated {m.format(e['value'], 1)} " \
                "when served"
    return line


def _print_where(console, workdir: Path, config_path: Path, settings: Settings, report: Path) -> None:
    """How to open what the demo wrote."""
    uri, artifacts = settings.tracking_uri(), settings.state_dir / "mlartifacts"
    console.print("\nExplore what the demo wrote:")
    console.print(f"  Report:     {report.resolve()}   (the model's life on one page, offline)")
    workspace = (settings.state_dir / "evidently").resolve()
    console.print(f"  Evidently:  uv run evidently ui --workspace {workspace} --port 8000   -> http://127.0.0.1:8000")
    console.print(f"  MLflow UI:  uv run mlflow ui --backend-store-uri {uri} "
                  f"--default-artifact-root {artifacts} --port 5000   -> http://127.0.0.1:5000")
    console.print(f"  Prefect UI: PREFECT_HOME={workdir / 'prefect'} uv run prefect server start   "
                  "-> http://127.0.0.1:4200")
    console.print(f"  Status:     PERENNIAL_STATE_URL= PERENNIAL_STATE_DIR={settings.state_dir} "
                  "uv run perennial status "
                  f"--config {config_path}")


def _print_summary(console, records, seconds: float, matrix) -> None:
    from perennial.app.commands import cost_summary, lifelong_summary
    from perennial.core.types import Action, Trigger

    counts = {d.value: sum(r.decision is d for r in records) for d in Action}
    champion = next((r.champion_version_after for r in reversed(records) if r.champion_version_after), None)
    versions = sum(r.model_version is not None and r.decision is not Action.REUSE for r in records)  # a reuse
    # reinstates a version registered before
    promoted = sum(bool(r.promoted) for r in records)
    scored = [r.champion_accuracy_before for r in records if r.champion_accuracy_before is not None]
    growth = sum(r.trigger == Trigger.DATA_GROWTH for r in records)
    console.print(
        f"\nSummary: {len(records)} batches -> " + ", ".join(f"{k} {v}" for k, v in counts.items())
        + (f" ({growth} of the retrains for data growth, not drift)" if growth else "")
        + f"; {versions} versions registered, {promoted} promoted; champion now v{champion}."
    )
    if scored:
        console.print(f"Mean champion accuracy on arriving batches (test-then-train): "
                      f"{sum(scored) / len(scored):.1%} over {len(scored)} batches.")
    if across := lifelong_summary(matrix):
        console.print(across)
    console.print(cost_summary(records) + f" Wall time: {seconds:.0f} s.")
