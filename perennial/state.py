"""The state folder of one model: processed-batch ledger, frozen schema, quarantine, drift reports,
and the lifelong-learning memory (replay rows, holdout windows, accuracy matrix)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import fields
from pathlib import Path

import pandas as pd

from perennial.lifelong import AccuracyMatrix, ReplayMemory
from perennial.types import CycleRecord, Schema

RELEASED = "released"  # ledger status of a rejected batch a user let back into the stream


def write_atomically(path: Path, data: bytes) -> None:
    """Write a file so readers see the old content or the new, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class StateStore:
    """Files Perennial keeps per model under the state folder."""

    def __init__(self, state_dir: Path, model_name: str) -> None:
        self.root = Path(state_dir) / model_name
        self.ledger_path = self.root / "ledger.jsonl"
        self.schema_path = self.root / "schema.json"
        self.quarantine_dir = self.root / "quarantine"
        self.reports_dir = self.root / "reports"
        self.replay_path = self.root / "replay.parquet"
        self.windows_dir = self.root / "windows"
        self.matrix_path = self.root / "accuracy_matrix.json"

    # -- ledger: append-only JSON lines; a batch is in it or not, and its latest line is its state
    # (a deployed monitor writes "adaptation requested", the adapt run later writes the outcome; a
    # user releases a rejected batch, a later run processes it again).
    def records(self) -> list[CycleRecord]:
        """The latest line of every batch, in the order batches were processed."""
        if not self.ledger_path.exists():
            return []
        known = {f.name for f in fields(CycleRecord)}
        latest: dict[str, CycleRecord] = {}
        for line in self.ledger_path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a crash mid-append: that batch is simply not done
            record = CycleRecord(**{k: v for k, v in data.items() if k in known})
            if record.batch in latest and latest[record.batch].status == RELEASED:
                del latest[record.batch]  # processed again after its release: it moves to the end
            latest[record.batch] = record
        return list(latest.values())

    def processed(self) -> set[str]:
        """Batches a run must not process again: all but those released since."""
        return {r.batch for r in self.records() if r.status != RELEASED}

    def record(self, batch_id: str) -> CycleRecord | None:
        """The latest ledger line of a batch, or None."""
        return next((r for r in self.records() if r.batch == batch_id), None)

    def release_reason(self, batch_id: str) -> str | None:
        """Why a user released the batch, when its latest line is that release; else None."""
        record = self.record(batch_id)
        return record.release_reason if record is not None and record.status == RELEASED else None

    def append(self, record: CycleRecord) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record.to_dict(), default=str) + "\n"
        with open(self.ledger_path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    # -- schema, frozen after the first accepted batch
    def schema(self) -> Schema | None:
        if not self.schema_path.exists():
            return None
        return Schema.from_dict(json.loads(self.schema_path.read_text()))

    def save_schema(self, schema: Schema) -> None:
        write_atomically(self.schema_path, json.dumps(schema.to_dict(), indent=2).encode())

    # -- quarantine: a copy of the rejected file beside its validation report
    def quarantine(self, batch_path: Path, report: dict) -> Path:
        target = self.quarantine_dir / batch_path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(batch_path, target)
        write_atomically(
            target.with_name(target.name + ".validation.json"),
            json.dumps(report, indent=2, default=str).encode(),
        )
        return target

    def report_dir(self, batch_id: str) -> Path:
        path = self.reports_dir / batch_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- lifelong learning: the replay memory of the concept in service, one holdout slice per
    # kept window, and the accuracy matrix over those windows
    def replay(self, capacity: int, target: str) -> ReplayMemory:
        if not self.replay_path.exists():
            return ReplayMemory.empty(capacity, target)
        return ReplayMemory.load(self.replay_path, capacity, target)

    def save_replay(self, memory: ReplayMemory) -> None:
        write_atomically(self.replay_path, _parquet(memory.frame))

    def matrix(self) -> AccuracyMatrix:
        if not self.matrix_path.exists():
            return AccuracyMatrix.empty()
        return AccuracyMatrix.from_dict(json.loads(self.matrix_path.read_text()))

    def save_matrix(self, matrix: AccuracyMatrix) -> None:
        write_atomically(self.matrix_path, json.dumps(matrix.to_dict(), indent=1).encode())

    def window(self, batch_id: str) -> pd.DataFrame:
        return pd.read_parquet(self.windows_dir / f"{batch_id}.parquet")

    def save_window(self, batch_id: str, rows: pd.DataFrame) -> None:
        write_atomically(self.windows_dir / f"{batch_id}.parquet", _parquet(rows))

    def drop_windows(self, batch_ids: list[str]) -> None:
        for batch_id in batch_ids:
            (self.windows_dir / f"{batch_id}.parquet").unlink(missing_ok=True)


def _parquet(frame: pd.DataFrame) -> bytes:
    import io

    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()
