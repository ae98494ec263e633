"""Find new batch files, read one, and settle the schema it is checked against."""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE

from perennial.config import PipelineConfig
from perennial.sampling import batch_seed
from perennial.schema import check_column_rules, infer_schema
from perennial.types import Batch, BatchError, Schema

BATCH_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def batch_files(pattern: str) -> list[Path]:
    """Batch files under a folder or matching a glob, in name order; hidden (in-flight) files skipped."""
    root = Path(pattern)
    candidates = root.iterdir() if root.is_dir() else (Path(p) for p in glob.glob(pattern))
    return sorted(
        (p for p in candidates
         if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in BATCH_SUFFIXES),
        key=lambda p: p.name,
    )


@task(cache_policy=NO_CACHE)
def find_new_batches(config: PipelineConfig, processed: set[str]) -> list[Path]:
    """Batch files that the ledger does not list yet, oldest name first."""
    return [p for p in batch_files(config.source_pattern()) if p.name not in processed]


def batch_format(path: Path, file_format: str) -> str:
    """`csv` or `parquet`: the configured format, or the file's by its extension when `auto`."""
    return BATCH_SUFFIXES.get(path.suffix.lower(), "csv") if file_format == "auto" else file_format


def read_batch(path: Path, file_format: str, target: str) -> Batch:
    """Read a CSV or Parquet batch; a file that cannot serve raises BatchError naming it."""
    fmt = batch_format(path, file_format)
    try:
        frame = pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path)
    except FileNotFoundError:
        raise BatchError(f"batch file {path}: not found") from None
    except Exception as exc:  # pandas and pyarrow raise many types for a damaged file
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BatchError(f"batch file {path}: cannot be read as {fmt} ({first_line})") from None
    if frame.empty:
        raise BatchError(f"batch file {path}: has no rows")
    if target not in frame.columns:
        columns = ", ".join(map(str, frame.columns[:20]))
        raise BatchError(f"batch file {path}: target column '{target}' missing (found: {columns})")
    return Batch(id=path.name, path=path, frame=frame)


def iter_chunks(path: Path, file_format: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """A batch file as frames of at most `chunk_rows` rows, in file order; never read whole."""
    if batch_format(path, file_format) == "parquet":
        # Buffered reads without pre-buffering keep Arrow's memory flat whatever the file's size and
        # row groups (measured, pyarrow 25: about 100 MB; with the defaults it grew to 450 MB for 3M
        # rows, and a single large row group is read whole).
        with pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20) as file:
            for record_batch in file.iter_batches(batch_size=chunk_rows):
                yield record_batch.to_pandas()
    else:
        with pd.read_csv(path, chunksize=chunk_rows) as reader:
            yield from reader


def iter_rows(path: Path, file_format: str, positions: np.ndarray, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The rows of a batch file at sorted `positions`, chunk by chunk (empty chunks skipped)."""
    start = 0
    for chunk in iter_chunks(path, file_format, chunk_rows):
        lo, hi = np.searchsorted(positions, [start, start + len(chunk)])
        if hi > lo:
            yield chunk.iloc[positions[lo:hi] - start]
        start += len(chunk)


@task(cache_policy=NO_CACHE)
def load_batch(path: Path, config: PipelineConfig) -> Batch:
    """Read one batch file."""
    return read_batch(path, config.data.format, config.data.target)


@task(cache_policy=NO_CACHE)
def resolve_schema(batch: Batch, config: PipelineConfig, frozen: Schema | None) -> Schema:
    """The frozen schema, or one declared in config / inferred from this first batch; the declared
    validation rules must name its features (a ConfigError otherwise, before anything is written)."""
    schema = frozen or infer_schema(batch.frame, config.data.target, config.data.features)
    check_column_rules(config, schema)
    return schema


def next_schema(config: PipelineConfig, frozen: Schema | None, processed: set[str]) -> Schema | None:
    """The schema the next cycle will check against, found without a flow run: the frozen one, else
    the declared or inferred one of the first new batch; None without a readable new batch."""
    if frozen is not None:
        return frozen
    first = next(iter(find_new_batches.fn(config, processed)), None)
    if first is None:
        return None
    try:
        batch = read_batch(first, config.data.format, config.data.target)
    except BatchError:
        return None  # the cycle rejects it; the next batch settles the schema
    return infer_schema(batch.frame, config.data.target, config.data.features)


def split_holdout(batch_id: str, rows: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and holdout row positions; the same batch always splits the same way."""
    rng = np.random.default_rng([seed, batch_seed(batch_id)])
    order = rng.permutation(rows)
    n_holdout = max(1, int(round(rows * fraction))) if rows > 1 else 0
    return np.sort(order[n_holdout:]), np.sort(order[:n_holdout])


def holdout_split(batch: Batch, config: PipelineConfig) -> tuple[np.ndarray, np.ndarray]:
    """`split_holdout` of a loaded batch with the configured fraction and seed."""
    training = config.training
    return split_holdout(batch.id, batch.rows, training.holdout_fraction, training.seed)
