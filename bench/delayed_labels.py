"""F. Delayed labels: a model's metric estimated when its batch comes without labels, against what the
labels show when they arrive k batches later.

Each stream starts with two labelled batches (the first model); every later batch file comes without
its target (its row-id column present) and the label file of batch t (the id and the target) is written
when batch t + k arrives, just before it, so the model serving batch t may have learnt from the labels
of batch t - k. Perennial runs through the real `continuous_training` flow with `data.id` and
`labels.source` set. For every served batch the estimate on its ledger line (made at serve time) is
compared with the realised metric of the champion that served it: that version reloaded from the
registry and scored on the batch's rows with their labels (the line written when the labels arrive
carries the metric of the champion in service *then*, which may be another).

The same stream also runs through Perennial without estimates ("labels only": batch t is written with
its labels when batch t + k arrives) and through "always retrain when labels arrive" (a fresh model of
the config's family, built and fitted by Perennial's own `families.build_model` / `fit_model`, on batch
t - k alone serves batch t).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from bench.common import Section, Target, embedded_settings, fmt, markdown_table, timed

K = 2  # labels of batch t arrive with batch t + K
INITIAL = 2  # labelled batches that train the first model
ROW_ID, TARGET = "row_id", "label"
STABLE, COVARIATE, CONCEPT = "stable", "covariate shift", "concept change"
ESTIMATE_ERROR_POINTS = 2.0  # target: mean absolute estimate error in the covariate-shift phase
ADAPTS = ("retrain", "fine_tune", "reuse")


@dataclass
class Stream:
    """A stream of batches (row id and target in every frame; served without the target from INITIAL)."""

    name: str
    description: str
    batches: list[pd.DataFrame]
    phases: list[str]  # "initial", STABLE, COVARIATE or CONCEPT per batch
    target: str = TARGET
    metric: str | None = None
    task: str | None = None
    # Share of a served batch's rows whose labels ever arrive (the rest never get one).
    labelled_share: float = 1.0

    @property
    def change(self) -> int:
        """The first batch of the concept change."""
        return self.phases.index(CONCEPT)

    def config(self, delayed: bool) -> dict[str, Any]:
        model: dict[str, Any] = {"family": "hgb", "params": {"max_iter": 100}}
        if self.task:
            model["task"] = self.task
        config: dict[str, Any] = {
            "name": f"bench-{self.name}",
            "data": {"source": "batches", "format": "parquet", "target": self.target, "id": ROW_ID},
            "model": model,
            "training": {"window_batches": 3},
        }
        if self.metric:
            config["policy"] = {"metric": self.metric}
        if delayed:
            config["labels"] = {"source": "labels"}
        return config


def _phases(plan: tuple[int, int, int]) -> list[str]:
    stable, shift, after = plan
    return ["initial"] * INITIAL + [STABLE] * stable + [COVARIATE] * shift + [CONCEPT] * after


def _shift_steps(phases: list[str]) -> list[float]:
    """How far each batch is into the covariate shift: 0 before it, 1/m .. 1 over its m batches, 1 after."""
    m = phases.count(COVARIATE)
    out, j = [], 0
    for phase in phases:
        j += phase == COVARIATE
        out.append(1.0 if phase == CONCEPT else j / m if phase == COVARIATE else 0.0)
    return out


def _with_ids(frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """Each frame with a row id unique over the stream, first column."""
    return [f.reset_index(drop=True).assign(**{ROW_ID: i * 1_000_000 + np.arange(len(f))})
            [[ROW_ID, *f.columns]] for i, f in enumerate(frames)]


def synthetic(rows: int, plan: tuple[int, int, int], rng: np.random.Generator) -> Stream:
    """Four Gaussian features, P(y=1|x) = sigmoid(2 x0 - 1.5 x1 + x2 x3). Covariate shift: x0 and x1
    shrink towards the boundary (spread 1 -> 0.4) while x3 moves up (mean 0 -> 1.5), P(y|x) fixed. Concept
    change: the sign of x1's term flips (2 x0 + 1.5 x1 + x2 x3), the features as the shift left them."""
    phases = _phases(plan)
    frames = []
    for phase, f in zip(phases, _shift_steps(phases), strict=True):
        x = rng.normal(size=(rows, 4))
        x[:, :2] *= 1 - 0.6 * f
        x[:, 3] += 1.5 * f
        sign = 1.0 if phase == CONCEPT else -1.0
        logit = 2.0 * x[:, 0] + sign * 1.5 * x[:, 1] + x[:, 2] * x[:, 3]
        y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
        frames.append(pd.DataFrame(x, columns=[f"x{j}" for j in range(4)]).assign(**{TARGET: y}))
    description = (f"Four Gaussian features, P(y=1|x) = sigmoid(2 x0 - 1.5 x1 + x2 x3), {rows:,} rows per "
                   "batch; covariate shift: x0 and x1 shrink towards the boundary (spread 1 -> 0.4) and x3's "
                   "mean moves 0 -> 1.5 step by step, P(y|x) fixed; concept change: x1's term changes sign, "
                   "features as the shift left them")
    return Stream("synthetic", description, _with_ids(frames), phases)


