"""The state of one model: processed-batch ledger, frozen schema, quarantine, drift reports, and the
lifelong-learning memory (replay rows, holdout windows, accuracy matrix).

Crash safety (docs/guarantees.md): one cycle of a model at a time (`lock`); a cycle
writes a `started` line with its decision before any side effect, and everything it changes here
in one `commit` with its ledger line (never half-applied: a crash midway leaves the state as it was,
or is finished by the next run); reads name the file they could not use.

`StateStore` holds that logic once; where the state lives is its `Storage`: `FolderStorage`, files in
the local state folder (the default), or rows in PostgreSQL that every worker shares
(`perennial.adapters.postgres_state`, chosen by PERENNIAL_STATE_URL). Quarantined batch copies and
drift reports are files for people and always go to the local folder.
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
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pandas as pd

from perennial.core import failpoints
from perennial.core.config import ConfigError
from perennial.core.files import file_sha256, place_atomically, write_atomically
from perennial.core.labels import LabelPool
from perennial.core.lifelong import AccuracyMatrix, ReplayMemory
from perennial.core.types import BatchError, CycleRecord, Schema, StateError

RELEASED = "released"  # ledger status of a rejected batch a user let back into the stream
STARTED = "started"  # decided, side effects under way: the next run resumes the same decision
REQUESTED = "adaptation requested"  # a deployed monitor handed the batch to the `adapt` deployment
AWAITING = "awaiting labels"  # served without labels: learnt from when they arrive (`labels.source`)
EXPIRED = "labels expired"  # its labels did not reach `labels.min_coverage` within `labels.max_wait_batches`

# The names of a model's state, as files of its folder (or rows of the database).
LEDGER, SCHEMA, MATRIX = "ledger.jsonl", "schema.json", "accuracy_matrix.json"
REPLAY, FAILURES, LOCK = "replay.parquet", "failures.json", "cycle.lock"
SOURCE = "source.json"  # the batch source the state belongs to (two configs, one model name)
LABELS = "labels.json"  # labels received and not learnt from yet, and the label files read
LABELLED = "labelled"  # local folder: a batch whose labels arrived, as learnt from (its labelled rows)

log = logging.getLogger(__name__)
T = TypeVar("T")

# Locks this process holds, by the storage's lock id: a cycle takes the lock its caller (the CLI)
# already holds.
_held: dict[Hashable, list[Any]] = {}


def batch_key(batch_id: str) -> str:
    """A batch's name as a short hex key: safe in file names and in MLflow search filters (a quote in
    `o'brien.csv` broke the filter, and every later batch with it)."""
    return hashlib.sha256(batch_id.encode()).hexdigest()[:32]


def window_name(batch_id: str) -> str:
    """The holdout window of a batch."""
    return f"windows/{batch_id}.parquet"


def poll(attempt: Callable[[], T | None], wait_seconds: float, every: float = 0.2) -> T | None:
    """`attempt()` until it gives something, for up to `wait_seconds` (once when 0); else None."""
    deadline = time.monotonic() + wait_seconds
    while (got := attempt()) is None:
        if time.monotonic() >= deadline:
            return None
        time.sleep(every)
    return got


@dataclass
class StateChange:
    """What a cycle changes in the state besides its ledger line, committed with it."""

    schema: Schema | None = None
    matrix: AccuracyMatrix | None = None
    # The batch's holdout window (its rows), and windows dropped from the matrix.
    window: pd.DataFrame | None = None
    dropped: list[str] = field(default_factory=list)
    replay: ReplayMemory | None = None
    # The label pool once a batch whose labels arrived learnt from them (its ids taken out).
    labels: LabelPool | None = None


class Storage(Protocol):
    """Where a model's state lives: the primitives `StateStore` is written on. Names are the file
    names of the state folder (`schema.json`, `windows/<batch>.parquet`, ...)."""

    lock_id: Hashable  # the same for every store of this model's state (the lock is reentrant per process)
    fresh_start: str  # what a user does to start the model's state afresh (for messages)

    def where(self, name: str) -> str:
        """How a message names `name`: a path, or a row of a table."""

    def read(self, name: str) -> bytes | None:
        """The content of `name`; None when there is none."""

    def exists(self, name: str) -> bool: ...

    def write(self, name: str, data: bytes) -> None:
        """Replace `name` whole: a reader sees the old content or the new."""

    def ledger_version(self) -> Hashable | None:
        """Changes whenever the ledger does; None while it has no line."""

    def ledger(self) -> tuple[list[tuple[str, str]], bool]:
        """Every ledger line in order, as (how a message names it, its text); and True when the last
        may be an append cut short (a file's text after its last newline)."""

    def append(self, line: str) -> None:
        """Add a ledger line (JSON, no newline) whole, after every other."""

    def commit(self, key: str, line: str, files: dict[str, bytes], removed: list[str]) -> None:
        """Replace `files`, remove `removed` and append `line` as one step: all or nothing, or finished
        by the next `recover`. `key` names the commit (the batch's key)."""

    def recover(self) -> None:
        """Finish or drop what a crashed commit left; called by each new holder of the lock."""

    def acquire(self, wait_seconds: float, holder: dict) -> object | None:
        """Take the model's lock, waiting up to `wait_seconds` for another holder (then None); it is
        freed when its holder dies. `holder` says who holds it (pid, host, holder, since)."""

    def release(self, handle: object) -> None: ...

    def holder(self) -> dict | None:
        """Who holds the lock, as given to `acquire`, when known."""


class FolderStorage:
    """A model's state as files of its folder: each replaced atomically, the ledger appended, a
    commit staged then applied, and the lock an advisory `flock` the kernel frees with its holder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.lock_path = self.root / LOCK
        self.staged_dir = self.root / "staged"
        self.lock_id = self.lock_path.resolve()
        self.fresh_start = "remove the model's state folder to start it afresh"

    def where(self, name: str) -> str:
        return str(self.root / name)

    def read(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            return None

    def exists(self, name: str) -> bool:
        return (self.root / name).exists()

    def write(self, name: str, data: bytes) -> None:
        write_atomically(self.root / name, data)

    # -- ledger: JSON lines appended to one file
    def ledger_version(self) -> Hashable | None:
        try:
            stat = (self.root / LEDGER).stat()
        except FileNotFoundError:
            return None
        return (stat.st_ino, stat.st_size, stat.st_mtime_ns)  # every write changes its size

    def ledger(self) -> tuple[list[tuple[str, str]], bool]:
        text = (self.root / LEDGER).read_bytes().decode("utf-8", errors="replace")
        return [(f"line {number}", line) for number, line in enumerate(text.split("\n"), start=1)], True

    def append(self, line: str) -> None:
        """Add a line, after mending a tail an interrupted write left (so the new line stays whole)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._mend_tail()
        with open(self.root / LEDGER, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _mend_tail(self) -> None:
        path = self.root / LEDGER
        if not path.exists() or path.stat().st_size == 0:
            return
        with open(path, "rb+") as fh:
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

    def _last_line(self) -> Any:
        if self.ledger_version() is None:
            return None
        lines = [text for _, text in self.ledger()[0] if text.strip()]
        try:
            return json.loads(lines[-1]) if lines else None
        except ValueError:
            return None  # torn: the append mends it

    # -- one commit: staged as a folder (complete, or a `.partial` one dropped), then applied
    def commit(self, key: str, line: str, files: dict[str, bytes], removed: list[str]) -> None:
        staging = self.staged_dir / f".{key}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name, data in files.items():
            write_atomically(staging / "files" / name, data)
        manifest = {"line": line, "files": list(files), "removed": removed}
        write_atomically(staging / "commit.json", json.dumps(manifest).encode())
        staged = self.staged_dir / key
        shutil.rmtree(staged, ignore_errors=True)
        os.replace(staging, staged)
        _fsync_dir(self.staged_dir)
        failpoints.reached("staged")
        self._apply(staged)

    def _apply(self, staged: Path) -> None:
        """Put a staged commit in place; doing it twice gives the same state (idempotent: every append
        happens under the lock, whose next holder recovers first, so an applied line is the last)."""
        line, files, removed = _staged_commit(staged)
        for name, source in files.items():
            self.write(name, source.read_bytes())
        for name in removed:
            (self.root / name).unlink(missing_ok=True)
        failpoints.reached("state-written")
        if self._last_line() != json.loads(line):
            self.append(line)
        shutil.rmtree(staged)

    def recover(self) -> None:
        """Finish the commits a crashed cycle staged; drop the ones it did not finish staging."""
        if not self.staged_dir.exists():
            return
        for staged in sorted(self.staged_dir.iterdir()):
            if staged.name.startswith("."):
                shutil.rmtree(staged, ignore_errors=True)
                continue
            log.warning("%s: finishing the commit a crashed cycle left in %s", self.root.name, staged)
            self._apply(staged)

    # -- the lock: an advisory lock the kernel releases when its holder dies (kill -9 included)
    def acquire(self, wait_seconds: float, holder: dict) -> int | None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            taken = poll(lambda: _try_flock(fd), wait_seconds)
        except BaseException:
            os.close(fd)
            raise
        if taken is None:
            os.close(fd)
            return None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder).encode())
        return fd

    def release(self, handle: object) -> None:
        fcntl.flock(handle, fcntl.LOCK_UN)
        os.close(handle)

    def holder(self) -> dict | None:
        try:
            return json.loads(self.lock_path.read_text() or "{}") or None
        except (OSError, ValueError):
            return None


