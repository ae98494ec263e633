"""Adaptation: a full retrain on a window of accepted batches, or a fine-tune of the champion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from sklearn.pipeline import Pipeline

from perennial import families
from perennial.config import PipelineConfig
from perennial.schema import features_frame, labels
from perennial.types import Action, Batch, Champion, CycleRecord, Decision, Schema
from tasks.load import read_batch, split_holdout


@task(cache_policy=NO_CACHE)
def train(decision: Decision, rows: pd.DataFrame, champion: Champion | None, schema: Schema,
          config: PipelineConfig) -> Pipeline:
    """A challenger trained on `rows` (the window for a retrain, the new batch for a fine-tune)."""
    X, y = features_frame(rows, schema), labels(rows, schema.target)
    if decision.action is Action.FINE_TUNE and champion is not None:
        return families.fine_tune(champion.model, X, y, config.training)
    return families.build(config.model, schema, config.training.seed).fit(X, y)


@task(cache_policy=NO_CACHE)
def training_rows(batch: Batch, train_idx: np.ndarray, decision: Decision, history: list[CycleRecord],
                  config: PipelineConfig) -> tuple[pd.DataFrame, list[str]]:
    """The rows a challenger learns from and the batch files they came from.

    A fine-tune learns from the new batch; a retrain also from the training rows of the
    accepted batches before it, up to the decision's window.
    """
    frames, sources = [], []
    if decision.action is Action.RETRAIN and decision.window_batches > 1:
        accepted = [r for r in history if r.decision != Action.REJECT and r.path]
        for record in accepted[-(decision.window_batches - 1):]:
            path = Path(record.path)
            if not path.exists():
                continue  # the user removed an old batch: train on what is left
            earlier = read_batch(path, config.data.format, config.data.target)
            earlier_idx, _ = split_holdout(earlier.id, earlier.rows, config.training.holdout_fraction,
                                         config.training.seed)
            frames.append(earlier.frame.iloc[earlier_idx])
            sources.append(earlier.id)
    frames.append(batch.frame.iloc[train_idx])
    sources.append(batch.id)
    return pd.concat(frames, ignore_index=True), sources