# Bananas' plane cut into a 3 x 3 grid (terciles of each coordinate): the covariate shift moves the mix
# of cells towards two where the classes overlap most (cells 5 and 7: about 76% and 85% accuracy in
# 5-fold cross-validation, against about 90% overall), away from the others.
SHIFTED_MIX = {5: 0.3, 7: 0.35}
# The concept change: the labels swapped where the second coordinate is above this (a relabelling of
# about a quarter of the plane).
RELABEL_ABOVE = 0.8


def bananas(rows: int, plan: tuple[int, int, int], rng: np.random.Generator) -> Stream:
    """river's bundled Bananas rows (5,300 points, two overlapping banana-shaped classes), drawn without
    replacement cell by cell of a 3 x 3 grid: first in the data's own mix, then moving to the cells where
    the classes overlap; then the labels swapped in the upper part of the plane. 5% of rows never get a
    label."""
    from river import datasets

    frame = pd.DataFrame([{**x, TARGET: int(y)} for x, y in datasets.Bananas()])
    cell = (pd.qcut(frame["1"], 3, labels=False) * 3 + pd.qcut(frame["2"], 3, labels=False)).to_numpy()
    natural = np.bincount(cell, minlength=9) / len(frame)
    shifted = np.array([SHIFTED_MIX.get(c, 0.0) for c in range(9)])
    rest = 1 - shifted.sum()
    shifted += np.where(shifted > 0, 0.0, natural * rest / natural[shifted == 0].sum())
    pools = [list(rng.permutation(np.flatnonzero(cell == c))) for c in range(9)]
    phases = _phases(plan)
    frames = []
    for i, (phase, f) in enumerate(zip(phases, _shift_steps(phases), strict=True)):
        mix = (1 - f) * natural + f * shifted
        counts = np.floor(mix * rows).astype(int)
        counts[np.argsort(mix * rows - counts)[::-1][: rows - counts.sum()]] += 1
        if any(n > len(pool) for n, pool in zip(counts, pools, strict=True)):
            raise ValueError(f"bananas: batch {i} needs more rows of a cell than are left; fewer or smaller "
                             "batches")
        taken = [pools[c][:n] for c, n in enumerate(counts)]
        pools = [pool[n:] for pool, n in zip(pools, counts, strict=True)]
        batch = frame.iloc[rng.permutation(np.concatenate(taken))].copy()
        if phase == CONCEPT:
            swap = batch["2"] > RELABEL_ABOVE
            batch.loc[swap, TARGET] = 1 - batch.loc[swap, TARGET]
        frames.append(batch)
    shares = ", ".join(f"{v:.0%}" for v in SHIFTED_MIX.values())
    description = (f"river's bundled Bananas rows, {rows} per batch drawn without replacement from the "
                   "cells of a 3 x 3 grid of the plane: the data's own mix, then (covariate shift) moving to "
                   f"the two cells where the classes overlap most ({shares} of rows), P(y|x) the data's own; "
                   "concept change: labels swapped where the second coordinate is above "
                   f"{RELABEL_ABOVE}; 5% of rows never labelled")
    return Stream("bananas", description, _with_ids(frames), phases, labelled_share=0.95)