def _try_flock(fd: int) -> bool | None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return None


def _staged_commit(staged: Path) -> tuple[str, dict[str, Path], list[str]]:
    """A staged commit's ledger line, files (name -> staged copy) and removed names; also one staged
    before the storages (record.json, window.parquet, dropped.json), so an upgrade finishes it."""
    if (staged / "commit.json").exists():
        manifest = json.loads((staged / "commit.json").read_text())
        return manifest["line"], {n: staged / "files" / n for n in manifest["files"]}, manifest["removed"]
    record = CycleRecord(**json.loads((staged / "record.json").read_text()))
    targets = {"schema.json": SCHEMA, "accuracy_matrix.json": MATRIX, "replay.parquet": REPLAY,
               "window.parquet": window_name(record.batch)}
    files = {target: staged / name for name, target in targets.items() if (staged / name).exists()}
    removed = [window_name(b) for b in json.loads((staged / "dropped.json").read_text())]
    return _line(record), files, removed


class StateStore:
    """What Perennial keeps per model, in `storage` (by default the files of `<state_dir>/<model>/`);
    quarantine and reports always in that local folder."""

    def __init__(self, state_dir: Path, model_name: str, storage: Storage | None = None) -> None:
        self.model = model_name
        self.root = Path(state_dir) / model_name
        self.storage: Storage = storage or FolderStorage(self.root)
        # The local folder: quarantined copies and reports; the state files when it is the storage.
        self.ledger_path = self.root / LEDGER
        self.schema_path = self.root / SCHEMA
        self.quarantine_dir = self.root / "quarantine"
        self.reports_dir = self.root / "reports"
        self.replay_path = self.root / REPLAY
        self.windows_dir = self.root / "windows"
        self.matrix_path = self.root / MATRIX
        self.lock_path = self.root / LOCK
        self.staged_dir = self.root / "staged"
        self.failures_path = self.root / FAILURES
        self._parsed: tuple[Hashable, list[CycleRecord]] | None = None

    @property
    def ledger_location(self) -> str:
        """Where the ledger is, for messages."""
        return self.storage.where(LEDGER)

    # -- one cycle at a time: a lock freed when its holder dies (kill -9 included), so a dead holder
    # never blocks the next run
    @contextmanager
    def lock(self, wait_seconds: float = 0.0, holder: str = "") -> Iterator[None]:
        """Hold the model's lock; wait up to `wait_seconds` for another holder, then StateError.
        On taking it, a commit a crashed cycle left unfinished is finished first."""
        key = self.storage.lock_id
        if key in _held:  # taken again by the same process (the CLI, then the flow)
            _held[key][1] += 1
            try:
                yield
            finally:
                _held[key][1] -= 1
            return
        handle = self.storage.acquire(wait_seconds, {
            "pid": os.getpid(), "host": socket.gethostname(), "holder": holder,
            "since": datetime.now(UTC).isoformat(timespec="seconds")})
        if handle is None:
            raise StateError(f"{self.model}: another cycle of this model is running ({self._holder()}; "
                             f"lock {self.storage.where(LOCK)}); it was not disturbed. "
                             "Run again when it has finished.")
        _held[key] = [handle, 1]
        try:
            self.recover()
            yield
        finally:
            del _held[key]
            self.storage.release(handle)

    def _holder(self) -> str:
        info = self.storage.holder()
        if not info:
            return "holder unknown"
        what = f"{info['holder']}, " if info.get("holder") else ""
        return f"{what}pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"

    # -- ledger: append-only JSON lines; a batch is in it or not, and its latest line is its state
    # (a deployed monitor writes "adaptation requested", the adapt run later writes the outcome; a
    # user releases a rejected batch, a later run processes it again).
    def _lines(self) -> list[CycleRecord]:
        """Every ledger line; a line torn by a crash mid-append (the last, unterminated) is dropped
        with a warning, any other unreadable line is a StateError naming the ledger and line."""
        version = self.storage.ledger_version()
        if version is None:
            return []
        # A cycle asks several times; parsed once per version of the ledger.
        if self._parsed is not None and self._parsed[0] == version:
            return [replace(r) for r in self._parsed[1]]  # copies: callers fill in records they get
        try:
            lines, torn_tail = self.storage.ledger()
        except OSError as exc:
            raise StateError(f"{self.ledger_location}: cannot read the ledger ({exc.strerror})") from None
        records = [record for index, (name, text) in enumerate(lines)
                   if (record := self._parse(name, text, torn_tail and index == len(lines) - 1))]
        self._parsed = (version, records)
        return [replace(r) for r in records]

    def _parse(self, name: str, text: str, may_be_torn: bool) -> CycleRecord | None:
        if not text.strip():
            return None
        known = {f.name for f in fields(CycleRecord)}
        try:
            return CycleRecord(**{k: v for k, v in json.loads(text).items() if k in known})
        except (ValueError, TypeError, AttributeError) as exc:
            if may_be_torn:  # after the last newline: an append cut short
                log.warning("%s: dropped a torn last line (%d bytes) left by an interrupted write; "
                            "its batch is processed again", self.ledger_location, len(text.encode()))
                return None
            raise StateError(f"{self.ledger_location}: {name} is not a ledger record "
                             f"({str(exc).splitlines()[0][:120]}); restore the ledger from a backup "
                             f"or remove {name} (its batch is then processed again)") from None

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
            if record.batch in latest and latest[record.batch].status in (RELEASED, AWAITING):
                # processed again after its release, or once its labels arrived: it moves to the end
                del latest[record.batch]
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
        """Batches a run must not process again as new: all but those released since and those started
        and not finished (the next run resumes them); a batch awaiting its labels is resumed by the run
        that takes labels (`pending`), never read again as a new batch."""
        latest, started = self._latest()
        awaiting = {b for b, r in latest.items() if r.status == AWAITING}
        return {b for b, r in latest.items() if r.status != RELEASED} - (started - awaiting)

    def pending(self) -> list[CycleRecord]:
        """The lines of batches served without labels and waiting for them, oldest first."""
        return [r for r in self.records() if r.status == AWAITING]

    def served(self, batch_id: str) -> CycleRecord | None:
        """The line of a batch served without labels that still waits for them (its cycle on labels may
        have started and not finished), else None."""
        record = self.record(batch_id)
        return record if record is not None and record.status == AWAITING else None

    def newer_batches(self, batch_id: str) -> int:
        """Batches that arrived after `batch_id` (first in the ledger after it): how long a pending
        batch has waited. A batch learnt from once its labels came, or released, is no newer arrival."""
        order = list(dict.fromkeys(r.batch for r in self._lines()))
        return len(order) - 1 - order.index(batch_id) if batch_id in order else 0

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
        """Add a ledger line."""
        self._parsed = None  # besides its size, a write may leave the file's coarse mtime unchanged
        self.storage.append(_line(record))

    # -- one commit per cycle: its state files and its ledger line, as one step
    def commit(self, record: CycleRecord, change: StateChange | None = None) -> None:
        """Write the cycle's state and its ledger line as one step: a crash before it is complete
        leaves the state as it was (the cycle is resumed); after, the next run finishes it."""
        change = change or StateChange()
        files: dict[str, bytes] = {}
        if change.schema is not None:
            files[SCHEMA] = _schema_json(change.schema)
        if change.matrix is not None:
            files[MATRIX] = json.dumps(change.matrix.to_dict(), indent=1).encode()
        if change.replay is not None:
            files[REPLAY] = _parquet(change.replay.frame)
        if change.window is not None:
            files[window_name(record.batch)] = _parquet(change.window)
        if change.labels is not None:
            files[LABELS] = change.labels.to_json()
        self._parsed = None
        self.storage.commit(batch_key(record.batch), _line(record), files,
                            [window_name(b) for b in change.dropped])

    def recover(self) -> None:
        """Finish the commits a crashed cycle left; drop the ones it did not finish."""
        self._parsed = None
        self.storage.recover()

    # -- failures: a batch that makes its cycle fail the same way twice is quarantined
    def note_failure(self, batch_id: str, error: str) -> bool:
        """Record that the batch's cycle failed with `error`; True when it failed so before."""
        failures = self._read_json(FAILURES, {})
        again = failures.get(batch_id) == error
        failures[batch_id] = error
        self.storage.write(FAILURES, json.dumps(failures, indent=1).encode())
        return again

    # -- source: the batches this state learnt from; a config of the same name reading others is refused
    def check_source(self, source: str, config_file: Path | None, claim: bool = False) -> None:
        """ConfigError when the state belongs to another batch source than `source`; with `claim`, a
        state that records none (new, or written by an older release) is given this one."""
        recorded = self._read_json(SOURCE, None)
        if recorded is None:
            if claim:
                claimed = {"source": source, "config": str(config_file)}
                self.storage.write(SOURCE, json.dumps(claimed).encode())
            return
        if not isinstance(recorded, dict) or not isinstance(recorded.get("source"), str):
            raise self._corrupt(SOURCE, "expected {\"source\": ..., \"config\": ...}")
        if recorded["source"] != source:
            raise ConfigError(
                f"{config_file or 'config'}: model '{self.model}' reads batches from {source}, but its state "
                f"belongs to the batches in {recorded['source']} (config {recorded.get('config')}); give "
                f"this config another `name`, or, if those batches moved, remove "
                f"{self.storage.where(SOURCE)} to adopt the new place")

    # -- schema, frozen after the first accepted batch
    def schema(self) -> Schema | None:
        data = self._read_json(SCHEMA, None)
        if data is None:
            return None
        try:
            return Schema.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self._corrupt(SCHEMA, f"not a schema: {exc!r}") from None

    # -- quarantine: a copy of the rejected file beside its validation report (local folder)
    def quarantine(self, batch_path: Path, report: dict) -> Path:
        target = self.quarantine_dir / batch_path.name
        with open(batch_path, "rb") as src:  # whole or not at all (a full disk leaves no partial copy)
            place_atomically(target, lambda out: shutil.copyfileobj(src, out, 1 << 20))
        write_atomically(
            target.with_name(target.name + ".validation.json"),
            json.dumps(report, indent=2, default=str).encode(),
        )
        return target

    def judged_file(self, path: Path) -> Path:
        """The file to learn a batch from: for a released one, the rejected bytes its release recorded
        (its quarantined copy, or the file while it is unchanged), so an edit after the release is never
        learnt; for one served without labels whose labels arrived, its labelled rows (`labelled_path`);
        BatchError when neither holds them."""
        record = self.record(path.name)
        if record is not None and record.status == AWAITING and self.labelled_path(path.name).is_file():
            return self.labelled_path(path.name)
        if record is None or record.status != RELEASED or record.released_sha256 is None:
            return path  # not released, or released before the hash was recorded
        copy = self.quarantine_dir / path.name
        for candidate in (copy, path):  # the copy first: it is what was judged
            if candidate.is_file() and file_sha256(candidate) == record.released_sha256:
                return candidate
        raise BatchError(f"batch {path.name}: changed since it was released, and its quarantined copy {copy} "
                         "is gone or changed too (no file holds the released bytes); a changed file is a new "
                         "batch: ingest it under a new name")

    def labelled_path(self, batch_id: str) -> Path:
        """Where a batch served without labels is kept with its labelled rows, once enough arrived (a
        local file like the quarantine: retrains read earlier batches from files)."""
        return self.root / LABELLED / batch_id

    # -- labels received and not learnt from yet
    def label_pool(self) -> LabelPool:
        data = self._read(LABELS)
        if data is None:
            return LabelPool.empty()
        try:
            return LabelPool.from_json(data)
        except (ValueError, TypeError, KeyError) as exc:
            raise self._corrupt(LABELS, f"not a label pool: {_first_line(exc)}") from None

    def write_label_pool(self, pool: LabelPool) -> None:
        """Replace the pool whole (new label files read, expired labels dropped)."""
        self.storage.write(LABELS, pool.to_json())

    @property
    def report_page(self) -> Path:
        """The model's report page (`perennial report`, rewritten after each cycle); local, like the
        drift reports."""
        return self.root / "report.html"

    def report_dir(self, batch_id: str) -> Path:
        path = self.reports_dir / batch_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- lifelong learning: the replay memory of the concept in service, one holdout slice per
    # kept window, and the accuracy matrix over those windows
    def has_replay(self) -> bool:
        return self.storage.exists(REPLAY)

    def replay(self, capacity: int, target: str, quantiles: int = 0) -> ReplayMemory:
        data = self._read(REPLAY)
        if data is None:
            return ReplayMemory.empty(capacity, target, quantiles)
        try:
            return ReplayMemory.of(pd.read_parquet(io.BytesIO(data)), capacity, target, quantiles)
        except Exception as exc:  # pyarrow raises many types for a damaged file
            raise self._corrupt(REPLAY, _first_line(exc)) from None

    def matrix(self) -> AccuracyMatrix:
        data = self._read_json(MATRIX, None)
        if data is None:
            return AccuracyMatrix.empty()
        try:
            return AccuracyMatrix.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self._corrupt(MATRIX, f"not an accuracy matrix: {exc!r}") from None

    def window(self, batch_id: str) -> pd.DataFrame:
        name = window_name(batch_id)
        data = self._read(name)
        if data is None:
            raise self._corrupt(name, "missing, though the accuracy matrix keeps its window")
        try:
            return pd.read_parquet(io.BytesIO(data))
        except Exception as exc:
            raise self._corrupt(name, _first_line(exc)) from None

    def check(self) -> None:
        """Read every state file once, so a corrupt one stops a cycle before it writes anything."""
        self._lines()
        self.schema()
        matrix = self.matrix()
        for window in matrix.windows:
            if not self.storage.exists(window_name(window.batch)):
                self.window(window.batch)
        data = self._read(REPLAY)
        if data is not None:
            self._check_parquet(REPLAY, data)
        self.label_pool()

    def _check_parquet(self, name: str, data: bytes) -> None:
        import pyarrow.parquet as pq

        try:
            pq.read_metadata(io.BytesIO(data))
        except Exception as exc:
            raise self._corrupt(name, _first_line(exc)) from None

    def _read(self, name: str) -> bytes | None:
        try:
            return self.storage.read(name)
        except OSError as exc:
            raise self._corrupt(name, exc.strerror or type(exc).__name__) from None

    def _read_json(self, name: str, default):
        data = self._read(name)
        if data is None:
            return default
        try:
            return json.loads(data)
        except ValueError as exc:
            raise self._corrupt(name, f"not valid JSON: {exc}") from None

    def _corrupt(self, name: str, detail: str) -> StateError:
        return StateError(f"state file {self.storage.where(name)}: {detail}. Nothing was written; restore it "
                          f"from a backup, or {self.storage.fresh_start}")


def _line(record: CycleRecord) -> str:
    """A record as its ledger line (JSON, without the newline)."""
    return json.dumps(record.to_dict(), default=str)


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__


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
