"""The state folder of one model: processed-batch ledger, frozen schema, quarantine, drift reports,
and the lifelong-learning memory (replay rows, holdout windows, accuracy matrix).

Crash safety (README: what Perennial guarantees): one cycle of a model at a time (`lock`); a cycle
writes a `started` line with its decision before any side effect, and everything it changes here
in one `commit` with its ledger line (staged first, so a crash midway is finished by the next run,
never half-applied); reads name the file they could not use.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from perennial.core import failpoints
from perennial.core.files import write_atomically
from perennial.core.lifelong import AccuracyMatrix, ReplayMemory
from perennial.core.types import CycleRecord, Schema, StateError

RELEASED = "released"  # ledger status of a rejected batch a user let back into the stream
STARTED = "started"  # decided, side effects under way: the next run resumes the same decision
REQUESTED = "adaptation requested"  # a deployed monitor handed the batch to the `adapt` deployment

log = logging.getLogger(__name__)

# Locks this process holds, by path: a cycle takes the lock its caller (the CLI) already holds.
_held: dict[Path, list[int]] = {}


def batch_key(batch_id: str) -> str:
    """A batch's name as a short hex key: safe in file names and in MLflow search filters (a quote in
    `o'brien.csv` broke the filter, and every later batch with it)."""
    return hashlib.sha256(batch_id.encode()).hexdigest()[:32]


@dataclass
class StateChange:
    """What a cycle changes in the state folder besides its ledger line, committed with it."""

    schema: Schema | None = None
    matrix: AccuracyMatrix | None = None
    # The batch's holdout window (its rows), and windows dropped from the matrix.
    window: pd.DataFrame | None = None
    dropped: list[str] = field(default_factory=list)
    replay: ReplayMemory | None = None


class StateStore:
    """Files Perennial keeps per model under the state folder."""

    def __init__(self, state_dir: Path, model_name: str) -> None:
        self.model = model_name
        self.root = Path(state_dir) / model_name
        self.ledger_path = self.root / "ledger.jsonl"
        self.schema_path = self.root / "schema.json"
        self.quarantine_dir = self.root / "quarantine"
        self.reports_dir = self.root / "reports"
        self.replay_path = self.root / "replay.parquet"
        self.windows_dir = self.root / "windows"
        self.matrix_path = self.root / "accuracy_matrix.json"
        self.lock_path = self.root / "cycle.lock"
        self.staged_dir = self.root / "staged"
        self.failures_path = self.root / "failures.json"
        self._parsed: tuple[tuple[int, int, int], list[CycleRecord]] | None = None

    # -- one cycle at a time: an advisory lock the kernel releases when its holder dies (kill -9
    # included), so a dead holder never blocks the next run
    @contextmanager
    def lock(self, wait_seconds: float = 0.0, holder: str = "") -> Iterator[None]:
        """Hold the model's lock; wait up to `wait_seconds` for another holder, then StateError.
        On taking it, a commit a crashed cycle left staged is finished first."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.lock_path.resolve()
        if path in _held:  # taken again by the same process (the CLI, then the flow)
            _held[path][1] += 1
            try:
                yield
            finally:
                _held[path][1] -= 1
            return
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._acquire(fd, wait_seconds)
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "holder": holder,
                                 "since": datetime.now(UTC).isoformat(timespec="seconds")}).encode())
        _held[path] = [fd, 1]
        try:
            self.recover()
            yield
        finally:
            del _held[path]
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _acquire(self, fd: int, wait_seconds: float) -> None:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StateError(f"{self.model}: another cycle of this model is running "
                                     f"({self._holder()}; lock {self.lock_path}); it was not disturbed. "
                                     "Run again when it has finished.") from None
                time.sleep(0.2)

    def _holder(self) -> str:
        try:
            info = json.loads(self.lock_path.read_text() or "{}")
        except (OSError, ValueError):
            return "holder unknown"
        what = f"{info['holder']}, " if info.get("holder") else ""
        return f"{what}pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"

    # -- ledger: append-only JSON lines; a batch is in it or not, and its latest line is its state
    # (a deployed monitor writes "adaptation requested", the adapt run later writes the outcome; a
    # user releases a rejected batch, a later run processes it again).
    def _lines(self) -> list[CycleRecord]:
        """Every ledger line; a line torn by a crash mid-append (the last, unterminated) is dropped
        with a warning, any other unreadable line is a StateError naming the file and line."""
        try:
            stat = self.ledger_path.stat()
        except FileNotFoundError:
            return []
        # A cycle asks several times; parsed once per version of the file (every write changes its size).
        version = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if self._parsed is not None and self._parsed[0] == version:
            return [replace(r) for r in self._parsed[1]]  # copies: callers fill in records they get
        try:
            text = self.ledger_path.read_bytes().decode("utf-8", errors="replace")
        except OSError as exc:
            raise StateError(f"{self.ledger_path}: cannot read the ledger ({exc.strerror})") from None
        lines = text.split("\n")
        known = {f.name for f in fields(CycleRecord)}
        records = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                records.append(CycleRecord(**{k: v for k, v in data.items() if k in known}))
            except (ValueError, TypeError, AttributeError) as exc:
                if number == len(lines):  # after the last newline: an append cut short
                    log.warning("%s: dropped a torn last line (%d bytes) left by an interrupted write; "
                                "its batch is processed again", self.ledger_path, len(line.encode()))
                    continue
                raise StateError(f"{self.ledger_path}: line {number} is not a ledger record "
                                 f"({str(exc).splitlines()[0][:120]}); restore the file from a backup "
                                 "or remove that line (its batch is then processed again)") from None
        self._parsed = (version, records)
        return [replace(r) for r in records]

    def _latest(self) -> tuple[dict[str, CycleRecord], set[str]]:
        """The latest finished line of every batch, in processing order, and the batches whose
        latest line is a `started` intent."""
        latest: dict[str, CycleRecord] = {}
        started: set[str] = set()
        for record in self._lines():
            if record.status == STARTED:
                started.add(record.batch)
                continue
            started.discard(record.batch)
            if record.batch in latest and latest[record.batch].status == RELEASED:
                del latest[record.batch]  # processed again after its release: it moves to the end
            latest[record.batch] = record
        return latest, started

    def records(self) -> list[CycleRecord]:
        """The latest finished line of every batch, in the order batches were processed."""
        return list(self._latest()[0].values())

    def intent(self, batch_id: str) -> CycleRecord | None:
        """The decision a cycle recorded for the batch and did not finish (a crash), or None."""
        intent = None
        for record in self._lines():
            if record.batch == batch_id:
                intent = record if record.status == STARTED else None
        return intent

    def processed(self) -> set[str]:
        """Batches a run must not process again: all but those released since and those started
        and not finished (the next run resumes them)."""
        latest, started = self._latest()
        return {b for b, r in latest.items() if r.status != RELEASED} - started

    def attempt(self, batch_id: str) -> int:
        """How many times the batch was released: each release starts a new attempt at it."""
        return sum(1 for r in self._lines() if r.batch == batch_id and r.status == RELEASED)

    def record(self, batch_id: str) -> CycleRecord | None:
        """The latest finished ledger line of a batch, or None."""
        return self._latest()[0].get(batch_id)

    def release_reason(self, batch_id: str) -> str | None:
        """Why a user released the batch, when its latest line is that release; else None."""
        record = self.record(batch_id)
        return record.release_reason if record is not None and record.status == RELEASED else None

    def append(self, record: CycleRecord) -> None:
        """Add a line, after mending a tail an interrupted write left (so the new line stays whole)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._parsed = None  # besides its size, a write may leave the file's coarse mtime unchanged
        self._mend_tail()
        line = json.dumps(record.to_dict(), default=str) + "\n"
        with open(self.ledger_path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def _mend_tail(self) -> None:
        if not self.ledger_path.exists() or self.ledger_path.stat().st_size == 0:
            return
        with open(self.ledger_path, "rb+") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) == b"\n":
                return
            data = fh.seek(0) or fh.read()
            cut = data.rfind(b"\n") + 1
            try:
                json.loads(data[cut:])
                fh.write(b"\n")  # a whole line that only lacks its newline
            except ValueError:
                fh.truncate(cut)
            fh.flush()
            os.fsync(fh.fileno())

    # -- one commit per cycle: its state files and its ledger line, staged then applied
    def commit(self, record: CycleRecord, change: StateChange | None = None) -> None:
        """Write the cycle's state and its ledger line as one step: a crash before the staged copy is
        complete leaves the state as it was (the cycle is resumed); after, the next run applies it."""
        change = change or StateChange()
        key = batch_key(record.batch)
        staging = self.staged_dir / f".{key}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        files: dict[str, bytes] = {"record.json": json.dumps(record.to_dict(), default=str).encode()}
        if change.schema is not None:
            files["schema.json"] = _schema_json(change.schema)
        if change.matrix is not None:
            files["accuracy_matrix.json"] = json.dumps(change.matrix.to_dict(), indent=1).encode()
        if change.replay is not None:
            files["replay.parquet"] = _parquet(change.replay.frame)
        if change.window is not None:
            files["window.parquet"] = _parquet(change.window)
        files["dropped.json"] = json.dumps(change.dropped).encode()
        for name, data in files.items():
            write_atomically(staging / name, data)
        staged = self.staged_dir / key
        shutil.rmtree(staged, ignore_errors=True)
        os.replace(staging, staged)
        _fsync_dir(self.staged_dir)
        failpoints.reached("staged")
        self._apply(staged)

    def _apply(self, staged: Path) -> None:
        """Put a staged commit in place; doing it twice gives the same state (idempotent)."""
        record = CycleRecord(**json.loads((staged / "record.json").read_text()))
        targets = {"schema.json": self.schema_path, "accuracy_matrix.json": self.matrix_path,
                   "replay.parquet": self.replay_path,
                   "window.parquet": self.windows_dir / f"{record.batch}.parquet"}
        for name, target in targets.items():
            if (staged / name).exists():
                write_atomically(target, (staged / name).read_bytes())
        self.drop_windows(json.loads((staged / "dropped.json").read_text()))
        failpoints.reached("state-written")
        if self._latest_line(record.batch) != _plain(record):
            self.append(record)
        shutil.rmtree(staged)

    def _latest_line(self, batch_id: str) -> dict | None:
        lines = [r for r in self._lines() if r.batch == batch_id]
        return _plain(lines[-1]) if lines else None

    def recover(self) -> None:
        """Finish the commits a crashed cycle staged; drop the ones it did not finish staging."""
        if not self.staged_dir.exists():
            return
        for staged in sorted(self.staged_dir.iterdir()):
            if staged.name.startswith("."):
                shutil.rmtree(staged, ignore_errors=True)
                continue
            log.warning("%s: finishing the commit a crashed cycle left in %s", self.model, staged)
            self._apply(staged)

    # -- failures: a batch that makes its cycle fail the same way twice is quarantined
    def note_failure(self, batch_id: str, error: str) -> bool:
        """Record that the batch's cycle failed with `error`; True when it failed so before."""
        failures = self._read_json(self.failures_path, {})
        again = failures.get(batch_id) == error
        failures[batch_id] = error
        write_atomically(self.failures_path, json.dumps(failures, indent=1).encode())
        return again

    # -- schema, frozen after the first accepted batch
    def schema(self) -> Schema | None:
        data = self._read_json(self.schema_path, None)
        if data is None:
            return None
        try:
            return Schema.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self._corrupt(self.schema_path, f"not a schema: {exc!r}") from None

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
    def has_replay(self) -> bool:
        return self.replay_path.exists()

    def replay(self, capacity: int, target: str) -> ReplayMemory:
        if not self.replay_path.exists():
            return ReplayMemory.empty(capacity, target)
        try:
            return ReplayMemory.load(self.replay_path, capacity, target)
        except Exception as exc:  # pyarrow raises many types for a damaged file
            raise self._corrupt(self.replay_path, str(exc).splitlines()[0][:160] if str(exc) else
                                type(exc).__name__) from None

    def matrix(self) -> AccuracyMatrix:
        data = self._read_json(self.matrix_path, None)
        if data is None:
            return AccuracyMatrix.empty()
        try:
            return AccuracyMatrix.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self._corrupt(self.matrix_path, f"not an accuracy matrix: {exc!r}") from None

    def window(self, batch_id: str) -> pd.DataFrame:
        path = self.windows_dir / f"{batch_id}.parquet"
        try:
            return pd.read_parquet(path)
        except FileNotFoundError:
            raise self._corrupt(path, "missing, though the accuracy matrix keeps its window") from None
        except Exception as exc:
            raise self._corrupt(path, str(exc).splitlines()[0][:160] if str(exc) else
                                type(exc).__name__) from None

    def drop_windows(self, batch_ids: list[str]) -> None:
        for batch_id in batch_ids:
            (self.windows_dir / f"{batch_id}.parquet").unlink(missing_ok=True)

    def check(self) -> None:
        """Read every state file once, so a corrupt one stops a cycle before it writes anything."""
        self._lines()
        self.schema()
        matrix = self.matrix()
        for window in matrix.windows:
            if not (self.windows_dir / f"{window.batch}.parquet").exists():
                self.window(window.batch)
        if self.replay_path.exists():
            self._check_parquet(self.replay_path)

    def _check_parquet(self, path: Path) -> None:
        import pyarrow.parquet as pq

        try:
            pq.read_metadata(path)
        except Exception as exc:
            raise self._corrupt(path, str(exc).splitlines()[0][:160] if str(exc) else
                                type(exc).__name__) from None

    def _read_json(self, path: Path, default):
        try:
            text = path.read_text()
        except FileNotFoundError:
            return default
        except OSError as exc:
            raise self._corrupt(path, exc.strerror or type(exc).__name__) from None
        try:
            return json.loads(text)
        except ValueError as exc:
            raise self._corrupt(path, f"not valid JSON: {exc}") from None

    def _corrupt(self, path: Path, detail: str) -> StateError:
        return StateError(f"state file {path}: {detail}. Nothing was written; restore it from a backup, "
                          "or remove the model's state folder to start it afresh")


def _plain(record: CycleRecord) -> dict:
    """A record as its ledger line reads back."""
    return json.loads(json.dumps(record.to_dict(), default=str))


def _schema_json(schema: Schema) -> bytes:
    return json.dumps(schema.to_dict(), indent=2).encode()


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