def friedman(rows: int, plan: tuple[int, int, int], rng: np.random.Generator) -> Stream:
    """Regression (MAE): five uniform features, y = 10 sin(pi x0 x1) + 20 (x2 - 0.5)^2 + 10 x3 + 5 x4 plus
    noise whose spread grows with x4 (sd 0.5 + 3 x4). Covariate shift: x4 moves up (uniform on
    [0.6 f, 1]), where the noise is larger, P(y|x) fixed; concept change: x3's term becomes -10 x3 + 10."""
    phases = _phases(plan)
    frames = []
    for phase, f in zip(phases, _shift_steps(phases), strict=True):
        x = rng.random((rows, 5))
        x[:, 4] = 0.6 * f + (1 - 0.6 * f) * x[:, 4]
        third = 10 - 10 * x[:, 3] if phase == CONCEPT else 10 * x[:, 3]
        y = (10 * np.sin(np.pi * x[:, 0] * x[:, 1]) + 20 * (x[:, 2] - 0.5) ** 2 + third + 5 * x[:, 4]
             + rng.normal(size=rows) * (0.5 + 3 * x[:, 4]))
        frames.append(pd.DataFrame(x, columns=[f"x{j}" for j in range(5)]).assign(y=y))
    description = ("Regression, judged by MAE: y = 10 sin(pi x0 x1) + 20 (x2 - 0.5)^2 + 10 x3 + 5 x4 with "
                   f"noise of sd 0.5 + 3 x4, {rows:,} rows per batch; covariate shift: x4 moves up "
                   "(uniform on [0.6 f, 1], f rising to 1), where the noise is larger; concept change: x3's "
                   "term becomes 10 - 10 x3")
    return Stream("friedman", description, _with_ids(frames), phases, target="y", metric="mae",
                  task="regression")


def streams(quick: bool) -> list[Stream]:
    if quick:
        return [synthetic(400, (1, 1, 2), np.random.default_rng(11))]
    return [synthetic(2000, (3, 5, 6), np.random.default_rng(11)),
            bananas(250, (2, 3, 3), np.random.default_rng(12)),
            friedman(2000, (3, 4, 5), np.random.default_rng(13))]


# -- Feeding the stream to Perennial ---------------------------------------------------------------------

def _file(i: int) -> str:
    return f"batch-{i:03d}.parquet"


@dataclass
class Run:
    """One workspace fed a stream: the ledger lines each run returned, by batch index."""

    workdir: Path
    settings: Any
    served: dict[int, Any] = field(default_factory=dict)  # the line written when the batch was served
    labelled: dict[int, Any] = field(default_factory=dict)  # the line of the cycle on its labels
    arrived: dict[int, int] = field(default_factory=dict)  # the stream step at which its labels arrived
    in_service: dict[int, int | None] = field(default_factory=dict)  # batch -> champion version serving it
    champion: int | None = None

    def take(self, step: int, records: list[Any]) -> None:
        for record in records:
            i = int(record.batch.removeprefix("batch-").removesuffix(".parquet"))
            if record.decision == "await_labels" and record.status == "awaiting labels":
                self.served[i] = record
            else:
                self.labelled[i], self.arrived[i] = record, step
            if record.champion_version_after is not None:
                self.champion = record.champion_version_after

    def train_cpu(self) -> float:
        return sum(r.train_cpu_seconds or 0.0 for r in self.labelled.values())


def _workspace(stream: Stream, root: Path, delayed: bool) -> tuple[Path, Path, Any, Callable[[], list[Any]]]:
    from perennial.pipeline.flows.continuous_training import continuous_training
    from perennial.pipeline.tasks import without_heartbeats

    def cycle() -> list[Any]:
        # As `perennial run` runs it: no flow-run heartbeat (its end would wait up to 1 s for it).
        with without_heartbeats():
            return continuous_training(str(config_path), settings=settings)

    workdir = root / stream.name / ("delayed" if delayed else "labels-only")
    (workdir / "batches").mkdir(parents=True)
    (workdir / "labels").mkdir()
    config_path = workdir / "perennial.yaml"
    config_path.write_text(yaml.safe_dump(stream.config(delayed)))
    settings = embedded_settings(workdir / "state")
    return workdir, config_path, settings, cycle


def labelled_ids(stream: Stream, i: int) -> np.ndarray:
    """The row ids of batch i whose labels arrive (a fixed share, the same in every run)."""
    ids = stream.batches[i][ROW_ID].to_numpy()
    if stream.labelled_share >= 1 or i < INITIAL:
        return ids
    rng = np.random.default_rng([i, 7])
    return np.sort(rng.choice(ids, round(stream.labelled_share * len(ids)), replace=False))


