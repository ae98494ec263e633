"""The strategies Perennial is compared with; each scores a batch with the model in service, then learns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import timed
from perennial.adapters.batch_files import holdout_split
from perennial.core import families
from perennial.core.config import PipelineConfig
from perennial.core.evaluation import accuracy
from perennial.core.lifelong import ReplayMemory
from perennial.core.schema import features_frame, labels
from perennial.core.types import Batch, Candidate, Schema
from perennial.pipeline.lifelong import learnable_positions, remember
from perennial.pipeline.training import training_rows


def batch_file(i: int) -> str:
    """The file name of batch i, which also seeds its holdout split."""
    return f"batch-{i:03d}.parquet"


def as_batch(i: int, frame: pd.DataFrame) -> Batch:
    """Batch i as Perennial's tasks see it: its id (the file name) seeds its holdout split and sampling."""
    return Batch(batch_file(i), Path(batch_file(i)), frame)


def holdout(i: int, frame: pd.DataFrame, config: PipelineConfig) -> pd.DataFrame:
    """The rows of batch i that Perennial holds out: never trained on, so they measure forgetting."""
    _, holdout_idx = holdout_split(as_batch(i, frame), config)
    return frame.iloc[holdout_idx]


def holdout_accuracies(model: Any, holdouts: list[pd.DataFrame], schema: Schema) -> list[float]:
    """One row of the accuracy matrix: `model`'s accuracy on each batch's holdout rows."""
    return [accuracy(model, h, schema) for h in holdouts]


@dataclass
class Step:
    """What a strategy did with one batch."""

    predictions: np.ndarray | None  # by the model in service, before learning from the batch
    action: str  # retrain, fine_tune, noop, reuse (Perennial), or online (row by row)
    train_cpu: float = 0.0
    # Accuracy of the model in service after the batch on the holdout rows of every batch so far
    # (a row of the accuracy matrix); None for learners without a holdout (river's, no-change).
    holdout_accuracy: list[float] | None = None


# A batch-level plan: batch index -> (action, window in batches; 0 = every batch so far).
Plan = Callable[[int], tuple[str, int]]


class SklearnStrategy:
    """Retrain or fine-tune the same scikit-learn family Perennial uses, on a fixed plan.

    With `replay`, every fine-tune also learns from rows of a replay memory of the whole stream,
    chosen and kept as Perennial does (`perennial.pipeline.training.training_rows`,
    `perennial.pipeline.lifelong.remember`) but blind to concepts.
    """

    def __init__(self, name: str, plan: Plan, schema: Schema, config: PipelineConfig, replay: bool = False):
        self.name, self.plan, self.schema, self.config = name, plan, schema, config
        self.model: Any = None
        self.batches: list[pd.DataFrame] = []
        self.holdouts: list[pd.DataFrame] = []
        self.memory = ReplayMemory.empty(config.lifelong.replay_rows, schema.target) if replay else None

    def step(self, i: int, batch: pd.DataFrame) -> Step:
        X = features_frame(batch, self.schema)
        predictions = None if self.model is None else np.asarray(self.model.predict(X)).astype(str)
        # The rows Perennial trains on: its holdout split of the same batch file.
        train_idx, holdout_idx = holdout_split(as_batch(i, batch), self.config)
        self.holdouts.append(batch.iloc[holdout_idx])
        self.batches.append(batch)
        action, window = self.plan(i)
        with timed() as cost:
            if action == "fine_tune":
                rows = self._fine_tune_rows(i, batch, train_idx)
                self.model = families.family_of(self.model).fine_tune(
                    self.model, features_frame(rows, self.schema), labels(rows, self.schema.target),
                    self.config.training,
                )
            elif action == "retrain":
                rows = self._retrain_rows(i, window, train_idx)
                model = self.config.model
                self.model = families.family(model.family).build(
                    self.schema, self.config.training.seed, model.params
                ).fit(features_frame(rows, self.schema), labels(rows, self.schema.target))
        if self.memory is not None:  # after learning the batch, as Perennial's memory
            self.memory = remember(self.memory, as_batch(i, batch), train_idx, self.config)
        return Step(
            predictions,
            action,
            0.0 if action == "noop" else cost.cpu,
            holdout_accuracies(self.model, self.holdouts, self.schema),
        )

    def _retrain_rows(self, i: int, window: int, train_idx: np.ndarray) -> pd.DataFrame:
        """The rows Perennial would learn from with the same window: the batch's training rows, and of
        each earlier batch those a retrain may learn (its holdout rows too once they serve no window)."""
        first = max(0, i - window + 1) if window else 0
        keep = self.config.lifelong.max_windows
        earlier = [self.batches[j].iloc[learnable_positions(batch_file(j), len(self.batches[j]), self.config,
                                                             window_kept=i - j < keep)]
                   for j in range(first, i)]
        return pd.concat([*earlier, self.batches[i].iloc[train_idx]], ignore_index=True)

    def _fine_tune_rows(self, i: int, batch: pd.DataFrame, train_idx: np.ndarray) -> pd.DataFrame:
        """The batch's training rows, with replayed rows mixed in when the strategy has a memory."""
        if self.memory is None:
            return batch.iloc[train_idx]
        rows, _ = training_rows(Candidate.FINE_TUNE, as_batch(i, batch), train_idx, [], set(), self.config,
                                   self.memory)
        return rows.frame


