"""The state every worker shares, on a real PostgreSQL 15 (a throwaway cluster, tests/postgres_server.py):
the state store's behaviours against the local folder and the database alike (ledger, damaged data
named, commits whole or not at all, the lock held across processes and freed by kill -9), then two
"worker hosts" with separate empty folders sharing one state URL, the first killed mid-commit."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from conftest import make_batch, new_workspace
from perennial.adapters.postgres_state import advisory_key, state_store
from perennial.app.local_server import BIN
from perennial.core.config import Settings
from perennial.core.lifelong import KEY, AccuracyMatrix, ReplayMemory, Step, Window
from perennial.core.state import RELEASED, STARTED, StateChange, StateStore
from perennial.core.types import CycleRecord, Schema, StateError
from postgres_server import PASSWORD, server_bin, start_postgres

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(server_bin() is None, reason="PostgreSQL server binaries not installed")


@pytest.fixture(scope="session")
def postgres():
    server = start_postgres()
    yield server
    server.stop()


@dataclass
class Backend:
    """One model's state, in a local folder or in the database, as a worker opens it."""

    kind: str
    state_dir: Path
    model: str
    url: str | None = None

    def store(self, state_dir: Path | None = None) -> StateStore:
        """The store a worker with local folder `state_dir` opens (the database's is shared)."""
        return state_store(Settings(state_dir=state_dir or self.state_dir, state_url=self.url), self.model)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PERENNIAL_STATE_URL"}
        env.update(PERENNIAL_STATE_DIR=str(self.state_dir), PYTHONPATH=str(ROOT))
        if self.url:
            env["PERENNIAL_STATE_URL"] = self.url
        return env

    def sql(self, query: str, *args):
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(query, args)
            return cur.fetchall() if cur.description else None

    def put(self, name: str, data: bytes) -> None:
        """Raw bytes as a state file, as damage or a hand edit would leave them."""
        if self.url is None:
            path = self.state_dir / self.model / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            self.sql("INSERT INTO perennial_files (model, name, data) VALUES (%s, %s, %s) ON CONFLICT "
                     "(model, name) DO UPDATE SET data = excluded.data", self.model, name, data)

    def ledger_text(self) -> list[str]:
        if self.url is None:
            return (self.state_dir / self.model / "ledger.jsonl").read_text().splitlines()
        return [r[0] for r in self.sql("SELECT line FROM perennial_ledger WHERE model = %s ORDER BY seq",
                                       self.model)]


@pytest.fixture(params=["folder", "postgres"])
def backend(request, tmp_path) -> Backend:
    if request.param == "folder":
        return Backend("folder", tmp_path / "state", "m")
    server = request.getfixturevalue("postgres")
    return Backend("postgres", tmp_path / "state", f"m-{uuid.uuid4().hex[:8]}", server.url)


def line(batch: str, **fields) -> CycleRecord:
    defaults = {"rows": 10, "validation": "passed", "drift_share": None, "champion_accuracy_before": None,
                "decision": "noop", "reason": "stable", "champion_version_after": 1}
    return CycleRecord(batch=batch, **{**defaults, **fields})


def change() -> StateChange:
    matrix = AccuracyMatrix([Window("a.csv", 1)], [Step("a.csv", 1, 1, {"a.csv": 0.9})])
    memory = ReplayMemory.empty(100, "label").add(pd.DataFrame({"x": [1.0, 2.0], "label": ["p", "q"]}), 0)
    return StateChange(schema=Schema({"x": "numeric"}, "label", ("p", "q")), matrix=matrix,
                       window=pd.DataFrame({"x": [3.0], "label": ["p"]}), replay=memory)