def _labels(stream: Stream, i: int) -> pd.DataFrame:
    frame = stream.batches[i]
    return frame.loc[frame[ROW_ID].isin(labelled_ids(stream, i)), [ROW_ID, stream.target]]


def run_delayed(stream: Stream, root: Path, k: int) -> Run:
    """Batches from INITIAL on without their target; labels of batch t written when batch t + k arrives
    (and after the last batch, one step at a time)."""
    workdir, _, settings, cycle = _workspace(stream, root, delayed=True)
    run = Run(workdir, settings)
    n = len(stream.batches)
    for step in range(n + k):
        if INITIAL <= step - k < n:
            _labels(stream, step - k).to_parquet(workdir / "labels" / f"labels-{step - k:03d}.parquet")
            run.take(step, cycle())
        if step < n:
            frame = stream.batches[step]
            (frame if step < INITIAL else frame.drop(columns=stream.target)).to_parquet(
                workdir / "batches" / _file(step))
            run.in_service[step] = run.champion
            run.take(step, cycle())
    return run


def run_labels_only(stream: Stream, root: Path, k: int) -> Run:
    """Perennial without estimates: batch t (its labelled rows) comes as a labelled file with batch t + k."""
    workdir, _, settings, cycle = _workspace(stream, root, delayed=False)
    run = Run(workdir, settings)
    n = len(stream.batches)
    for step in range(n + k):
        i = step if step < INITIAL else step - k
        if (step < INITIAL or i >= INITIAL) and i < n:
            frame = stream.batches[i]
            frame[frame[ROW_ID].isin(labelled_ids(stream, i))].to_parquet(workdir / "batches" / _file(i))
            run.take(step, cycle())
        if step < n:
            run.in_service[step] = run.champion
    return run


# -- Scoring ---------------------------------------------------------------------------------------------

@dataclass
class Served:
    """One served batch: the estimate made when it came without labels, and what its labels showed."""

    index: int
    phase: str
    version: int | None  # the champion that served it
    estimate: dict[str, Any] | None
    realised: float | None  # the metric of `version` on the batch's rows with their labels
    arrived: int | None = None
    decision: str | None = None
    reason: str | None = None
    trigger: str = ""
    ledger_version: int | None = None  # the champion the labelled cycle judged against
    ledger_realised: float | None = None
    served_decision: str = "await_labels"

    @property
    def alarm(self) -> bool:
        return bool(self.estimate and self.estimate.get("alarm"))

    @property
    def inside(self) -> bool | None:
        if not self.estimate or self.realised is None:
            return None
        return self.estimate["low"] <= self.realised <= self.estimate["high"]


@dataclass
class StreamResult:
    stream: Stream
    metric: Any
    served: list[Served]
    accuracy: dict[str, float]  # strategy -> mean metric of the model in service over the served batches
    train_cpu: dict[str, float]
    delays: dict[str, str]
    gap_told: str  # how the gap labelled the concept change's first batch, when its labels arrived
    first_gap: int | None  # batch whose labels told the concept change by the gap
    first_alarm: int | None
    alarm_standing: bool  # the estimate alarmed on the batch before the change already
    labels_only_first: int | None
    mismatches: list[str] = field(default_factory=list)  # realised vs ledger, same champion, disagreeing
    differs: int = 0  # served batches on which Perennial's two runs' models in service scored differently
    per_batch: dict[str, list[float | None]] = field(default_factory=dict)

    def error(self, s: Served) -> float | None:
        """Estimate minus realised: in points for a share, relative (%) for an error metric."""
        if not s.estimate or s.realised is None:
            return None
        if self.metric.kind == "error":
            return 100 * (s.estimate["value"] / s.realised - 1)
        return (100 if self.metric.kind == "share" else 1) * (s.estimate["value"] - s.realised)

    def phase_error(self, phase: str) -> float | None:
        errors = [abs(e) for s in self.served if s.phase == phase and (e := self.error(s)) is not None]
        return float(np.mean(errors)) if errors else None

    def inside_share(self, phase: str | None = None) -> tuple[int, int]:
        flags = [s.inside for s in self.served
                 if (phase is None or s.phase == phase) and s.inside is not None]
        return sum(flags), len(flags)


