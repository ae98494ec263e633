"""The strategies Perennial is compared with; each scores a batch with the model in service, then learns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.common import timed
from perennial import families
from perennial.config import PipelineConfig
from perennial.schema import features_frame, labels
from perennial.types import Schema
from tasks.load import split_holdout


def batch_file(i: int) -> str:
    """The file name of batch i, which also seeds its holdout split."""
    return f"batch-{i:03d}.parquet"


@dataclass
class Step:
    """What a strategy did with one batch."""

    predictions: np.ndarray | None  # by the model in service, before learning from the batch
    action: str  # retrain, fine_tune, noop, or online (row by row)
    train_cpu: float = 0.0


# A batch-level plan: batch index -> (action, window in batches; 0 = every batch so far).
Plan = Callable[[int], tuple[str, int]]


class SklearnStrategy:
    """Retrain or fine-tune the same scikit-learn family Perennial uses, on a fixed plan."""

    def __init__(self, name: str, plan: Plan, schema: Schema, config: PipelineConfig):
        self.name, self.plan, self.schema, self.config = name, plan, schema, config
        self.model: Any = None
        self.seen: list[pd.DataFrame] = []

    def step(self, i: int, batch: pd.DataFrame) -> Step:
        X = features_frame(batch, self.schema)
        predictions = None if self.model is None else np.asarray(self.model.predict(X)).astype(str)
        # The rows Perennial trains on: its holdout split of the same batch file.
        train_idx, _ = split_holdout(
            batch_file(i), len(batch), self.config.training.holdout_fraction, self.config.training.seed
        )
        batch = batch.iloc[train_idx]
        X = X.iloc[train_idx]
        self.seen.append(batch)
        action, window = self.plan(i)
        if action == "noop":
            return Step(predictions, action)
        with timed() as cost:
            if action == "fine_tune":
                self.model = families.fine_tune(
                    self.model, X, labels(batch, self.schema.target), self.config.training
                )
            else:
                rows = pd.concat(self.seen[-window:] if window else self.seen, ignore_index=True)
                self.model = families.build(self.config.model, self.schema, self.config.training.seed).fit(
                    features_frame(rows, self.schema), labels(rows, self.schema.target)
                )
        return Step(predictions, action, cost.cpu)


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
        RiverStrategy("river-ARF", forest.ARFClassifier(seed=config.training.seed), schema),
        RiverStrategy("river-HAT", tree.HoeffdingAdaptiveTreeClassifier(seed=config.training.seed), schema),
        NoChange(schema),
    ]
