"""The strategies Perennial is compared with; each scores a batch with the model in service, then learns.

Every strategy speaks the scenario's metric (`perennial.core.metrics.Metric`): a step's outputs are
what the metric scores (labels, class probabilities or values), and the holdout matrix holds the
metric's utility (higher is better), as Perennial's own forgetting matrix does.
"""

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
from perennial.core.evaluation import outputs, score
from perennial.core.lifelong import TARGET_QUANTILES, ReplayMemory
from perennial.core.metrics import Metric
from perennial.core.schema import features_frame, target_values
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


def holdout_utilities(model: Any, holdouts: list[pd.DataFrame], schema: Schema,
                      metric: Metric) -> list[float]:
    """One row of the holdout matrix: `model`'s metric on each batch's holdout rows, as its utility
    (the value itself for a share such as accuracy)."""
    return [metric.utility(score(model, h, schema, metric)) for h in holdouts]


@dataclass
class Step:
    """What a strategy did with one batch."""

    # What the metric scores of the model in service (labels, probabilities of the metric's classes or
    # values), before learning from the batch; None before any model is in service.
    outputs: np.ndarray | None
    action: str  # retrain, fine_tune, noop, reuse (Perennial), or online (row by row)
    train_cpu: float = 0.0
    # The metric's utility for the model in service after the batch on the holdout rows of every
    # batch so far (a row of the holdout matrix); None for learners without a holdout (river's, no-change).
    holdout_utility: list[float] | None = None


# A batch-level plan: batch index -> (action, window in batches; 0 = every batch so far).
Plan = Callable[[int], tuple[str, int]]