def _models(run: Run, stream: Stream) -> tuple[Callable[[int], Any], Any, Any]:
    """A loader of the run's registered versions, its frozen schema and its metric."""
    from perennial.adapters.mlflow_registry import client, load_model
    from perennial.core.config import PipelineConfig
    from perennial.core.schema import metric_for
    from perennial.core.state import StateStore

    config = PipelineConfig(**stream.config(delayed=False))
    schema = StateStore(run.settings.state_dir, config.name).schema()
    metric = metric_for(config, schema)
    client(run.settings)
    cache: dict[int, Any] = {}

    def model(version: int) -> Any:
        if version not in cache:
            cache[version] = load_model(config.name, version, config.model.trusted_types)
        return cache[version]

    return model, schema, metric


def _value(model: Any, frame: pd.DataFrame, schema: Any, metric: Any) -> float:
    from perennial.core.evaluation import score

    return float(score(model, frame, schema, metric))


def _labelled_rows(stream: Stream, i: int) -> pd.DataFrame:
    frame = stream.batches[i]
    return frame[frame[ROW_ID].isin(labelled_ids(stream, i))]


def score_delayed(stream: Stream, run: Run) -> tuple[list[Served], list[str], Any, Any, dict[int, float]]:
    """Every served batch with its estimate and the realised metric of the champion that served it; the
    lines whose recorded metric disagrees with ours for the same champion; the schema and metric; the
    metric of the first model on every served batch."""
    model, schema, metric = _models(run, stream)
    served, mismatches = [], []
    for i in range(INITIAL, len(stream.batches)):
        line = run.served.get(i)
        version = line.champion_version_before if line is not None else run.in_service[i]
        realised = None if version is None else _value(model(version), stream.batches[i], schema, metric)
        s = Served(i, stream.phases[i], version, line.estimate if line is not None else None, realised)
        if line is None and i in run.labelled:  # rejected when served: no waiting line
            s.served_decision = run.labelled[i].decision
        if (later := run.labelled.get(i)) is not None and s.served_decision == "await_labels":
            s.arrived, s.decision, s.reason = run.arrived[i], str(later.decision), later.reason
            s.trigger = str(later.trigger)
            s.ledger_version = later.champion_version_before
            s.ledger_realised = later.champion_accuracy_before
            # The line's values on the labelled rows: the champion then in service's, and (on its estimate)
            # the one of the model that served the batch, which the gap uses; both must be ours.
            recorded = [(s.ledger_version, s.ledger_realised, "champion_accuracy_before")]
            if later.estimate and "realised" in later.estimate:
                recorded.append((later.estimate.get("served_by"), later.estimate["realised"],
                                 "estimate.realised"))
            for v, value, where in recorded:
                if v is None or value is None:
                    continue
                ours = _value(model(v), _labelled_rows(stream, i), schema, metric)
                if abs(ours - value) > 1e-9:
                    mismatches.append(f"batch {i}: {where} {value:.6g}, measured {ours:.6g} (v{v})")
        served.append(s)
    first = {i: _value(model(1), stream.batches[i], schema, metric)
             for i in range(INITIAL, len(stream.batches))}
    return served, mismatches, schema, metric, first


def labels_only_values(stream: Stream, run: Run) -> list[float]:
    model, schema, metric = _models(run, stream)
    return [_value(model(run.in_service[i]), stream.batches[i], schema, metric)
            for i in range(INITIAL, len(stream.batches))]


def retrain_on_arrival(stream: Stream, schema: Any, metric: Any, k: int) -> tuple[list[float], float]:
    """The baseline: a fresh model of the config's family (Perennial's `build_model` / `fit_model`) fitted
    on the labelled rows of batch t - k alone serves batch t. Its values and training CPU seconds."""
    from perennial.core import families
    from perennial.core.config import PipelineConfig

    config = PipelineConfig(**stream.config(delayed=False))
    values, cpu = [], 0.0
    for i in range(INITIAL, len(stream.batches)):
        with timed() as cost:
            model = families.fit_model(families.build_model(config.model, schema, config.training.seed),
                                       _labelled_rows(stream, i - k), schema)
        cpu += cost.cpu
        values.append(_value(model, stream.batches[i], schema, metric))
    return values, cpu


def _first(items: list[Served], test: Callable[[Served], bool]) -> Served | None:
    return next((s for s in items if test(s)), None)


def _adapts(record: Any) -> bool:
    return str(record.decision) in ADAPTS and str(record.trigger) != "data_growth"


