"""The state every worker shares: a model's ledger, small state files and lock in PostgreSQL, chosen by
PERENNIAL_STATE_URL (`postgresql://USER:PASSWORD@HOST:PORT/DATABASE`); unset, the local folder.

- Ledger lines are rows `perennial_ledger(model, seq, line)`, appended in a transaction that numbers
  them 1, 2, 3, ... per model under a transaction lock: none is lost, none interleaved, none torn.
- State files are rows `perennial_files(model, name, data)` (the same bytes as the folder's files),
  replaced in a transaction.
- A cycle's commit is one transaction: its files, the windows it drops and its ledger line.
- The model's lock is a session-level `pg_advisory_lock` on a hash of its name, held by a connection
  of its own for as long as the lock: PostgreSQL frees it when that connection ends, so a holder
  killed with kill -9 (or a host gone, after the TCP keepalives below) never blocks the next run.
  While the lock is held, this process reads and writes through that connection: a lost connection
  fails the next write (nothing is written without the lock) instead of writing beside a new holder.
- Quarantined batch copies and drift reports stay in the worker's local state folder (reports are
  also logged to MLflow).

psycopg is imported when the database is first used. Messages name the URL rebuilt from what libpq reads
in it, without the password (whatever its characters); a URL libpq cannot read shows its scheme only.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import Any
from urllib.parse import quote, quote_plus, unquote

from perennial.core import failpoints
from perennial.core.config import Settings
from perennial.core.state import LEDGER, LOCK, StateStore, poll
from perennial.core.types import StateError

SCHEMES = ("postgresql", "postgres")
TABLE_NAMES = ("perennial_ledger", "perennial_files", "perennial_locks")
TABLES = """
CREATE TABLE IF NOT EXISTS perennial_ledger (
    model text NOT NULL, seq bigint NOT NULL, line text NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (model, seq));
CREATE TABLE IF NOT EXISTS perennial_files (
    model text NOT NULL, name text NOT NULL, data bytea NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (model, name));
CREATE TABLE IF NOT EXISTS perennial_locks (model text PRIMARY KEY, holder text NOT NULL);
"""
# The lock's connection: TCP keepalives both ways, so a host that vanishes (no FIN) frees the lock in
# about 30 s; never closed for idling (a DBA's idle_session_timeout would free the lock).
LOCK_OPTIONS: dict[str, Any] = {
    "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 4,
    "options": "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=4 "
               "-c idle_session_timeout=0"}
CONNECT_TIMEOUT = 10  # seconds: an unreachable host fails a run in this time, not in minutes
UNREAD = "(not shown: it cannot be parsed and may hold a password)"
MISREAD = "(not shown: an @ after its user info may be part of a password)"
ENCODE = " (percent-encode a space, %, / or @ in the password: %20, %25, %2F, %40)"
_SCHEME = re.compile(r"[A-Za-z][\w+.-]*")
TODO = ("check PERENNIAL_STATE_URL (postgresql://USER:PASSWORD@HOST:PORT/DATABASE) and that the server "
        "is up, or unset it to keep the state in the local folder PERENNIAL_STATE_DIR")


def state_store(settings: Settings, model: str) -> StateStore:
    """A model's state: in PostgreSQL when PERENNIAL_STATE_URL is set, else in the local folder."""
    url = settings.state_url.get_secret_value().strip() if settings.state_url else ""
    if not url:
        return StateStore(settings.state_dir, model)
    storage = PostgresStorage(url, model)
    return StateStore(settings.state_dir, model, storage=storage)


def redact(url: str) -> str:
    """The URL rebuilt from what libpq reads in it, without the password (`postgresql://USER:***@HOST:PORT/
    DATABASE`); a URL it cannot read, or may misread, shows its scheme only."""
    url = url.strip()
    scheme, sep, _ = url.partition("://")
    shown = f"{scheme}://" if sep and _SCHEME.fullmatch(scheme) else ""
    parts = _read(url)
    if parts is None or _misread(url):
        return shown + (MISREAD if parts else UNREAD)
    user = quote(parts.get("user", ""), safe="")
    login = f"{user}:***@" if "password" in parts else f"{user}@" if user else ""
    hosts = (parts.get("host") or parts.get("hostaddr") or "").split(",")
    ports = parts["port"].split(",") if parts.get("port") else []
    ports = ports * len(hosts) if len(ports) == 1 else ports  # one port serves every host
    netloc = ",".join(_host(h) + (f":{quote(p, safe='')}" if p else "")
                      for h, p in zip_longest(hosts, ports, fillvalue=""))
    database = f"/{quote(parts['dbname'], safe='')}" if parts.get("dbname") else ""
    return f"{shown}{login}{netloc}{database}"


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else quote(host, safe="")