class SklearnStrategy:
    """Retrain or fine-tune the same scikit-learn family Perennial uses, on a fixed plan.

    With `replay`, every fine-tune also learns from rows of a replay memory of the whole stream,
    chosen and kept as Perennial does (`perennial.pipeline.training.training_rows`,
    `perennial.pipeline.lifelong.remember`) but blind to concepts.
    """

    def __init__(self, name: str, plan: Plan, schema: Schema, config: PipelineConfig, metric: Metric,
                 replay: bool = False):
        self.name, self.plan, self.schema, self.config, self.metric = name, plan, schema, config, metric
        self.model: Any = None
        self.batches: list[pd.DataFrame] = []
        self.holdouts: list[pd.DataFrame] = []
        # Balanced over classes, or over quantiles of a regression target, as Perennial's.
        quantiles = TARGET_QUANTILES if schema.regression else 0
        self.memory = (ReplayMemory.empty(config.lifelong.replay_rows, schema.target, quantiles)
                       if replay else None)

    def step(self, i: int, batch: pd.DataFrame) -> Step:
        out = None if self.model is None else outputs(self.model, batch, self.schema, self.metric)
        # The rows Perennial trains on: its holdout split of the same batch file.
        train_idx, holdout_idx = holdout_split(as_batch(i, batch), self.config)
        self.holdouts.append(batch.iloc[holdout_idx])
        self.batches.append(batch)
        action, window = self.plan(i)
        with timed() as cost:
            if action == "fine_tune":
                X, y = families.training_data(self._fine_tune_rows(i, batch, train_idx), self.schema)
                self.model = families.fine_tune(self.model, X, y, self.config.training, self.metric)
            elif action == "retrain":
                model = families.build_model(self.config.model, self.schema, self.config.training.seed,
                                             self.config.base_dir)
                self.model = families.fit_model(model, self._retrain_rows(i, window, train_idx), self.schema)
        if self.memory is not None:  # after learning the batch, as Perennial's memory
            self.memory = remember(self.memory, as_batch(i, batch), train_idx, self.config)
        return Step(
            out,
            action,
            0.0 if action == "noop" else cost.cpu,
            holdout_utilities(self.model, self.holdouts, self.schema, self.metric),
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
    """An online learner from `river`, predicting then learning one row at a time: labels, the
    probability of each of the metric's classes (`predict_proba_one`), or values."""

    def __init__(self, name: str, model: Any, schema: Schema, metric: Metric):
        self.name, self.model, self.schema, self.metric = name, model, schema, metric

    def step(self, i: int, batch: pd.DataFrame) -> Step:
        y = target_values(batch, self.schema)
        predicted = []
        with timed() as cost:
            for x, label in _rows(features_frame(batch, self.schema), y):
                predicted.append(self._output(x))
                self.model.learn_one(x, label)
        return Step(self._as_outputs(predicted) if i else None, "online", cost.cpu)

    def _output(self, x: dict) -> Any:
        if self.metric.output == "proba":
            proba = self.model.predict_proba_one(x)
            return [float(proba.get(c, 0.0)) for c in self.metric.classes]
        value = self.model.predict_one(x)
        if self.metric.output == "value":
            return np.nan if value is None else float(value)
        return str(value)

    def _as_outputs(self, predicted: list) -> np.ndarray:
        if self.metric.output == "proba":
            return np.asarray(predicted, dtype=float).reshape(len(predicted), len(self.metric.classes))
        if self.metric.output == "value":
            return np.asarray(predicted, dtype=float)
        return np.asarray(predicted).astype(str)


def _rows(X: pd.DataFrame, y: pd.Series) -> Any:
    """river's (x, y) pairs of the rows: `iter_pandas`, which river 0.26 deprecates for `iter_frame`
    (the same pairs), kept so that every river version the bench allows gives the same stream."""
    import warnings

    from river import stream

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return list(stream.iter_pandas(X, y))


class NoChange:
    """Predicts the target of the previous row (as a certain class for a probability metric): the
    floor any learner must beat on a stream."""

    name = "no-change"

    def __init__(self, schema: Schema, metric: Metric):
        self.schema, self.metric, self.last = schema, metric, None

    def step(self, i: int, batch: pd.DataFrame) -> Step:
        y = target_values(batch, self.schema).to_numpy()
        previous = np.concatenate([[self.last], y[:-1]]) if self.last is not None else None
        self.last = y[-1]
        if previous is None or self.metric.output != "proba":
            return Step(previous, "online")
        certain = np.asarray([[float(str(p) == c) for c in self.metric.classes] for p in previous])
        return Step(certain, "online")


def _first_then(after: str, window: int) -> Plan:
    """Train on the first batch, then do `after` on every later one."""
    return lambda i: ("retrain", window) if i == 0 else (after, 0)


def river_learners(schema: Schema, metric: Metric, seed: int) -> list[RiverStrategy]:
    """River's adaptive random forest and Hoeffding adaptive tree, as classifiers or regressors; a
    probability metric scores the classifiers' `predict_proba_one`."""
    from river import forest, tree

    if schema.regression:
        arf, hat = forest.ARFRegressor(seed=seed), tree.HoeffdingAdaptiveTreeRegressor(seed=seed)
    else:
        arf, hat = forest.ARFClassifier(seed=seed), tree.HoeffdingAdaptiveTreeClassifier(seed=seed)
    return [RiverStrategy("river-ARF", arf, schema, metric), RiverStrategy("river-HAT", hat, schema, metric)]


def baselines(schema: Schema, config: PipelineConfig, metric: Metric, period: int) -> list[Any]:
    """Every strategy Perennial is compared with, fresh (nothing learnt yet), judged by `metric`."""
    window = config.training.window_batches
    return [
        SklearnStrategy("static", _first_then("noop", window), schema, config, metric),
        SklearnStrategy(f"retrain-last-{window}", lambda i: ("retrain", window), schema, config, metric),
        SklearnStrategy("retrain-all", lambda i: ("retrain", 0), schema, config, metric),
        SklearnStrategy(
            f"periodic-{period}",
            lambda i: ("retrain", window) if i % period == 0 else ("noop", 0),
            schema,
            config,
            metric,
        ),
        SklearnStrategy("fine-tune-every", _first_then("fine_tune", window), schema, config, metric),
        SklearnStrategy("fine-tune-replay", _first_then("fine_tune", window), schema, config, metric,
                        replay=True),
        *river_learners(schema, metric, config.training.seed),
        NoChange(schema, metric),
    ]