def evaluate(stream: Stream, root: Path, k: int) -> StreamResult:
    delayed = run_delayed(stream, root, k)
    served, mismatches, schema, metric, first_model = score_delayed(stream, delayed)
    labels_only = run_labels_only(stream, root, k)
    only_values = labels_only_values(stream, labels_only)
    baseline, baseline_cpu = retrain_on_arrival(stream, schema, metric, k)
    change = stream.change
    after = [s for s in served if s.index >= change]
    alarm = _first(after, lambda s: s.alarm)
    gap = _first(after, lambda s: (s.reason or "").startswith("concept change"))
    told = next((s for s in after if s.decision is not None), None)
    only = next((i for i in sorted(labels_only.labelled) if i >= change and _adapts(labels_only.labelled[i])),
                None)

    def delay(step: int | None, via: str) -> str:
        return "missed" if step is None else f"{step - change} ({via})"

    perennial = [s.realised for s in served]
    per_batch = {"Perennial (estimate + gap)": perennial, "Perennial, labels only": only_values,
                 "always retrain on arrival": baseline,
                 "first model, never updated": list(first_model.values())}
    return StreamResult(
        stream, metric, served,
        accuracy={name: float(np.mean(values)) for name, values in per_batch.items()},
        train_cpu={"Perennial (estimate + gap)": delayed.train_cpu(),
                   "Perennial, labels only": labels_only.train_cpu(),
                   "always retrain on arrival": baseline_cpu, "first model, never updated": 0.0},
        delays={
            "estimate alarm at serve time": delay(alarm.index if alarm else None,
                                                  f"batch {alarm.index} served" if alarm else "")
            + (", an alarm standing since before the change" if alarm and any(
                s.alarm for s in served if s.index == change - 1) else ""),
            "gap when labels arrive": delay(delayed.arrived[gap.index] if gap else None,
                                            f"labels of batch {gap.index}" if gap else ""),
            "labels only (no estimate)": delay(labels_only.arrived[only] if only is not None else None,
                                               f"labels of batch {only}"),
        },
        gap_told=(f"batch {told.index}: {_short(told.reason)} ({told.decision})" if told
                  else "labels never arrived"),
        first_gap=gap.index if gap else None,
        first_alarm=alarm.index if alarm else None,
        alarm_standing=any(s.alarm for s in served if s.index == change - 1),
        labels_only_first=only,
        mismatches=mismatches,
        differs=sum(abs(a - b) > 1e-12 for a, b in zip(perennial, only_values, strict=True)),
        per_batch=per_batch,
    )


# -- Report ---------------------------------------------------------------------------------------------

def _short(reason: str | None) -> str:
    """A decision's reason cut to its kind: the text before its first colon or semicolon."""
    if not reason:
        return "-"
    cut = min((p for p in (reason.find(":"), reason.find(";")) if p >= 0), default=len(reason))
    return reason[:cut].strip()[:60]


