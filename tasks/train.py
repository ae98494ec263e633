"""Adaptation: a full retrain on a window of accepted batches, or a fine-tune of the champion."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from sklearn.pipeline import Pipeline

from perennial import families
from perennial.config import PipelineConfig
from perennial.lifelong import ReplayMemory
from perennial.sampling import batch_seed
from perennial.schema import features_frame, labels
from perennial.types import Action, Batch, Champion, CycleRecord, Decision, Schema, TrainingRows
from tasks.load import holdout_split, iter_rows, read_batch, split_holdout


@task(cache_policy=NO_CACHE)
def train(decision: Decision, rows: TrainingRows, champion: Champion | None, schema: Schema,
          config: PipelineConfig) -> Pipeline:
    """A challenger trained on `rows` (the window for a retrain, the new batch for a fine-tune)."""
    if rows.out_of_core:  # only a retrain's window is read out of core
        return families.fit_out_of_core(config.model, schema, config.training.seed, rows.chunks,
                                        config.training)
    X, y = features_frame(rows.frame, schema), labels(rows.frame, schema.target)
    if decision.action is Action.FINE_TUNE and champion is not None:
        return families.fine_tune(champion.model, X, y, config.training)
    return families.build(config.model, schema, config.training.seed).fit(X, y)


@task(cache_policy=NO_CACHE)
def training_rows(batch: Batch, train_idx: np.ndarray, decision: Decision, history: list[CycleRecord],
                  config: PipelineConfig, memory: ReplayMemory) -> tuple[TrainingRows, list[str]]:
    """The rows a challenger learns from and where they came from.

    A fine-tune learns from the new batch mixed with `lifelong.replay_ratio` replayed rows per new
    row, drawn from the replay memory; a retrain from the training rows of the accepted batches
    before it too, up to the decision's window. A retrain whose window has more rows than
    `training.max_rows_in_memory` is read in chunks (out of core), not into one frame.
    """
    if decision.action is Action.FINE_TUNE:
        new = batch.frame.iloc[train_idx]
        replay = memory.sample(round(config.lifelong.replay_ratio * len(new)), seed=batch_seed(batch.id))
        frame = pd.concat([new, replay], ignore_index=True)
        return TrainingRows(len(frame), frame=frame), [batch.id] + ([f"replay ({len(replay)} rows)"]
                                                                    if len(replay) else [])
    # Earlier batch files with their row counts, as the ledger recorded them when they were read.
    counts: dict[Path, int] = {}
    if decision.action is Action.RETRAIN and decision.window_batches > 1:
        accepted = [r for r in history if r.decision != Action.REJECT and r.path]
        # A batch the user removed is skipped: train on what is left.
        window = accepted[-(decision.window_batches - 1):]
        counts = {p: r.rows for r in window if (p := Path(r.path)).exists()}
    earlier = list(counts)
    sources = [p.name for p in earlier] + [batch.id]
    training = config.training
    if decision.action is Action.RETRAIN and batch.rows + sum(counts.values()) > training.max_rows_in_memory:
        files = [(p, split_holdout(p.name, n, training.holdout_fraction, training.seed)[0])
                 for p, n in counts.items()]
        rows = sum(len(idx) for _, idx in files) + len(train_idx)
        chunks = partial(_window_chunks, files, batch, train_idx, config)
        return TrainingRows(rows, chunks=chunks), sources
    frames = []
    for path in earlier:
        earlier_batch = read_batch(path, config.data.format, config.data.target)
        earlier_idx, _ = holdout_split(earlier_batch, config)
        frames.append(earlier_batch.frame.iloc[earlier_idx])
    frames.append(batch.frame.iloc[train_idx])
    frame = pd.concat(frames, ignore_index=True)
    return TrainingRows(len(frame), frame=frame), sources


def _window_chunks(files: list[tuple[Path, np.ndarray]], batch: Batch, train_idx: np.ndarray,
                   config: PipelineConfig) -> Iterator[pd.DataFrame]:
    """A window's training rows chunk by chunk: earlier batches read from disk, then the new batch."""
    size = config.training.chunk_rows
    for path, positions in files:
        yield from iter_rows(path, config.data.format, positions, size)
    for start in range(0, len(train_idx), size):
        yield batch.frame.iloc[train_idx[start:start + size]]
