"""Labels that arrive later than their rows: label files (the row id and the target) are joined by id to
the batches waiting for them, and a batch is learnt from once enough of its rows have a label.

Pure pandas: reading the files, keeping pending batches and counting what waits belong to the flows.
Rules: ids are compared as text (an id read as 7 from one file and as "7" from another is one id); a
label is never invented (a row no label names keeps a missing target and is not learnt from); the last
label for an id wins, within a file and across files (a later file corrects an earlier one).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from perennial.core.schema import labels as as_text
from perennial.core.text import shorten
from perennial.core.types import BatchError


class LabelError(ValueError):
    """A label file that cannot be joined (the message names the file and the problem)."""


@dataclass(frozen=True)
class LabelFile:
    """The labels of one file, one row per id (ids as text), in file order of each id's last row."""

    source: str
    frame: pd.DataFrame  # columns: the id column and the target column
    rows: int  # rows in the file
    duplicates: int  # rows a later row of the same id replaced
    empty: int  # rows with an id but no target value, ignored


@dataclass(frozen=True)
class Join:
    """What joining labels to one pending batch did."""

    batch: str  # the pending batch (its file name)
    rows: int  # rows in the batch
    labelled: int  # rows with a label after the join
    coverage: float  # labelled / rows
    joined: int  # rows this join gave a label to (new or replacing an earlier one)
    relabelled: int  # rows whose earlier label this join changed
    duplicates: int  # label rows for this batch's ids that a later row of the same id replaced
    ready: bool  # coverage >= min_coverage: the batch may be learnt from
    class_mix: dict[str, float] | None  # share of each class among the batch's labels; None: regression


def _found(frame: pd.DataFrame) -> str:
    more = ", ..." if frame.shape[1] > 20 else ""
    return ", ".join(shorten(str(c), 60) for c in frame.columns[:20]) + more


def _text(values: pd.Series) -> pd.Series:
    return as_text(pd.DataFrame({"values": values}), "values")


def ids(frame: pd.DataFrame, id_column: str) -> pd.Series:
    """The id column as text: 7 read from a CSV, 7.0 from a column with gaps and "7" from Parquet are
    one id (integral floats are written as integers, like labels)."""
    return as_text(frame, id_column)


def _require_ids(frame: pd.DataFrame, columns: dict[str, str], where: str, error: type[ValueError],
                 why: str) -> None:
    """`columns` ({role: name}, the id column first) present and every row with an id; else `error`
    naming `where`, the column, and `why` ids are needed."""
    for role, column in columns.items():
        if column not in frame.columns:
            raise error(f"{where}: {role} column '{shorten(column, 60)}' missing (found: {_found(frame)})")
    id_column = columns["id"]
    nulls = int(frame[id_column].isna().sum())
    if nulls:
        raise error(f"{where}: {nulls:,} of {len(frame):,} rows have no id (column "
                    f"'{shorten(id_column, 60)}'); {why}")


def read_labels(frame: pd.DataFrame, id_column: str, target: str, source: str) -> LabelFile:
    """Check a label file read as `frame` and keep one label per id: the last row of each id (a later
    row corrects an earlier one). Rows without a target value label nothing and are ignored."""
    _require_ids(frame, {"id": id_column, "target": target}, f"label file {source}", LabelError,
                 "every label needs the id of its row")
    given = frame[[id_column, target]]
    given = given.assign(**{id_column: ids(given, id_column)})[given[target].notna()]
    last = given.drop_duplicates(subset=id_column, keep="last")
    return LabelFile(source=source, frame=last.reset_index(drop=True), rows=len(frame),
                     duplicates=len(given) - len(last), empty=len(frame) - len(given))


def batch_ids(batch: pd.DataFrame, id_column: str, name: str) -> pd.Series:
    """A pending batch's ids as text; BatchError naming the batch when a row has none or repeats one
    (a label could not tell which row it is for)."""
    _require_ids(batch, {"id": id_column}, f"batch {name}", BatchError, "labels are joined to rows by id")
    keys = ids(batch, id_column)
    repeated = int(keys.duplicated().sum())
    if repeated:
        example = keys[keys.duplicated()].iloc[0]
        raise BatchError(f"batch {name}: {repeated:,} rows repeat the id of an earlier row (column "
                         f"'{shorten(id_column, 60)}', e.g. {shorten(example, 60)!r}); ids must be unique "
                         "to join labels")
    return keys


def class_mix(frame: pd.DataFrame, target: str) -> dict[str, float]:
    """Share of each class among the rows with a label, classes as text in sorted order."""
    shares = as_text(labelled_rows(frame, target), target).value_counts(normalize=True)
    return {str(k): float(v) for k, v in sorted(shares.items())}


def join_labels(batch: pd.DataFrame, labels: pd.DataFrame, id_column: str, target: str, min_coverage: float,
                name: str, task: str = "classification") -> tuple[pd.DataFrame, Join]:
    """The batch with its target filled from `labels` (id and target columns, in arrival order: where an
    id repeats, its last row wins) where the id matches; a label replaces an earlier one, a row no label
    names keeps what it had (a missing target stays missing). `name` names the batch in errors."""
    keys = batch_ids(batch, id_column, name)
    given = labels[labels[target].notna()]
    given = given.assign(**{id_column: ids(given, id_column)})
    mine = given[given[id_column].isin(keys)]
    last = mine.drop_duplicates(subset=id_column, keep="last").set_index(id_column)[target]
    new = pd.Series(keys.map(last).to_numpy(), index=batch.index)
    old = batch[target] if target in batch.columns else pd.Series(float("nan"), index=batch.index)
    changed = old.notna() & new.notna() & (_text(old) != _text(new))
    filled = batch.assign(**{target: new.where(new.notna(), old)})
    labelled = int(filled[target].notna().sum())
    coverage = labelled / len(batch) if len(batch) else 0.0
    mix = None if task == "regression" else class_mix(filled, target)
    summary = Join(batch=name, rows=len(batch), labelled=labelled, coverage=coverage,
                   joined=int(new.notna().sum()), relabelled=int(changed.sum()),
                   duplicates=len(mine) - len(last), ready=coverage >= min_coverage, class_mix=mix)
    return filled, summary


def orphans(labels: pd.DataFrame, pending_ids: set[str], id_column: str) -> pd.DataFrame:
    """The labels whose id is in no pending batch (kept for batches that may still arrive)."""
    pending = {str(i) for i in pending_ids}
    return labels[~ids(labels, id_column).isin(pending)]


def labelled_rows(frame: pd.DataFrame, target: str) -> pd.DataFrame:
    """The rows that have a label: the only rows a model may learn from."""
    if target not in frame.columns:
        return frame.iloc[:0]
    return frame[frame[target].notna()]
