"""A state database whose role's password holds `#`, `?` and `/` (a real role on a throwaway PostgreSQL,
tests/postgres_server.py): `perennial status`, a wrong password, an invalid URL and flow runs failing on
the database never show it: not in the command's output, nor in Prefect's logs, the flow run's state
message or its events. (Every character, without a server: tests/unit/test_state_url.py.)"""

from __future__ import annotations

import json
import os
import subprocess
from urllib.parse import quote

import pytest

from conftest import make_batch, new_workspace, wait_for
from perennial.app.local_server import BIN
from postgres_server import server_bin, start_postgres

pytestmark = pytest.mark.skipif(server_bin() is None, reason="PostgreSQL server binaries not installed")

ROLE, SECRET = "hashy", "ab#c?d/e"
WRONG = "ab#c?d/X"
# libpq reads # and ? in the user info as they are; / must be percent-encoded (%2F).
ENCODED = SECRET.replace("/", "%2F")


def leaks(text: str) -> bool:
    """Whether `text` shows either password, as written, decoded, encoded, or a piece of it."""
    pieces = {p for pw in (SECRET, WRONG) for p in (pw, quote(pw, safe=""), pw.replace("/", "%2F"))}
    return any(p in text for p in pieces | {"ab#c", "c?d", "ab%23c", "c%3Fd"})


@pytest.fixture(scope="module")
def postgres_port():
    """A cluster with the role `hashy` (password SECRET) owning the database `hashy`."""
    import psycopg
    from psycopg import sql

    server = start_postgres()
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(ROLE),
                                                                          sql.Literal(SECRET)))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(ROLE),
                                                                       sql.Identifier(ROLE)))
        yield server.cluster.port
    finally:
        server.stop()


def url(port: int, password: str = ENCODED) -> str:
    return f"postgresql://{ROLE}:{password}@127.0.0.1:{port}/{ROLE}"


def perennial(ws, state_url: str, *args: str) -> subprocess.CompletedProcess:
    """The installed command, with PERENNIAL_STATE_URL set, its output and errors together."""
    env = {**os.environ, "PERENNIAL_STATE_URL": state_url}
    return subprocess.run([str(BIN / "perennial"), *args, "--config", str(ws.config_path)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)


def test_status_and_errors_never_show_a_password_holding_hash_question_mark_and_slash(
        postgres_port, tmp_path, monkeypatch):
    ws = new_workspace(tmp_path, monkeypatch)
    status = perennial(ws, url(postgres_port), "status")  # connects as hashy: the password is right
    assert status.returncode == 0, status.stdout
    assert f"in postgresql://{ROLE}:***@127.0.0.1:{postgres_port}/{ROLE} (table" in status.stdout
    wrong = perennial(ws, url(postgres_port, WRONG.replace("/", "%2F")), "status")
    assert wrong.returncode == 2 and f'password authentication failed for user "{ROLE}"' in wrong.stdout
    invalid = perennial(ws, url(postgres_port, SECRET), "status")  # the raw / ends libpq's user info
    assert invalid.returncode == 2 and "not a valid PostgreSQL URL" in invalid.stdout
    for done in (status, wrong, invalid):
        assert not leaks(done.stdout), done.stdout
    for done in (wrong, invalid):  # after `no champion yet (...)`: the error, on one line
        assert done.stdout.splitlines()[-1].startswith("perennial: error: "), done.stdout
        assert done.stdout.count("perennial: error: ") == 1 and "Traceback" not in done.stdout


@pytest.mark.parametrize("fault", ["a corrupt state file", "a wrong password"])
def test_a_flow_run_failing_on_the_database_never_shows_the_password(postgres_port, tmp_path, monkeypatch,
                                                                      capfd, prefect_server, fault):
    from perennial.adapters.postgres_state import state_store
    from perennial.core.config import Settings
    from perennial.pipeline.flows.continuous_training import continuous_training

    ws = new_workspace(tmp_path, monkeypatch)
    ws.add("b1.csv", make_batch(seed=1))
    if fault == "a corrupt state file":
        monkeypatch.setenv("PERENNIAL_STATE_URL", url(postgres_port))
        state_store(Settings(), ws.name).storage.write("schema.json", b"{not json")
    else:
        monkeypatch.setenv("PERENNIAL_STATE_URL", url(postgres_port, WRONG.replace("/", "%2F")))
    state = continuous_training(str(ws.config_path), return_state=True)
    assert state.is_failed()
    run_id = state.state_details.flow_run_id
    message, logs, events = prefect_records(run_id)
    assert "StateError" in message and f"postgresql://{ROLE}:***@127.0.0.1:{postgres_port}/{ROLE}" in message
    printed = capfd.readouterr()
    for text in (message, logs, events, printed.out + printed.err):
        assert not leaks(text), text


def prefect_records(run_id) -> tuple[str, str, str]:
    """The flow run's state message, its logs and its events (as JSON), as Prefect's API gives them
    (waiting for the run's error in its logs and for its Failed event)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.events.filters import EventAnyResourceFilter, EventFilter
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)
    of_run = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
    about_run = EventFilter(any_resource=EventAnyResourceFilter(id=[f"prefect.flow-run.{run_id}"]))
    with get_client(sync_client=True) as client:

        def logs() -> str | None:
            text = "\n".join(log.message for log in client.read_logs(of_run))
            return text if "StateError" in text else None

        def events() -> str | None:
            found = [e.model_dump(mode="json") for e in client.read_events(filter=about_run, limit=50).events]
            return json.dumps(found) if any(e["event"] == "prefect.flow-run.Failed" for e in found) else None

        message = client.read_flow_run(run_id).state.message or ""
        return (message, wait_for(logs, "the run's error in its logs", timeout=60),
                wait_for(events, "the run's Failed event", timeout=60))