def _libpq_form(url: str) -> str | None:
    """The URL as libpq takes it (a SQLAlchemy-style `postgresql+driver://` loses its driver); None if
    it is not a PostgreSQL URL."""
    scheme, sep, rest = url.strip().partition("://")
    base = scheme.split("+", 1)[0]
    if not sep or not rest or base.lower() not in SCHEMES:
        return None
    return f"{base}://{rest}"


def _read(url: str) -> dict[str, str] | None:
    """What libpq reads in the URL (user, password, host, port, dbname, ...); None when it cannot."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    form = _libpq_form(url)
    if form is None:
        return None
    try:
        return {key: str(value) for key, value in conninfo_to_dict(form).items()}
    except psycopg.Error:
        return None


def _misread(url: str) -> bool:
    """Whether libpq may have read part of a password as the host, port or database: its user info ends
    at the first @ (unless a / comes first), so a raw @ after that may be a password's (`u:p@ss@h`)."""
    rest = url.strip().partition("://")[2]
    ends = [i for i in (rest.find("@"), rest.find("/")) if i >= 0]
    end = min(ends, default=-1)
    return "@" in (rest[end + 1:] if end >= 0 and rest[end] == "@" else rest)


def advisory_key(kind: str, model: str) -> int:
    """A 64-bit advisory lock key of the model's `kind` of lock."""
    digest = hashlib.sha256(f"perennial.{kind}:{model}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclass
class Session:
    """A connection and the mutex that keeps one thread's statements (or transaction) whole on it."""

    conn: Any
    holds_lock: bool = False
    mutex: threading.RLock = field(default_factory=threading.RLock)


# Connections of this process: the one holding each model's lock (by lock id), and one per database
# for reads and writes outside a lock.
_locked: dict[Hashable, Session] = {}
_plain: dict[str, Session] = {}
_guard = threading.Lock()
_tables_ready: set[str] = set()


class PostgresStorage:
    """A model's state as rows of PostgreSQL tables (see the module's docstring)."""

    def __init__(self, url: str, model: str) -> None:
        self.model = model
        self.safe_url = redact(url)
        self.url = _checked(url, self.safe_url)
        self.lock_key = advisory_key("cycle", model)
        # The database libpq connects to, whatever the URL's spelling or password (never shown).
        parts = _read(self.url) or {}
        database = tuple(parts.get(k) for k in ("host", "hostaddr", "port", "dbname", "user"))
        self.lock_id = ("postgresql", database, model)
        self.fresh_start = (f"delete the model's rows (model = '{model}') from the tables perennial_ledger "
                            "and perennial_files to start it afresh")

    def where(self, name: str) -> str:
        if name == LEDGER:
            return f"ledger of model '{self.model}' in {self.safe_url} (table perennial_ledger)"
        if name == LOCK:
            return f"advisory lock {self.lock_key} in {self.safe_url}"
        return f"{name} of model '{self.model}' in {self.safe_url} (table perennial_files)"

    # -- files
    def read(self, name: str) -> bytes | None:
        with self._session("read " + name) as conn:
            row = conn.execute("SELECT data FROM perennial_files WHERE model = %s AND name = %s",
                               (self.model, name)).fetchone()
        return None if row is None else bytes(row[0])

    def exists(self, name: str) -> bool:
        with self._session("look up " + name) as conn:
            return conn.execute("SELECT 1 FROM perennial_files WHERE model = %s AND name = %s",
                                (self.model, name)).fetchone() is not None

    def write(self, name: str, data: bytes) -> None:
        with self._session("write " + name) as conn:
            _upsert(conn, self.model, {name: data})

    # -- ledger
    def ledger_version(self) -> Hashable | None:
        with self._session("read the ledger") as conn:
            count, last, xmin = conn.execute(
                "SELECT count(*), max(seq), max(xmin::text::bigint) FROM perennial_ledger WHERE model = %s",
                (self.model,)).fetchone()
        return None if count == 0 else (count, last, xmin)  # xmin: a row edited in place

    def ledger(self) -> tuple[list[tuple[str, str]], bool]:
        with self._session("read the ledger") as conn:
            rows = conn.execute("SELECT seq, line FROM perennial_ledger WHERE model = %s ORDER BY seq",
                                (self.model,)).fetchall()
        return [(f"row seq={seq}", line) for seq, line in rows], False  # rows are whole: none torn

    def append(self, line: str) -> None:
        with self._session("append to the ledger") as conn, conn.transaction():
            self._append(conn, line)

    def _append(self, conn: Any, line: str) -> None:
        # Numbered under a transaction lock of the model's ledger: in the order appends commit.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key("ledger", self.model),))
        conn.execute("INSERT INTO perennial_ledger (model, seq, line) "
                     "SELECT %s, coalesce(max(seq), 0) + 1, %s FROM perennial_ledger WHERE model = %s",
                     (self.model, line, self.model))

    def commit(self, key: str, line: str, files: dict[str, bytes], removed: list[str]) -> None:
        """One transaction: a crash anywhere in it (the failpoints included) leaves nothing of it."""
        with self._session("commit the cycle") as conn, conn.transaction():
            _upsert(conn, self.model, files)
            if removed:
                conn.execute("DELETE FROM perennial_files WHERE model = %s AND name = ANY(%s)",
                             (self.model, removed))
            failpoints.reached("staged")
            failpoints.reached("state-written")
            self._append(conn, line)

    def recover(self) -> None:
        """Nothing to finish: a commit is one transaction, which PostgreSQL rolls back if cut short."""

    # -- the lock
    def acquire(self, wait_seconds: float, holder: dict) -> Session | None:
        import psycopg

        conn = self._connect(LOCK_OPTIONS)
        try:
            taken = poll(lambda: conn.execute("SELECT pg_try_advisory_lock(%s)",
                                              (self.lock_key,)).fetchone()[0] or None, wait_seconds)
            if taken is None:
                conn.close()
                return None
            conn.execute("INSERT INTO perennial_locks (model, holder) VALUES (%s, %s) ON CONFLICT (model) "
                         "DO UPDATE SET holder = excluded.holder",
                         (self.model, json.dumps({**holder, "backend": conn.info.backend_pid})))
        except BaseException as exc:
            conn.close()
            if isinstance(exc, psycopg.Error):
                raise self._failed("take the model's lock", exc) from None
            raise
        session = Session(conn, holds_lock=True)
        with _guard:
            _locked[self.lock_id] = session
        return session

    def release(self, handle: object) -> None:
        with _guard:
            _locked.pop(self.lock_id, None)
        handle.conn.close()  # ends the session, and with it its advisory lock

    def holder(self) -> dict | None:
        """The holder its row names, when that row's connection still holds the lock."""
        high, low = (self.lock_key >> 32) & 0xFFFFFFFF, self.lock_key & 0xFFFFFFFF
        with self._session("look up the lock's holder") as conn:
            row = conn.execute(
                "SELECT l.holder FROM perennial_locks l JOIN pg_locks k ON k.locktype = 'advisory' "
                "AND k.granted AND k.classid = %s::bigint::oid AND k.objid = %s::bigint::oid "
                "AND k.objsubid = 1 "
                "AND k.pid = (l.holder::jsonb ->> 'backend')::int WHERE l.model = %s",
                (high, low, self.model)).fetchone()
        return json.loads(row[0]) if row else None

    # -- connections
    @contextmanager
    def _session(self, doing: str) -> Iterator[Any]:
        """The connection of the lock this process holds on the model, else this process's plain
        one; a failure is a StateError naming the database (never its password)."""
        import psycopg

        session = _locked.get(self.lock_id) or self._plain_session()
        with session.mutex:
            try:
                yield session.conn
            except psycopg.Error as exc:
                lost = session.conn.closed or session.conn.broken
                if lost:
                    self._forget(session)
                raise self._failed(doing, exc, lost and session.holds_lock) from None

    def _plain_session(self) -> Session:
        with _guard:
            session = _plain.get(self.url)
            if session is None or session.conn.closed:
                session = _plain[self.url] = Session(self._connect({}))
            return session

    def _forget(self, session: Session) -> None:
        with _guard:
            if _plain.get(self.url) is session:
                del _plain[self.url]

    def _connect(self, options: dict[str, Any]) -> Any:
        import psycopg

        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                                   application_name=f"perennial {self.model}"[:63], **options)
        except psycopg.Error as exc:
            raise StateError(f"cannot connect to the state database {self.safe_url} "
                             f"({self._why(exc)}); {TODO}") from None
        try:
            self._create_tables(conn)
        except psycopg.Error as exc:
            conn.close()
            raise self._failed("create Perennial's tables", exc) from None
        return conn

    def _create_tables(self, conn: Any) -> None:
        """Perennial's tables, unless they exist (then no CREATE privilege is needed: a DBA may have
        made them from TABLES and granted SELECT, INSERT, UPDATE, DELETE)."""
        if self.url in _tables_ready:
            return
        exist = "SELECT " + " AND ".join(f"to_regclass('{t}') IS NOT NULL" for t in TABLE_NAMES)
        if not conn.execute(exist).fetchone()[0]:
            with conn.transaction():  # one creator at a time: concurrent CREATE ... IF NOT EXISTS clash
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key("tables", ""),))
                conn.execute(TABLES)
        _tables_ready.add(self.url)

    def _failed(self, doing: str, exc: Exception, lost_lock: bool = False) -> StateError:
        if lost_lock:
            return StateError(f"{self.model}: lost the connection to the state database {self.safe_url} "
                              f"that held the model's lock ({self._why(exc)}); nothing more was written "
                              "and the lock is free again: run again to resume")
        return StateError(f"state database {self.safe_url}: could not {doing} for model '{self.model}' "
                          f"({self._why(exc)}); {TODO}")

    def _why(self, exc: Exception) -> str:
        return scrub((str(exc).strip().splitlines() or [type(exc).__name__])[0][:200], self.url)


