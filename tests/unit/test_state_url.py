"""PERENNIAL_STATE_URL without a server: unset keeps the local folder; a wrong or unreachable URL is
one error naming the URL without its password and what to set; the password shows nowhere."""

from __future__ import annotations

import socket

import pytest

from conftest import new_workspace
from perennial.adapters.postgres_state import PostgresStorage, redact, state_store
from perennial.app import cli
from perennial.core.config import Settings
from perennial.core.state import FolderStorage
from perennial.core.types import StateError

SECRET = "pw-Secret-9"


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("url", [None, "", "  "])
def test_without_a_url_the_state_stays_in_the_local_folder(tmp_path, url):
    store = state_store(Settings(state_dir=tmp_path, state_url=url), "m")
    assert isinstance(store.storage, FolderStorage)
    assert store.ledger_location == str(tmp_path / "m" / "ledger.jsonl")


def test_the_settings_never_show_the_password(monkeypatch):
    monkeypatch.setenv("PERENNIAL_STATE_URL", f"postgresql://u:{SECRET}@db.example:5432/perennial")
    settings = Settings()
    assert settings.state_url.get_secret_value().endswith("@db.example:5432/perennial")
    assert SECRET not in repr(settings) + str(settings) + settings.model_dump_json()


@pytest.mark.parametrize("url, shown", [
    (f"postgresql://u:{SECRET}@h:5432/db", "postgresql://u:***@h:5432/db"),
    (f"postgres://u:{SECRET}@with@at@h/db", "postgres://u:***@h/db"),
    (f"postgresql://u@h/db?sslmode=require&password={SECRET}", "postgresql://u@h/db?sslmode=require&password=***"),
    (f"u:{SECRET}@h/db", "u:***@h/db"),
    ("postgresql://h/db", "postgresql://h/db"),
])
def test_redact_drops_the_password_wherever_it_is(url, shown):
    assert redact(url) == shown


@pytest.mark.parametrize("url, says", [
    (f"mysql://u:{SECRET}@h/db", "PERENNIAL_STATE_URL=mysql://u:***@h/db: not a PostgreSQL URL; set it to "
                                 "postgresql://USER:PASSWORD@HOST:PORT/DATABASE"),
    (f"u:{SECRET}@h/db", "PERENNIAL_STATE_URL=u:***@h/db: not a PostgreSQL URL"),
    (f"postgresql://u:{SECRET}@h:port/db", "PERENNIAL_STATE_URL=postgresql://u:***@h:port/db: not a valid "
                                           "PostgreSQL URL (port 'port' is not a number)"),
    (f"postgresql://u:{SECRET}@h/db?sslmod=require",
     "PERENNIAL_STATE_URL=postgresql://u:***@h/db?sslmod=require: not a valid PostgreSQL URL (invalid URI"),
    (f"postgresql://u:{SECRET} x@h/db", "PERENNIAL_STATE_URL=postgresql://u:***@h/db: not a valid PostgreSQL "
                                        "URL (unexpected spaces found in \"***\""),
])
def test_a_wrong_url_says_what_to_set_without_the_password(tmp_path, url, says):
    with pytest.raises(StateError) as error:
        state_store(Settings(state_dir=tmp_path, state_url=url), "m")
    assert str(error.value).startswith(says) and SECRET not in str(error.value)


def test_a_sqlalchemy_style_url_is_taken_as_postgresql():
    storage = PostgresStorage(f"postgresql+psycopg://u:{SECRET}@h:5432/db", "m")
    assert storage.url == f"postgresql://u:{SECRET}@h:5432/db"
    assert storage.where("schema.json") == ("schema.json of model 'm' in "
                                            "postgresql+psycopg://u:***@h:5432/db (table perennial_files)")


def test_an_unreachable_database_is_one_line_naming_it_and_what_to_set(tmp_path, monkeypatch, capsys):
    port = closed_port()
    ws = new_workspace(tmp_path, monkeypatch)
    monkeypatch.setenv("PERENNIAL_STATE_URL", f"postgresql://perennial:{SECRET}@127.0.0.1:{port}/perennial")
    with pytest.raises(StateError) as error:
        state_store(Settings(), ws.name).records()
    message = str(error.value)
    assert message.startswith(f"cannot connect to the state database postgresql://perennial:***@127.0.0.1:{port}"
                              "/perennial (")
    assert "check PERENNIAL_STATE_URL" in message and SECRET not in message
    # Through the command: one line, exit 2, no traceback, no password.
    assert cli.main(["release", "b1.csv", "--config", str(ws.config_path), "--reason", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("perennial: error: cannot connect to the state database postgresql://perennial:***@")
    assert err.count("\n") == 1 and SECRET not in err
