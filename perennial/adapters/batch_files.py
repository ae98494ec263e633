"""Find new batch files, read one, and settle the schema it is checked against."""

from __future__ import annotations

import codecs
import csv
import glob
import io
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perennial.core.config import DataConfig, PipelineConfig
from perennial.core.files import file_sha256
from perennial.core.labels import LabelError, LabelFile, batch_ids, read_labels
from perennial.core.sampling import batch_seed
from perennial.core.schema import check_column_rules, infer_schema, infer_task, metric_for
from perennial.core.text import shorten
from perennial.core.types import Batch, BatchError, Schema

BATCH_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def name_order(name: str) -> tuple:
    """A file name's place in the stream: runs of digits compare as numbers, so `batch-9.csv` comes
    before `batch-10.csv` (and `2026-12-06` dates in order); ties broken by the name itself."""
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in parts), name


def batch_files(pattern: str) -> list[Path]:
    """Batch files under a folder or matching a glob, in `name_order`; hidden (in-flight) files skipped."""
    root = Path(pattern)
    candidates = root.iterdir() if root.is_dir() else (Path(p) for p in glob.glob(pattern))
    return sorted(
        (p for p in candidates
         if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in BATCH_SUFFIXES),
        key=lambda p: name_order(p.name),
    )


def find_new_batches(config: PipelineConfig, processed: set[str]) -> list[Path]:
    """Batch files that the ledger does not list yet, oldest name first."""
    return [p for p in batch_files(config.source_pattern()) if p.name not in processed]


def batch_format(path: Path, file_format: str) -> str:
    """`csv` or `parquet`: the configured format, or the file's by its extension when `auto`."""
    return BATCH_SUFFIXES.get(path.suffix.lower(), "csv") if file_format == "auto" else file_format


MB = 1 << 20
# Header bytes read per allowed column: a longer header is never read whole (names average under
# 1 KB). A 400 KB header of 200,000 columns kept pandas busy for more than 10 minutes.
HEADER_BYTES_PER_COLUMN = 1024
# Cells per parsed CSV chunk, as pandas' own low-memory parser uses: the parse deadline is checked
# every fraction of a second and the frame equals a whole-file read (measured: same speed).
CHUNK_CELLS = 1 << 20


@dataclass(frozen=True)
class InputLimits:
    """What a new batch file may be before it is parsed: size, columns, parse time (`data.max_*`)."""

    max_file_mb: float
    max_columns: int
    max_parse_seconds: float

    @classmethod
    def of(cls, data: DataConfig) -> InputLimits:
        return cls(data.max_file_mb, data.max_columns, data.max_parse_seconds)


def read_batch(path: Path, file_format: str, target: str, limits: InputLimits | None = None,
               labels_later: bool = False) -> Batch:
    """Read a CSV or Parquet batch; a file that cannot serve raises BatchError naming it.

    Args:
        path: The batch file.
        file_format: `auto`, `csv` or `parquet`.
        target: The label column, which must be present unless `labels_later`.
        limits: A new file's limits, checked before pandas parses anything; None for a file that was
            accepted before (it is read as it was then, whatever the limits are now).
        labels_later: Labels may come in label files (`labels.source`): a batch without the target
            column is served without labels.
    """
    fmt = batch_format(path, file_format)
    deadline = Deadline.start(path, limits.max_parse_seconds if limits else math.inf)
    max_columns = limits.max_columns if limits else None
    try:
        if limits is not None:
            check_size(path, limits.max_file_mb)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            check_columns(path, pq.read_schema(path).names, max_columns)
            frame = parse_parquet(path, deadline)
        else:
            columns = check_columns(path, csv_header(path, max_columns), max_columns)
            frame = parse_csv(path, len(columns), deadline)
    except BatchError:
        raise
    except FileNotFoundError:
        raise BatchError(f"batch file {path}: not found") from None
    except Exception as exc:  # pandas and pyarrow raise many types for a damaged file
        first_line = shorten(str(exc)) or type(exc).__name__
        raise BatchError(f"batch file {path}: cannot be read as {fmt} ({first_line})") from None
    if frame.empty:
        raise BatchError(f"batch file {path}: has no rows")
    if target not in frame.columns and not labels_later:
        columns = ", ".join(shorten(str(c), 60) for c in frame.columns[:20])
        raise BatchError(f"batch file {path}: target column '{target}' missing (found: {columns})")
    return Batch(id=path.name, path=path, frame=frame)