def _upsert(conn: Any, model: str, files: dict[str, bytes]) -> None:
    if files:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO perennial_files (model, name, data) VALUES (%s, %s, %s) ON CONFLICT "
                            "(model, name) DO UPDATE SET data = excluded.data, written_at = now()",
                            [(model, name, data) for name, data in files.items()])


def _checked(url: str, safe_url: str) -> str:
    """The URL libpq takes (a SQLAlchemy-style `postgresql+driver://` loses its driver); a URL that is
    not PostgreSQL's is a StateError saying what to set."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    form = _libpq_form(url)
    if form is None:
        raise StateError(f"PERENNIAL_STATE_URL={safe_url}: not a PostgreSQL URL; set it to "
                         "postgresql://USER:PASSWORD@HOST:PORT/DATABASE, or unset it to keep the state in "
                         "the local folder PERENNIAL_STATE_DIR")
    try:
        port = str(conninfo_to_dict(form).get("port") or "5432")
    except psycopg.Error as exc:
        why = scrub((str(exc).strip().splitlines() or ["invalid"])[0][:200], form)
        raise StateError(f"PERENNIAL_STATE_URL={safe_url}: not a valid PostgreSQL URL ({why}); expected "
                         f"postgresql://USER:PASSWORD@HOST:PORT/DATABASE{ENCODE}") from None
    if not all(p.isdigit() for p in port.split(",")):
        # A port libpq read from a password (`u:a/b@h`) is not shown.
        what = "its port" if _misread(form) else f"port {port!r}"
        raise StateError(f"PERENNIAL_STATE_URL={safe_url}: not a valid PostgreSQL URL ({what} is not a "
                         f"number); expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE{ENCODE}")
    return form


def scrub(text: str, url: str) -> str:
    """`text` (a driver's message, which may quote the URL or part of it) without the URL's password, as
    written, decoded or percent-encoded; when libpq cannot read the URL (or may misread it), without
    anything quoted either."""
    url = url.strip()
    if url:
        text = text.replace(url, redact(url))
    if _read(url) is None or _misread(url):
        # libpq quotes the offending part of a URL it rejects, or a host it read from a password.
        text = re.sub(r"[\"'].*[\"']", '"(not shown)"', text, flags=re.DOTALL)
    for secret in sorted(_secrets(url), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _secrets(url: str) -> set[str]:
    """Every text that may be the URL's password, as written, decoded and percent-encoded: libpq's, and
    what a naive reading takes (after the first : of the user info that ends at the last @, and a
    `password=` parameter's value)."""
    url = url.strip()
    found = set(re.findall(r"(?i)password=([^&\s]*)", url))
    parts = _read(url)
    if parts and parts.get("password"):
        found.add(parts["password"])
    rest = url.partition("://")[2] or url
    if "@" in rest:
        found.add(rest.rpartition("@")[0].partition(":")[2])
    forms = {form for raw in found for form in (raw, unquote(raw), quote(raw, safe=""),
                                                  quote(unquote(raw), safe=""), quote_plus(unquote(raw)))}
    return {form for form in forms if form}