def child(backend: Backend, code: str, *args: str, **env: str) -> subprocess.Popen:
    """Python in its own process (another worker), with the backend's store as `store`."""
    prelude = ("import sys, time\nfrom perennial.adapters.postgres_state import state_store\n"
               "from perennial.core.config import Settings\n"
               f"store = state_store(Settings(), {backend.model!r})\n")
    return subprocess.Popen([sys.executable, "-c", prelude + code, *args], env={**backend.env(), **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


# -- the store's behaviours, on both storages ------------------------------------------------------


def test_lines_read_back_in_order_and_another_worker_sees_them(backend, tmp_path):
    store = backend.store()
    store.append(line("a.csv"))
    store.append(line("b.csv", status=STARTED, decision="retrain", run_id="r1"))
    assert store.processed() == {"a.csv"} and store.intent("b.csv").run_id == "r1"
    store.append(line("b.csv", decision="retrain"))
    store.append(line("a.csv", status=RELEASED, release_reason="new normal"))
    # Another worker: its own empty local folder; the database's state is the same one.
    other = backend.store(tmp_path / "host-b") if backend.url else backend.store()
    assert [r.batch for r in other.records()] == ["a.csv", "b.csv"]
    assert other.processed() == {"b.csv"} and other.release_reason("a.csv") == "new normal"
    assert other.attempt("a.csv") == 1 and other.intent("b.csv") is None
    assert [json.loads(x)["batch"] for x in backend.ledger_text()] == ["a.csv", "b.csv", "b.csv", "a.csv"]


def test_a_damaged_ledger_line_is_named(backend):
    store = backend.store()
    store.append(line("a.csv"))
    store.append(line("b.csv"))
    if backend.url is None:
        text = store.ledger_path.read_text().splitlines()
        store.ledger_path.write_text(f"{text[0]}\n{{not json\n{text[1]}\n")
        name = "line 2"
    else:
        backend.sql("UPDATE perennial_ledger SET line = '{not json' WHERE model = %s AND seq = 2",
                    backend.model)
        name = "row seq=2"
    message = f"{store.ledger_location}: {name} is not a ledger record"
    with pytest.raises(StateError, match="^" + re.escape(message)):
        store.records()
    with pytest.raises(StateError, match="^" + re.escape(message)):
        backend.store().check()  # a fresh reader (no cached parse) stops too


@pytest.mark.parametrize("name, data, detail", [
    ("schema.json", b'{"features": ', "not valid JSON"),
    ("accuracy_matrix.json", b"[1, 2]", "not an accuracy matrix"),
    ("replay.parquet", b"PAR1 not really", ""),
])
def test_a_damaged_state_file_is_named_and_stops_the_check(backend, name, data, detail):
    store = backend.store()
    backend.put(name, data)
    where = store.storage.where(name)
    assert where == str(store.root / name) if backend.url is None else f"{name} of model" in where
    with pytest.raises(StateError, match=f"^state file {re.escape(where)}: {detail}"):
        store.check()
    assert PASSWORD not in where


def test_a_commit_writes_state_and_ledger_line_together(backend, tmp_path):
    backend.store().commit(line("a.csv"), change())
    store = backend.store(tmp_path / "host-b") if backend.url else backend.store()
    assert store.schema().classes == ("p", "q") and store.matrix().windows[0].batch == "a.csv"
    assert len(store.replay(100, "label")) == 2 and len(store.window("a.csv")) == 1
    assert [r.batch for r in store.records()] == ["a.csv"]
    store.commit(line("b.csv"), StateChange(dropped=["a.csv"]))
    assert not store.storage.exists("windows/a.csv.parquet") and len(backend.ledger_text()) == 2


def test_a_commit_cut_short_leaves_the_state_whole(backend, monkeypatch):
    """Cut short after its files: the folder finishes it when the lock is next taken; the database
    rolled the whole transaction back (the cycle is then resumed). Never half of it."""
    store = backend.store()
    monkeypatch.setenv("PERENNIAL_FAILPOINT", "state-written:raise")
    with pytest.raises(RuntimeError, match="failpoint state-written"):
        store.commit(line("a.csv"), change())
    monkeypatch.delenv("PERENNIAL_FAILPOINT")
    for _ in range(2):  # recovering twice changes nothing more
        with store.lock():
            pass
    finished = backend.url is None
    assert (store.schema() is not None) is finished and store.matrix().windows == ([Window("a.csv", 1)]
                                                                                  if finished else [])
    assert [r.batch for r in store.records()] == (["a.csv"] if finished else [])
    assert len(backend.ledger_text()) == int(finished)


def test_a_commit_killed_with_sigkill_is_all_or_nothing(backend):
    proc = child(backend, (
        "import pandas as pd\nfrom perennial.core.state import StateChange\n"
        "from perennial.core.types import CycleRecord, Schema\n"
        "record = CycleRecord(batch='a.csv', rows=1, validation='passed', drift_share=None, "
        "champion_accuracy_before=None, decision='noop', reason='x', champion_version_after=1)\n"
        "with store.lock():\n"
        "    store.commit(record, StateChange(schema=Schema({'x': 'numeric'}, 'y', ('p',)), "
        "window=pd.DataFrame({'x': [1.0]})))\n"), PERENNIAL_FAILPOINT="staged")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, out
    store = backend.store()
    with store.lock():  # free again, and a staged commit (folder) is finished
        pass
    done = [r.batch for r in store.records()]
    assert done == (["a.csv"] if backend.url is None else [])
    assert (store.schema() is not None) == bool(done) == store.storage.exists("windows/a.csv.parquet")


def test_a_held_lock_is_refused_with_its_holder_and_freed_when_the_holder_is_killed(backend):
    holder = child(backend, "with store.lock(holder='perennial run'):\n"
                            "    print('held', flush=True); time.sleep(600)\n")
    store = backend.store()
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = re.escape(store.storage.where("cycle.lock"))
        held = (rf"^{store.model}: another cycle of this model is running \(perennial run, pid {holder.pid} "
                rf"on .* since .*; lock {lock}\)")
        with pytest.raises(StateError, match=held), store.lock():
            pass
        started = time.monotonic()
        with pytest.raises(StateError), store.lock(wait_seconds=1.0):
            pass
        assert time.monotonic() - started >= 1.0  # it waited before giving up
        holder.kill()  # kill -9: the kernel (folder) or PostgreSQL (its session ended) frees the lock
        holder.wait()
        with store.lock(wait_seconds=10):  # PostgreSQL notices the closed connection within moments
            assert store.storage.holder()["pid"] == os.getpid()
    finally:
        holder.kill()


# -- the database only -----------------------------------------------------------------------------


@pytest.fixture
def shared(postgres, tmp_path) -> Backend:
    return Backend("postgres", tmp_path / "state", f"m-{uuid.uuid4().hex[:8]}", postgres.url)


def test_appends_from_two_workers_at_once_are_neither_lost_nor_interleaved(shared):
    code = ("from perennial.core.types import CycleRecord\n"
            "for i in range(60):\n"
            "    store.append(CycleRecord(batch=f'{sys.argv[1]}{i}.csv', rows=i, validation='passed', "
            "drift_share=None, champion_accuracy_before=None, decision='noop', reason='x', "
            "champion_version_after=1))\n")
    workers = [child(shared, code, w) for w in "xy"]
    for worker in workers:
        out, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0, out
    seqs = [r[0] for r in shared.sql("SELECT seq FROM perennial_ledger WHERE model = %s ORDER BY seq",
                                     shared.model)]
    assert seqs == list(range(1, 121))  # numbered in commit order, none lost
    batches = [json.loads(x)["batch"] for x in shared.ledger_text()]
    for w in "xy":  # each worker's lines whole and in its own order
        assert [b for b in batches if b.startswith(w)] == [f"{w}{i}.csv" for i in range(60)]


def test_a_lost_lock_connection_fails_the_next_write_and_writes_nothing(shared):
    store = shared.store()
    store.append(line("a.csv"))
    with store.lock(holder="perennial run"):
        backend_pid = store.storage.holder()["backend"]
        shared.sql("SELECT pg_terminate_backend(%s)", backend_pid)  # a network cut, a DBA, a failover
        with pytest.raises(StateError, match=rf"^{store.model}: lost the connection to the state database "
                                             r"postgresql://perennial:\*\*\*@127\.0\.0\.1:\d+/perennial "
                                             "that held the model's lock"):
            store.commit(line("b.csv"), change())
    assert [r.batch for r in shared.store().records()] == ["a.csv"]
    assert shared.store().schema() is None
    with store.lock():  # a new holder, a new connection
        store.append(line("b.csv"))
    assert len(shared.ledger_text()) == 2


def test_the_lock_is_reentrant_in_one_process_and_its_reads_see_its_writes(shared):
    store, again = shared.store(), shared.store()
    with store.lock(holder="perennial run"), again.lock(holder="monitor"):
        again.commit(line("a.csv"), change())
        assert [r.batch for r in store.records()] == ["a.csv"]
        assert store.storage.holder()["holder"] == "perennial run"
    key = advisory_key("cycle", shared.model)
    assert shared.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                      "AND classid = %s::bigint::oid AND objid = %s::bigint::oid",
                      (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF) == [(0,)]  # released


# -- two worker hosts, one state URL: killed mid-cycle, the other one finishes ---------------------


def test_two_workers_sharing_one_state_url_process_every_batch_once_after_a_kill(
        postgres, tmp_path, monkeypatch, prefect_server):
    from prefect.settings import get_current_settings

    ws = new_workspace(tmp_path, monkeypatch)  # the batches, the config and one SQLite MLflow store
    ws.add("b1.csv", make_batch(seed=1))
    ws.add("b2.csv", make_batch(seed=2, flip=True))  # a concept change: a retrain replaces v1
    shared = Backend("postgres", tmp_path / "host-a", ws.name, postgres.url)

    def worker(host: str, failpoint: str | None = None) -> tuple[int, str]:
        env = {**shared.env(), "PERENNIAL_STATE_DIR": str(tmp_path / host),
               "PREFECT_API_URL": str(get_current_settings().api.url)}
        if failpoint:
            env["PERENNIAL_FAILPOINT"] = failpoint
        proc = subprocess.run([str(BIN / "perennial"), "run", "--config", str(ws.config_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
        return proc.returncode, proc.stdout

    # Worker A is killed inside b2's commit transaction, after registering and promoting v2.
    code, out_a = worker("host-a", failpoint="staged@2")
    assert code == -signal.SIGKILL, out_a
    assert shared.store().intent("b2.csv").decision == "retrain"
    code, out_b = worker("host-b")  # worker B, an empty local folder: resumes b2's decision
    assert code == 0, out_b
    assert "b2.csv" in out_b, out_b
    monkeypatch.setenv("PERENNIAL_STATE_URL", postgres.url)
    assert ws.run() == []  # and a third worker finds nothing left to do

    finished = Counter(json.loads(x)["batch"] for x in shared.ledger_text()
                       if json.loads(x)["status"] != "started")
    assert finished == Counter(["b1.csv", "b2.csv"])
    assert Counter(v.get("batch") for v in ws.versions()) == Counter(["b1.csv", "b2.csv"])
    assert ws.champion() == shared.store().record("b2.csv").model_version == 2
    from mlflow import MlflowClient

    client = MlflowClient(ws.settings.tracking_uri())
    runs = client.search_runs([client.get_experiment_by_name(ws.name).experiment_id])
    assert Counter(r.data.tags["perennial.batch"] for r in runs) == Counter(["b1.csv", "b2.csv"])
    memory = shared.store().replay(100_000, "label").frame
    assert len(memory) and not memory.duplicated(subset=[KEY]).any()
    assert_no_password(out_a + out_b)
    for host in ("host-a", "host-b"):  # the shared state is not in the workers' folders
        local = tmp_path / host / ws.name
        assert not [n for n in ("ledger.jsonl", "schema.json", "accuracy_matrix.json", "replay.parquet",
                                "windows", "staged") if (local / n).exists()]


def assert_no_password(output: str) -> None:
    """Not in the workers' output, nor in the flow runs' parameters Prefect keeps (its UI shows them)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        parameters = json.dumps([run.parameters for run in client.read_flow_runs()], default=str)
    assert "state_url" in parameters  # the settings are a parameter of the runs
    assert PASSWORD not in parameters and PASSWORD not in output
