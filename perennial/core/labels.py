"""Labels that arrive later than their rows: label files (the row id and the target) are joined by id to
the batches waiting for them, and a batch is learnt from once enough of its rows have a label.

Pure pandas: reading the files, keeping pending batches and counting what waits belong to the flows.
Rules: ids are compared as text (an id read as 7 from one file and as "7" from another is one id); a
label is never invented (a row no label names keeps a missing target and is not learnt from); the last
label for an id wins, within a file and across files (a later file corrects an earlier one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from perennial.core.schema import labels as as_text
from perennial.core.text import shorten
from perennial.core.types import BatchError


class LabelError(BatchError):
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


@dataclass
class LabelPool:
    """The labels received and not yet learnt from, kept in the model's state (`labels.json`): one row
    per id (the last label received wins), with the number of batches the ledger held when it arrived
    (its age is counted in newer batches); the label files read (name -> SHA-256, so a file is read
    once, and a changed file again), files refused with why, and what was dropped and why."""

    frame: pd.DataFrame  # columns: id (text), target, arrived (ledger batches at arrival)
    files: dict[str, str]
    refused: dict[str, str]
    duplicates: int = 0  # labels a later one for the same id replaced
    expired: int = 0  # labels of no pending batch dropped after `labels.max_wait_batches`

    @classmethod
    def empty(cls) -> LabelPool:
        return cls(pd.DataFrame({"id": pd.Series(dtype=str), "target": pd.Series(dtype=object),
                                 "arrived": pd.Series(dtype="int64")}), {}, {})

    def add(self, labels: LabelFile, id_column: str, target: str, sha256: str, arrived: int) -> LabelPool:
        """The pool with a file's labels added (they replace earlier labels of the same ids)."""
        new = pd.DataFrame({"id": labels.frame[id_column].astype(str), "target": labels.frame[target],
                            "arrived": arrived})
        replaced = int(self.frame["id"].isin(new["id"]).sum())
        kept = self.frame[~self.frame["id"].isin(new["id"])]
        frame = pd.concat([kept, new], ignore_index=True) if len(kept) else new.reset_index(drop=True)
        return LabelPool(frame, {**self.files, Path(labels.source).name: sha256}, dict(self.refused),
                         self.duplicates + labels.duplicates + replaced, self.expired)

    def refuse(self, name: str, sha256: str, error: str) -> LabelPool:
        """The pool remembering a label file it could not use (read again only once changed)."""
        return LabelPool(self.frame, {**self.files, name: sha256}, {**self.refused, name: error},
                         self.duplicates, self.expired)

    def labels(self, id_column: str, target: str) -> pd.DataFrame:
        """The labels as a label file's frame (the id and target columns), for `join_labels`."""
        return pd.DataFrame({id_column: self.frame["id"], target: self.frame["target"]})

    def without(self, used: pd.Series) -> LabelPool:
        """The pool after a batch learnt from the labels of ids `used` (text)."""
        return replace(self, frame=self.frame[~self.frame["id"].isin(set(used))].reset_index(drop=True))

    def expire(self, now: int, max_wait: int, pending: set[str]) -> LabelPool:
        """Labels of no pending batch that arrived `max_wait` or more batches ago dropped and counted."""
        old = (now - self.frame["arrived"] >= max_wait) & ~self.frame["id"].isin(pending)
        if not old.any():
            return self
        return replace(self, frame=self.frame[~old].reset_index(drop=True),
                       expired=self.expired + int(old.sum()))

    def to_json(self) -> bytes:
        target = self.frame["target"].map(lambda v: v.item() if hasattr(v, "item") else v)
        return json.dumps({"files": self.files, "refused": self.refused, "duplicates": self.duplicates,
                           "expired": self.expired, "ids": self.frame["id"].tolist(),
                           "targets": target.tolist(), "arrived": self.frame["arrived"].tolist()}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> LabelPool:
        """The pool as `to_json` wrote it; ValueError when it is not."""
        raw = json.loads(data)
        columns = ("ids", "targets", "arrived")
        if not isinstance(raw, dict) or not all(isinstance(raw.get(k), list) for k in columns) \
                or len({len(raw[k]) for k in columns}) != 1:
            raise ValueError("expected {files, refused, ids, targets, arrived}, one target and arrival "
                             "per id")
        frame = pd.DataFrame({"id": pd.Series([str(i) for i in raw["ids"]], dtype=str),
                              "target": pd.Series(raw["targets"], dtype=object),
                              "arrived": pd.Series(raw["arrived"], dtype="int64")})
        return cls(frame, dict(raw.get("files", {})), dict(raw.get("refused", {})),
                   int(raw.get("duplicates", 0)), int(raw.get("expired", 0)))
