"""Training a candidate: a retrain on this batch or on a window of accepted batches, or a fine-tune."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from perennial.adapters.batch_files import batch_format, iter_rows, read_batch
from perennial.adapters.prefect_logs import run_logger
from perennial.core import families
from perennial.core.config import ConfigError, PipelineConfig
from perennial.core.files import file_sha256
from perennial.core.lifelong import ReplayMemory
from perennial.core.sampling import batch_seed, history_quotas, uniform_mask
from perennial.core.schema import metric_for
from perennial.core.text import shorten
from perennial.core.types import Batch, Candidate, Champion, CycleRecord, Schema, TrainingRows
from perennial.pipeline.lifelong import learnable_positions

if TYPE_CHECKING:
    from perennial.core.metrics import Metric


def train(kind: Candidate, rows: TrainingRows, champion: Champion | None, schema: Schema,
          config: PipelineConfig, metric: Metric | None = None) -> Any:
    """A challenger trained on `rows`: the champion fine-tuned by its own capability (judged by
    `metric`, the model's; None: `metric_for(config, schema)`), or a fresh model of the config (the
    user's own, `model.estimator`, or the preset of `model.family`). scikit-learn refusing a
    configured parameter of a preset is a ConfigError: the config is wrong, not the batch."""
    try:
        return _train(kind, rows, champion, schema, config, metric)
    except (TypeError, ValueError) as exc:
        key = families.refused_param(exc, config.model.params) if config.model.estimator is None else None
        if key is None:
            raise
        raise ConfigError(f"{config.config_file or 'config'}: key 'model.params.{shorten(key, 120)}': "
                          f"refused by scikit-learn at training ({shorten(str(exc))})") from exc


def _train(kind: Candidate, rows: TrainingRows, champion: Champion | None, schema: Schema,
           config: PipelineConfig, metric: Metric | None) -> Any:
    """`train`, without the blame for errors."""
    seed, where = config.training.seed, f"{config.config_file or 'config'}: "
    if rows.out_of_core:  # only a retrain's window is read out of core
        return families.fit_out_of_core(config.model, schema, seed, rows.chunks, config.training,
                                        config.base_dir, where)
    if kind is Candidate.FINE_TUNE and champion is not None:
        # By what the champion's model offers, whatever the config now builds.
        X, y = families.training_data(rows.frame, schema)
        return families.fine_tune(champion.model, X, y, config.training, metric or metric_for(config, schema))
    return families.fit_model(families.build_model(config.model, schema, seed, config.base_dir, where),
                              rows.frame, schema)


def earlier_batches(kind: Candidate, history: list[CycleRecord], config: PipelineConfig,
                    concept: int | None) -> list[CycleRecord]:
    """The accepted batches before this one that a candidate learns from (besides this batch):
    the last `window_batches - 1` for a window, every one of the concept in service for a retrain
    on its history (`retrain_all`, data growth), none for a fine-tune or a retrain on the batch alone."""
    accepted = [r for r in history if r.learnable and r.path]
    if kind is Candidate.RETRAIN_WINDOW:
        return accepted[len(accepted) - config.training.window_batches + 1:] \
            if config.training.window_batches > 1 else []
    if kind.learns_history:
        return [r for r in accepted if r.concept == concept]
    return []


def estimated_rows(kind: Candidate, history: list[CycleRecord], config: PipelineConfig, concept: int | None,
                   new_rows: int) -> int:
    """Rows a candidate would train on, at most, from the ledger's row counts (to estimate its cost)."""
    if kind is Candidate.FINE_TUNE:
        return new_rows + round(config.lifelong.replay_ratio * new_rows)
    earlier = earlier_batches(kind, history, config, concept)
    rows = new_rows + round(sum(r.rows for r in earlier) * (1 - config.training.holdout_fraction))
    return min(rows, max(new_rows, config.training.history_rows)) if kind.learns_history else rows


def training_rows(kind: Candidate, batch: Batch, train_idx: np.ndarray, earlier: list[CycleRecord],
                  kept_windows: set[str], config: PipelineConfig,
                  memory: ReplayMemory) -> tuple[TrainingRows, list[str]]:
    """The rows a candidate learns from and where they came from.

    A fine-tune learns from the new batch mixed with `lifelong.replay_ratio` replayed rows per new
    row, drawn from the replay memory; a retrain from the batch's training rows and, for each
    `earlier` batch, the rows it may learn from (`learnable_positions`: its holdout rows too, once
    they serve no comparison); a retrain on the concept's history at most `training.history_rows`
    of them (`history_quotas`: the newest batches favoured). A retrain with more rows than
    `training.max_rows_in_memory` is read in chunks (out of core), not into one frame.
    """
    if kind is Candidate.FINE_TUNE:
        new = batch.frame.iloc[train_idx]
        replay = memory.sample(round(config.lifelong.replay_ratio * len(new)), seed=batch_seed(batch.id))
        frame = pd.concat([new, replay], ignore_index=True)
        return TrainingRows(len(frame), frame=frame), [batch.id] + ([f"replay ({len(replay)} rows)"]
                                                                    if len(replay) else [])
    # Earlier batch files with their learnable rows, counted as the ledger recorded them when read.
    # A batch removed or changed since is left out (`unchanged`): train on what is left.
    present = [(Path(r.path), r.rows) for r in earlier if unchanged(r)]
    files = [(p, learnable_positions(p.name, n, config, p.name in kept_windows)) for p, n in present]
    if kind.learns_history:
        files = within_budget(files, config.training.history_rows - len(train_idx))
    sources = [p.name for p, _ in files] + [batch.id]
    if batch.rows + sum(n for _, n in present) > config.training.max_rows_in_memory:
        rows = sum(len(idx) for _, idx in files) + len(train_idx)
        return TrainingRows(rows, chunks=partial(_window_chunks, files, batch, train_idx, config)), sources
    frames = [read_batch(path, config.data.format, config.data.target).frame.iloc[positions]
              for path, positions in files]
    frame = pd.concat([*frames, batch.frame.iloc[train_idx]], ignore_index=True)
    return TrainingRows(len(frame), frame=frame), sources


def unchanged(record: CycleRecord) -> bool:
    """The batch's file still holds the bytes its cycle read (by their SHA-256; by the row count for a
    line written before hashes were recorded); else False, with a warning naming the file."""
    path = Path(record.path)
    try:
        if record.sha256 is not None:
            same = file_sha256(path) == record.sha256
        else:
            same = file_rows(path) == record.rows
    except FileNotFoundError:
        return False  # removed by the user: nothing to warn about
    except Exception as exc:  # pandas and pyarrow raise many types for a damaged file
        same, why = False, f"unreadable ({type(exc).__name__})"
    else:
        why = "its bytes changed"
    if not same:
        run_logger().warning("batch file %s: left out of this retrain, %s since its cycle read it", path, why)
    return same


def file_rows(path: Path) -> int:
    """Rows of a batch file: from a Parquet file's metadata, by reading one CSV column."""
    if batch_format(path, "auto") == "parquet":
        import pyarrow.parquet as pq

        return pq.read_metadata(path).num_rows
    return len(pd.read_csv(path, usecols=[0]))


def within_budget(files: list[tuple[Path, np.ndarray]], budget: int) -> list[tuple[Path, np.ndarray]]:
    """The earlier batches' learnable rows cut to `budget` rows in all: each batch's quota drawn
    uniformly from its rows, seeded by the batch (the same rows at every retrain of the same size)."""
    quotas = history_quotas([len(positions) for _, positions in files], max(budget, 0))
    return [(path, positions[uniform_mask(len(positions), quota, batch_seed(path.name))])
            for (path, positions), quota in zip(files, quotas, strict=True) if quota]


def _window_chunks(files: list[tuple[Path, np.ndarray]], batch: Batch, train_idx: np.ndarray,
                   config: PipelineConfig) -> Iterator[pd.DataFrame]:
    """A window's training rows chunk by chunk: earlier batches read from disk, then the new batch."""
    size = config.training.chunk_rows
    for path, positions in files:
        yield from iter_rows(path, config.data.format, positions, size)
    for start in range(0, len(train_idx), size):
        yield batch.frame.iloc[train_idx[start:start + size]]