def _shown(metric: Any, value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt(100 * value, digits) if metric.kind == "share" else f"{value:.{digits + 2}f}"


def _alarm_verdict(result: StreamResult) -> str:
    """Whether the estimate alarmed on the concept change, and whether that alarm was the change's: an
    alarm already standing on the batch before it belongs to what came before."""
    m, change = result.metric, result.stream.change
    at = next((s for s in result.served if s.index == change), None)
    level = "" if at is None or not at.estimate else (
        f"; on batch {change} estimated {_shown(m, at.estimate['value'])}, realised {_shown(m, at.realised)}")
    if result.first_alarm is None:
        return f"no: missed{level}"
    if result.alarm_standing:
        return (f"an alarm on batch {result.first_alarm}, but one already stood on batch {change - 1} "
                f"(before the change): not the change's{level}")
    return f"yes, batch {result.first_alarm}{level}"


def _error_unit(metric: Any) -> str:
    return "pts" if metric.kind == "share" else "% of realised" if metric.kind == "error" else "units"


def batch_table(result: StreamResult) -> str:
    m = result.metric
    rows = []
    for s in result.served:
        e = s.estimate
        judged = "-" if s.ledger_version is None else "same" if s.ledger_version == s.version \
            else f"v{s.ledger_version}: {_shown(m, s.ledger_realised)}"
        rows.append([
            s.index, s.phase, "-" if s.version is None else f"v{s.version}",
            "-" if not e else f"{_shown(m, e['value'])} [{_shown(m, e['low'])}, {_shown(m, e['high'])}]",
            _shown(m, s.realised), fmt(result.error(s), 1, ""),
            {None: "-", True: "yes", False: "**no**"}[s.inside], "**alarm**" if s.alarm else "-",
            "-" if s.arrived is None else s.arrived, judged,
            s.decision or (s.served_decision if s.served_decision != "await_labels" else "-"),
            _short(s.reason),
        ])
    unit = f"{m.name} %" if m.kind == "share" else m.name
    return markdown_table(["batch", "phase", "served by", f"estimate [95% band] ({unit})",
                           f"realised ({unit})", f"error ({_error_unit(m)})", "inside band",
                           "alarm at serve time", "labels arrived with batch",
                           "champion at arrival (its metric)", "decision on labels",
                           "its reason"], rows)


def summary_rows(result: StreamResult) -> list[list[Any]]:
    m, name = result.metric, result.stream.name
    unit = _error_unit(m)
    cov_in, cov_n = result.inside_share(COVARIATE)
    all_in, all_n = result.inside_share()
    alarms = {p: sum(s.alarm for s in result.served if s.phase == p) for p in (STABLE, COVARIATE, CONCEPT)}
    target_error = f"<= {ESTIMATE_ERROR_POINTS:g} pts" if m.kind == "share" else "-"
    rows = [
        [name, "covariate shift: mean absolute estimate error", target_error,
         f"{fmt(result.phase_error(COVARIATE), 2)} {unit}"],
        [name, "stable / concept change: mean absolute estimate error", "-",
         f"{fmt(result.phase_error(STABLE), 2)} / {fmt(result.phase_error(CONCEPT), 2)} {unit}"],
        [name, "batches inside the 95% band: covariate shift / all served", "-",
         f"{cov_in}/{cov_n} / {all_in}/{all_n}"],
        [name, "estimate alarms at serve time: stable / covariate / concept batches", "-",
         f"{alarms[STABLE]}/{result.stream.phases.count(STABLE)}, "
         f"{alarms[COVARIATE]}/{result.stream.phases.count(COVARIATE)}, "
         f"{alarms[CONCEPT]}/{result.stream.phases.count(CONCEPT)}"],
        [name, f"concept change (batch {result.stream.change}) flagged by the gap when its labels arrive",
         "yes", ("yes, " if result.first_gap is not None else "**no**, ")
         + (f"first by the labels of batch {result.first_gap}; " if result.first_gap is not None else "")
         + f"its first batch's labels: {result.gap_told}"],
        [name, "the estimate alone raised an alarm at serve time on the concept change", "(may miss)",
         _alarm_verdict(result)],
    ]
    rows += [[name, f"detection delay (batches after the change): {what}", "-", value]
             for what, value in result.delays.items()]
    last = len(result.stream.batches) - 1
    rows += [[name, f"mean {m.name} of the model in service, batches {INITIAL}-{last}: {strategy}", "-",
              f"{_shown(m, result.accuracy[strategy], 2)} (training CPU {result.train_cpu[strategy]:.1f} s)"]
             for strategy in result.accuracy]
    rows.append([name, "served batches whose model in service scored differently, Perennial with estimates "
                 "vs labels only", "-", f"{result.differs}/{len(result.served)}"])
    return rows


def targets(result: StreamResult, quick: bool) -> list[Target]:
    name, m = result.stream.name, result.metric
    out = []
    if m.kind == "share":
        error = result.phase_error(COVARIATE)
        inside, total = result.inside_share(COVARIATE)
        out.append(Target(f"{name}: covariate-shift estimate error <= {ESTIMATE_ERROR_POINTS:g} points (mean "
                          "absolute, estimate at serve time vs realised)",
                          None if quick or error is None else error <= ESTIMATE_ERROR_POINTS,
                          f"{fmt(error, 2)} points; {inside}/{total} inside the band"))
    out.append(Target(f"{name}: the concept change told by the gap when its labels arrive",
                      None if quick else result.first_gap is not None,
                      f"delay {result.delays['gap when labels arrive']}; estimate alarm at serve time: "
                      f"{result.delays['estimate alarm at serve time']}; labels only: "
                      f"{result.delays['labels only (no estimate)']}"))
    return out


def plot(results: list[StreamResult], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 3.8), squeeze=False)
    for ax, r in zip(axes.flat, results, strict=True):
        scale = 100 if r.metric.kind == "share" else 1
        with_estimate = [s for s in r.served if s.estimate]
        x = [s.index for s in with_estimate]
        ax.fill_between(x, [scale * s.estimate["low"] for s in with_estimate],
                        [scale * s.estimate["high"] for s in with_estimate], alpha=0.25, label="95% band")
        ax.plot(x, [scale * s.estimate["value"] for s in with_estimate], "o--",
                label="estimate at serve time")
        ax.plot([s.index for s in r.served], [scale * (s.realised or math.nan) for s in r.served], "s-",
                color="black", label="realised (champion that served)")
        alarms = [s for s in with_estimate if s.alarm]
        ax.scatter([s.index for s in alarms], [scale * s.estimate["value"] for s in alarms], marker="x", s=80,
                   color="red", zorder=5, label="estimate alarm")
        for phase, colour in ((COVARIATE, "orange"), (CONCEPT, "red")):
            idx = [i for i, p in enumerate(r.stream.phases) if p == phase]
            if idx:
                ax.axvspan(idx[0] - 0.5, idx[-1] + 0.5, color=colour, alpha=0.08)
        ax.set_title(r.stream.name)
        ax.set_xlabel("batch")
        ax.set_ylabel(f"{r.metric.name}{' %' if r.metric.kind == 'share' else ''}")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    path = out / "delayed_labels.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def run(quick: bool, out: Path, k: int = K) -> Section:
    from threadpoolctl import threadpool_limits

    chosen = streams(quick)
    with threadpool_limits(1), tempfile.TemporaryDirectory(prefix="perennial-bench-late-") as tmp:
        results = [evaluate(stream, Path(tmp), k) for stream in chosen]
    body = [
        f"Labels arrive k = {k} batches late. Each stream: {INITIAL} labelled batches train the first model, "
        f"every later batch file comes without its target (a `{ROW_ID}` column present; config `data.id`, "
        "`labels.source`), and the label file of batch t (row id, target) is written when batch t + k "
        "arrives, just before it is fed; after the last batch the remaining label files come one step at a "
        "time. Perennial runs the real `continuous_training` flow (model family `hgb`, "
        "`max_iter` 100, one thread). *Estimate*: the ledger line written when the batch was served (value "
        "and 95% band); *realised*: the metric of the champion that served it (`champion_version_before` of "
        "that line, reloaded from the registry) on the batch's rows with their labels; *error*: estimate "
        "minus realised (the line written when the labels arrive records the same value for the model "
        "that served the batch, `estimate.realised`, on the labelled rows; any disagreement is listed "
        "under the table). *Champion at arrival*: the champion in service when the labels arrived, "
        "when it is no longer the one that served the batch, and its metric on the labelled rows "
        "(the line's `champion_accuracy_before`). "
        "*Labels only*: the same stream through Perennial without `labels.source`, batch t (with labels) "
        "written when batch t + k arrives, served meanwhile by the champion of that moment. *Always "
        "retrain on arrival*: a fresh `hgb` model (Perennial's `families.build_model` / `fit_model`, same "
        "params) fitted on the labelled rows of batch t - k alone serves batch t. Detection delays count "
        "stream batches from the change's first batch to the batch with which the alarm or the "
        "decision came.",
        "",
    ]
    all_targets: list[Target] = []
    for r in results:
        body += [f"### {r.stream.name}", "", f"{r.stream.description}. Metric: {r.metric.name} "
                 f"({r.metric.direction}); concept change at batch {r.stream.change}.", "",
                 batch_table(r), ""]
        if r.mismatches:
            body += ["Recorded realised metric that disagrees with ours for the same champion: "
                     + "; ".join(r.mismatches), ""]
        all_targets += targets(r, quick)
    body += ["### Summary", "", markdown_table(["stream", "measure", "target", "result"],
                                               [row for r in results for row in summary_rows(r)])]
    return Section("F. Delayed labels", "\n".join(body), all_targets, [plot(results, out)],
                   data={"k": k, "streams": {r.stream.name: {
                       "covariate_error": r.phase_error(COVARIATE), "inside": r.inside_share(),
                       "delays": r.delays, "accuracy": r.accuracy} for r in results}})