def check_size(path: Path, max_file_mb: float) -> None:
    """The file's size from stat, before anything is read."""
    size = path.stat().st_size
    if size > max_file_mb * MB:
        shown = f"{size / MB:,.1f} MB" if size >= MB else f"{size:,} bytes"
        raise BatchError(f"batch file {path}: {shown}, more than data.max_file_mb ({max_file_mb:g})")


def first_row(lines: io.TextIOBase) -> list[str]:
    """The first non-blank CSV record, where pandas finds the header; [] when there is none."""
    return next((row for row in csv.reader(lines) if row), [])


def csv_header(path: Path, max_columns: int | None) -> list[str]:
    """The column names on a CSV's first line, read without pandas; [] when there are none or the
    file is not UTF-8 text (pandas reports those). With `max_columns`, at most
    `HEADER_BYTES_PER_COLUMN` bytes per column are read and a longer header is rejected unread."""
    if max_columns is None:
        try:
            with open(path, encoding="utf-8-sig", newline="") as fh:
                return first_row(fh)
        except (UnicodeDecodeError, csv.Error):
            return []
    budget = HEADER_BYTES_PER_COLUMN * (max_columns + 1)
    with open(path, "rb") as fh:
        head = fh.read(budget)
    whole_file = len(head) < budget
    try:
        # Incremental: a character cut at the end of the budget is no decoding error.
        buffer = io.StringIO(codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=whole_file),
                             newline="")
        names = first_row(buffer)
    except UnicodeDecodeError:
        return []
    except csv.Error as exc:  # e.g. a name longer than the csv module's field limit
        if whole_file:
            return []
        raise BatchError(f"batch file {path}: header not readable in its first {budget:,} bytes ({exc}); "
                         f"data.max_columns ({max_columns:,}) allows {HEADER_BYTES_PER_COLUMN:,} bytes "
                         "per column") from None
    if whole_file or buffer.getvalue()[:buffer.tell()].endswith(("\n", "\r")):
        return names
    if len(names) > max_columns:
        raise BatchError(f"batch file {path}: at least {len(names):,} columns, more than "
                         f"data.max_columns ({max_columns:,})")
    raise BatchError(f"batch file {path}: header line longer than {budget:,} bytes; data.max_columns "
                     f"({max_columns:,}) allows {HEADER_BYTES_PER_COLUMN:,} bytes per column")


def check_columns(path: Path, names: list[str], max_columns: int | None) -> list[str]:
    """The header's names, when they are within `data.max_columns` and none repeats: pandas would
    rename a repeated one silently (`salary.1`)."""
    if max_columns is not None and len(names) > max_columns:
        raise BatchError(f"batch file {path}: {len(names):,} columns, more than "
                         f"data.max_columns ({max_columns:,})")
    # Unnamed columns are no repeat: pandas names each by its position ("Unnamed: 3").
    repeated = [(name, n) for name, n in Counter(names).items() if n > 1 and name != ""]
    if repeated:
        shown = ", ".join(f"'{name}' ({n}x)" for name, n in repeated[:10])
        more = f" and {len(repeated) - 10:,} more" if len(repeated) > 10 else ""
        raise BatchError(f"batch file {path}: repeated column name(s) {shown}{more}; "
                         "every column needs its own name")
    return names


@dataclass(frozen=True)
class Deadline:
    """When parsing a file must stop: `data.max_parse_seconds` after its reading began."""

    path: Path
    seconds: float
    at: float

    @classmethod
    def start(cls, path: Path, seconds: float) -> Deadline:
        return cls(path, seconds, time.monotonic() + seconds)

    def gather(self, parts: Iterator[Any], rows_of: Callable[[Any], int]) -> list[Any]:
        """Every part a reader yields, the deadline checked before each: a parse cannot be stopped
        inside one."""
        gathered, rows = [], 0
        while True:
            if time.monotonic() > self.at:
                raise BatchError(f"batch file {self.path}: not parsed within data.max_parse_seconds "
                                 f"({self.seconds:g} s); stopped after {rows:,} rows")
            part = next(parts, None)
            if part is None:
                return gathered
            gathered.append(part)
            rows += rows_of(part)