class RiverStrategy:
    """An online learner from `river`, predicting then learning one row at a time."""

    def __init__(self, name: str, model: Any, schema: Schema):
        self.name, self.model, self.schema = name, model, schema

    def step(self, i: int, batch: pd.DataFrame) -> Step:
        from river import stream

        y = labels(batch, self.schema.target)
        predictions = []
        with timed() as cost:
            for x, label in stream.iter_pandas(features_frame(batch, self.schema), y):
                predictions.append(str(self.model.predict_one(x)))
                self.model.learn_one(x, label)
        return Step(np.asarray(predictions) if i else None, "online", cost.cpu)


class NoChange:
    """Predicts the label of the previous row: the floor any learner must beat on a stream."""

    name = "no-change"

    def __init__(self, schema: Schema):
        self.schema, self.last = schema, None

    def step(self, i: int, batch: pd.DataFrame) -> Step:
        y = labels(batch, self.schema.target).to_numpy()
        predictions = np.concatenate([[self.last], y[:-1]]) if self.last is not None else None
        self.last = y[-1]
        return Step(predictions, "online")


def _first_then(after: str, window: int) -> Plan:
    """Train on the first batch, then do `after` on every later one."""
    return lambda i: ("retrain", window) if i == 0 else (after, 0)


def baselines(schema: Schema, config: PipelineConfig, period: int) -> list[Any]:
    """Every strategy Perennial is compared with, fresh (nothing learnt yet)."""
    from river import forest, tree

    window = config.training.window_batches
    return [
        SklearnStrategy("static", _first_then("noop", window), schema, config),
        SklearnStrategy(f"retrain-last-{window}", lambda i: ("retrain", window), schema, config),
        SklearnStrategy("retrain-all", lambda i: ("retrain", 0), schema, config),
        SklearnStrategy(
            f"periodic-{period}",
            lambda i: ("retrain", window) if i % period == 0 else ("noop", 0),
            schema,
            config,
        ),
        SklearnStrategy("fine-tune-every", _first_then("fine_tune", window), schema, config),
        SklearnStrategy("fine-tune-replay", _first_then("fine_tune", window), schema, config, replay=True),
        RiverStrategy("river-ARF", forest.ARFClassifier(seed=config.training.seed), schema),
        RiverStrategy("river-HAT", tree.HoeffdingAdaptiveTreeClassifier(seed=config.training.seed), schema),
        NoChange(schema),
    ]
