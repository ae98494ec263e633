"""Lifelong learning in the loop: holdout windows, the accuracy matrix, the replay memory, and the
reuse of a former champion when its concept returns (docs/lifelong.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from perennial.adapters.batch_files import holdout_split, split_holdout
from perennial.adapters.mlflow_registry import former_champions, load_version, replay_memory
from perennial.adapters.prefect_logs import run_logger
from perennial.core.config import PipelineConfig
from perennial.core.evaluation import outputs, score
from perennial.core.lifelong import AccuracyMatrix, ReplayMemory, Step, Window
from perennial.core.metrics import Metric
from perennial.core.policy import concept_returned, forgets_too_much
from perennial.core.sampling import batch_seed, uniform_mask
from perennial.core.schema import target_values
from perennial.core.state import REPLAY, StateChange
from perennial.core.types import (
    Action,
    Batch,
    Candidate,
    Champion,
    Decision,
    DriftResult,
    Schema,
    Trigger,
    ValidationResult,
)
from perennial.pipeline.context import Cycle

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline


def window_mask(batch_id: str, holdout_rows: int, config: PipelineConfig) -> np.ndarray:
    """Which of a batch's holdout rows form its window: a bounded uniform slice, seeded by the batch."""
    return uniform_mask(holdout_rows, config.lifelong.window_rows, batch_seed(batch_id))


def window_of(batch: Batch, config: PipelineConfig) -> pd.DataFrame:
    """The bounded slice of the batch's holdout rows kept to measure forgetting on."""
    _, holdout_idx = holdout_split(batch, config)
    return batch.frame.iloc[holdout_idx[window_mask(batch.id, len(holdout_idx), config)]]


def learnable_positions(batch_id: str, rows: int, config: PipelineConfig, window_kept: bool) -> np.ndarray:
    """Rows of an earlier batch that a retrain may learn from: its training rows, and its holdout
    rows once they served their comparison and measure no forgetting (those outside its window,
    every one when its window was dropped from the matrix)."""
    training = config.training
    train_idx, holdout_idx = split_holdout(batch_id, rows, training.holdout_fraction, training.seed)
    in_window = window_mask(batch_id, len(holdout_idx), config) if window_kept \
        else np.zeros(len(holdout_idx), dtype=bool)
    return np.sort(np.concatenate([train_idx, holdout_idx[~in_window]]))


@dataclass
class Windows:
    """The accuracy matrix so far and the rows of every kept window, this batch's included: read
    once per cycle, then every model the cycle considers is scored on them."""

    matrix: AccuracyMatrix
    rows: dict[str, pd.DataFrame]
    batch_id: str

    @property
    def current(self) -> pd.DataFrame:
        return self.rows[self.batch_id]


def load_windows(cycle: Cycle) -> Windows:
    """The accuracy matrix and the kept windows, with this batch's."""
    store, batch = cycle.store, cycle.batch
    matrix = store.matrix()
    rows = {w.batch: store.window(w.batch) for w in matrix.windows if w.batch != batch.id}
    rows[batch.id] = window_of(batch, cycle.config)
    return Windows(matrix, rows, batch.id)


def next_concept(matrix: AccuracyMatrix, champion: Champion | None, decision: Decision,
                 kind: Candidate) -> int:
    """The concept a model trained as `kind` under `decision` belongs to: a new one for the policy's
    own choice when it judged the old concept superseded, else the champion's."""
    if champion is None:
        return max(matrix.concepts(), default=0) + 1
    if decision.supersedes and kind is decision.candidate:
        return max(matrix.concepts() | {champion.concept}) + 1
    return champion.concept


def score_windows(model: Pipeline, windows: Windows, schema: Schema, concept: int,
                  metric: Metric) -> AccuracyMatrix:
    """The accuracy matrix (in `metric`) as it would be with `model` (of `concept`) in service after
    this batch."""
    scores = {batch: score(model, rows, schema, metric) for batch, rows in windows.rows.items()}
    step = Step(windows.batch_id, None, concept, scores)
    return windows.matrix.extended(Window(windows.batch_id, concept), step)


def concept_windows(matrix: AccuracyMatrix) -> int:
    """Earlier windows of the last row's concept: what its concept forgetting is measured on."""
    return len(matrix.concept_columns(matrix.steps[-1].concept)) - 1


def step_change(config: PipelineConfig, windows: Windows, matrix: AccuracyMatrix, version: int | None,
                memory: ReplayMemory, schema: Schema | None = None) -> StateChange:
    """What the cycle keeps (committed with its ledger line): the batch's window, the matrix row of
    the model now in service and the replay memory of its concept; the oldest windows beyond
    `lifelong.max_windows` are dropped."""
    matrix.steps[-1].version = version
    dropped = matrix.keep_last(config.lifelong.max_windows)
    return StateChange(schema=schema, matrix=matrix, window=windows.current, dropped=dropped, replay=memory)