def parse_csv(path: Path, columns: int, deadline: Deadline) -> pd.DataFrame:
    """A CSV read in chunks of about `CHUNK_CELLS` cells, stopped when the deadline passes."""
    with pd.read_csv(path, chunksize=max(1, CHUNK_CELLS // max(1, columns))) as reader:
        chunks = deadline.gather(reader, len)
    return chunks[0] if len(chunks) == 1 else pd.concat(chunks, ignore_index=True)


def parse_parquet(path: Path, deadline: Deadline) -> pd.DataFrame:
    """A Parquet file read batch by batch, stopped when the deadline passes; the same frame as
    `pd.read_parquet` (the stored Arrow schema restores index and dtypes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as file:
        batches = deadline.gather(file.iter_batches(), lambda batch: batch.num_rows)
        return pa.Table.from_batches(batches, schema=file.schema_arrow).to_pandas()


def iter_chunks(path: Path, file_format: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """A batch file as frames of at most `chunk_rows` rows, in file order; never read whole."""
    if batch_format(path, file_format) == "parquet":
        import pyarrow.parquet as pq

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


def load_batch(path: Path, config: PipelineConfig) -> Batch:
    """Read one batch file within the configured input limits, with at least `data.min_rows` rows; a
    batch without its labels (`labels.source`) needs an id on every row, unique."""
    later = config.labels.source is not None
    batch = read_batch(path, config.data.format, config.data.target, InputLimits.of(config.data), later)
    if not has_labels(batch, config):
        batch_ids(batch.frame, config.data.id, path.name)
    batch.sha256 = file_sha256(path)
    if batch.rows < config.data.min_rows:
        raise BatchError(f"batch file {path}: {batch.rows} row(s), fewer than data.min_rows "
                         f"({config.data.min_rows}) a batch needs to be split into training and holdout rows")
    return batch


def has_labels(batch: Batch, config: PipelineConfig) -> bool:
    """Whether the batch came with its target column (else its labels come later, in label files)."""
    return config.data.target in batch.frame.columns


def write_labelled(frame: pd.DataFrame, path: Path, like: Path, file_format: str) -> str:
    """Write a batch's labelled rows to `path` whole, in the format of the batch file `like` (so it is
    read back as its batch was); returns its SHA-256."""
    from perennial.core.files import place_atomically

    frame = frame.infer_objects()  # labels from JSON arrive as objects
    if batch_format(like, file_format) == "parquet":
        place_atomically(path, lambda out: frame.to_parquet(out, index=False))
    else:
        place_atomically(path, lambda out: out.write(frame.to_csv(index=False).encode()))
    return file_sha256(path)


def label_files(pattern: str) -> list[Path]:
    """Label files under a folder or matching a glob, in `name_order` (like batch files)."""
    return batch_files(pattern)


def read_label_file(path: Path, config: PipelineConfig) -> LabelFile:
    """A label file (the `data.id` and `data.target` columns) within the input limits; LabelError
    naming it when it cannot serve."""
    try:
        frame = read_batch(path, config.data.format, config.data.target, InputLimits.of(config.data)).frame
    except BatchError as exc:
        raise LabelError(str(exc).replace("batch file", "label file", 1)) from None
    return read_labels(frame, config.data.id, config.data.target, str(path))


def resolve_schema(batch: Batch, config: PipelineConfig, frozen: Schema | None) -> Schema:
    """The frozen schema, or one declared in config / inferred from this first batch; the declared
    validation rules must name its features (a ConfigError otherwise, before anything is written)."""
    schema = frozen or infer_schema(batch.frame, config.data.target, config.data.features,
                                    infer_task(batch.frame, config), config.data.id)
    check_column_rules(config, schema)
    metric_for(config, schema)  # a metric that cannot judge this target is a ConfigError now
    return schema


def next_schema(config: PipelineConfig, frozen: Schema | None, processed: set[str]) -> Schema | None:
    """The schema the next cycle will check against, found without a flow run: the frozen one, else
    the declared or inferred one of the first new batch; None without a readable new batch."""
    if frozen is not None:
        return frozen
    first = next(iter(find_new_batches(config, processed)), None)
    if first is None:
        return None
    try:
        batch = read_batch(first, config.data.format, config.data.target, InputLimits.of(config.data))
    except BatchError:
        return None  # the cycle rejects it; the next batch settles the schema
    return infer_schema(batch.frame, config.data.target, config.data.features,
                        infer_task(batch.frame, config), config.data.id)


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