def memory_in_service(cycle: Cycle) -> ReplayMemory:
    """The replay memory of the concept in service; a lost file is restored from the champion's
    version, which holds a copy as it was registered (rows kept since are not in it). So is the
    memory of a champion put in service outside a cycle (`perennial rollback`, or by hand): the
    state's memory is that of the version the last cycle left in service (its matrix row's)."""
    store, config, champion = cycle.store, cycle.config, cycle.champion
    capacity, target, quantiles = config.lifelong.replay_rows, config.data.target, cycle.replay_quantiles
    steps = store.matrix().steps
    if champion is None or not steps:
        return store.replay(capacity, target, quantiles)
    kept_for = steps[-1].version
    if store.has_replay() and kept_for in (None, champion.version):
        return store.replay(capacity, target, quantiles)
    why = (f"{store.storage.where(REPLAY)} is missing" if not store.has_replay() else
           f"the champion moved from v{kept_for} to v{champion.version} outside a cycle")
    run_logger().warning("%s: restored the replay memory from v%d's copy", why, champion.version)
    return replay_memory(config, cycle.settings, champion.version, quantiles)


def concept_memory(in_service: ReplayMemory, config: PipelineConfig, champion: Champion | None,
                   concept: int) -> ReplayMemory:
    """The replay memory a model of `concept` learns with: the one in service (read once per cycle by
    the caller), or an empty one for a new concept (the old memory stays with the old versions, for
    reuse)."""
    if champion is None or concept != champion.concept:
        return ReplayMemory.empty(config.lifelong.replay_rows, config.data.target, in_service.quantiles)
    return in_service


def remember(memory: ReplayMemory, batch: Batch, train_idx: np.ndarray,
             config: PipelineConfig) -> ReplayMemory:
    """The memory after the batch's training rows were offered to it."""
    return memory.add(batch.frame.iloc[train_idx], seed=batch_seed(batch.id) ^ config.training.seed)


def accuracy_dropped(drift: DriftResult | None) -> bool:
    """The champion lost accuracy on the batch beyond sampling noise."""
    drop = drift.accuracy_drop if drift is not None else None
    return drop is not None and drop > drift.accuracy_noise


@dataclass
class Reuse:
    """A former champion to put back in service, and the accuracy matrix with it in service."""

    decision: Decision
    matrix: AccuracyMatrix
    windows: Windows
    learned_rows: int | None = None


def find_reusable(cycle: Cycle, drift: DriftResult | None, validation: ValidationResult,
                  decision: Decision) -> Reuse | None:
    """Before training because the champion lost accuracy: has the concept of a former champion
    returned (`policy.concept_returned`), without forgetting beyond the budget on earlier windows of
    its concept? The best such, or None."""
    config, batch, champion, schema, m = cycle.config, cycle.batch, cycle.champion, cycle.schema, cycle.metric
    if champion is None or drift is None or decision.trigger is not Trigger.DRIFT \
            or not accuracy_dropped(drift) or validation.new_classes:
        return None
    now = drift.champion_accuracy or 0.0
    scored = []
    former = former_champions(config, cycle.settings, champion.version, config.lifelong.reuse_candidates)
    y = target_values(batch.frame, schema).to_numpy()
    # A metric with a variance (accuracy) compares values as on different rows; another, paired.
    paired = former and m.variance is None
    champion_out = outputs(champion.model, batch.frame, schema, m) if paired else None
    for candidate in former:
        out = outputs(candidate.model, batch.frame, schema, m)
        value = m.value(y, out)
        noise = None if champion_out is None else m.paired_noise(y, out, champion_out)
        if concept_returned(value, candidate.holdout_accuracy, now, batch.rows, config.policy, m, noise):
            scored.append((value, candidate))
    windows = load_windows(cycle) if scored else None
    for value, candidate in sorted(scored, key=lambda pair: -m.utility(pair[0])):
        matrix = score_windows(candidate.model, windows, schema, candidate.concept, m)
        forgets = matrix.metrics(m).concept_forgetting
        if forgets_too_much(forgets, config.lifelong.forgetting_budget):
            continue
        named = "" if m.name == "accuracy" else f"{m.name} "
        reason = (f"concept returned: v{candidate.version} scores {named}{m.format(value, 1)} on this batch "
                  f"(its holdout {m.format(candidate.holdout_accuracy, 1)}) against the champion "
                  f"v{champion.version}'s {m.format(now, 1)}; forgets {m.format_gap(forgets, 1)} on "
                  f"{concept_windows(matrix)} earlier window(s) of its concept; reinstated without training")
        return Reuse(Decision(Action.REUSE, reason, reuse_version=candidate.version, trigger=Trigger.DRIFT),
                     matrix, windows, candidate.learned_rows)
    return None


def resumed_reuse(cycle: Cycle, decision: Decision) -> Reuse | None:
    """The reuse a crashed cycle decided, scored again (None when the decision is not a reuse)."""
    if decision.action is not Action.REUSE or decision.reuse_version is None:
        return None
    version = load_version(cycle.config, cycle.settings, decision.reuse_version)
    windows = load_windows(cycle)
    matrix = score_windows(version.model, windows, cycle.schema, version.concept, cycle.metric)
    return Reuse(decision, matrix, windows, version.learned_rows)
