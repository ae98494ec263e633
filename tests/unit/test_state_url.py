"""PERENNIAL_STATE_URL without a server: unset keeps the local folder; a wrong or unreachable URL is
one error naming the URL without its password and what to set; the password shows nowhere, whatever its
characters (the URL shown is rebuilt from what libpq reads in it; one it cannot read shows its scheme only).
(Against a real PostgreSQL and in a flow run: tests/deployed/test_postgres_password.py.)"""

from __future__ import annotations

import socket
from urllib.parse import quote, quote_plus

import pytest

from conftest import new_workspace
from perennial.adapters.postgres_state import MISREAD, UNREAD, PostgresStorage, redact, scrub, state_store
from perennial.app import cli
from perennial.core.config import Settings
from perennial.core.state import LEDGER, LOCK, FolderStorage
from perennial.core.types import StateError

SECRET = "pw-Secret-9"
# Characters that end a URL's user info for some parser, or must be percent-encoded, or quote a value.
SPECIAL = ["#", "?", "/", "@", "%", "&", " ", ":", "'", '"', "=", "\\", "+", ",", "[", "]", "%2F", "%zz"]


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
    (f"postgresql://hashy:ab#{SECRET}@127.0.0.1:5432/perennial", "postgresql://hashy:***@127.0.0.1:5432/perennial"),
    (f"postgresql://u:ab?c{SECRET}%2Fd@h/db", "postgresql://u:***@h/db"),
    (f"postgres://u:{SECRET}@with@at@h/db", f"postgres://{MISREAD}"),  # libpq's host: the password's end
    (f"postgresql://u@h/db?sslmode=require&password={SECRET}", "postgresql://u:***@h/db"),
    (f"u:{SECRET}@h/db", UNREAD),
    (f"postgresql://u:{SECRET} x@h/db", f"postgresql://{UNREAD}"),
    ("postgresql://h/db", "postgresql://h/db"),
    ("postgresql://me%40corp@h1:5432,h2/db", "postgresql://me%40corp@h1:5432,h2/db"),
])
def test_redact_drops_the_password_wherever_it_is(url, shown):
    assert redact(url) == shown


@pytest.mark.parametrize("url, says", [
    (f"mysql://u:{SECRET}@h/db", f"PERENNIAL_STATE_URL=mysql://{UNREAD}: not a PostgreSQL URL; set it to "
                                 "postgresql://USER:PASSWORD@HOST:PORT/DATABASE"),
    (f"u:{SECRET}@h/db", f"PERENNIAL_STATE_URL={UNREAD}: not a PostgreSQL URL"),
    (f"postgresql://u:{SECRET}@h:port/db", "PERENNIAL_STATE_URL=postgresql://u:***@h:port/db: not a valid "
                                           "PostgreSQL URL (port 'port' is not a number)"),
    (f"postgresql://u:{SECRET}@h/db?sslmod=require",
     f"PERENNIAL_STATE_URL=postgresql://{UNREAD}: not a valid PostgreSQL URL (invalid URI query parameter: "
     '"(not shown)"'),
    (f"postgresql://u:{SECRET} x@h/db", f"PERENNIAL_STATE_URL=postgresql://{UNREAD}: not a valid PostgreSQL "
                                        "URL (unexpected spaces found in \"(not shown)\""),
    # libpq's port would be the password's start
    (f"postgresql://u:ab/{SECRET}@h/db", f"PERENNIAL_STATE_URL=postgresql://{MISREAD}: not a valid "
                                         "PostgreSQL URL (its port is not a number)"),
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


def password(char: str) -> str:
    return f"Left{char}Right9"


def leaks(text: str) -> bool:
    """Whether `text` shows the password or a piece of it."""
    return "Left" in text or "Right9" in text


def urls(secret: str) -> list[str]:
    """The URLs a user may write with this password: as it is, percent-encoded, as a parameter."""
    encoded = quote(secret, safe="")
    return [f"postgresql://u:{secret}@h:5432/db", f"postgresql://u:{encoded}@h:5432/db",
            f"postgresql+psycopg://u:{secret}@h:5432/db", f"postgresql://u@h:5432/db?password={encoded}",
            f"postgresql://u@h:5432/db?password={secret}"]


@pytest.mark.parametrize("char", SPECIAL)
def test_redact_never_shows_a_password_whatever_its_characters(char):
    for url in urls(password(char)):
        scheme = url.partition("://")[0]
        assert redact(url) in (f"{scheme}://u:***@h:5432/db", f"{scheme}://{UNREAD}", f"{scheme}://{MISREAD}")
    # Percent-encoded, as libpq expects it, the URL is shown whole but for the password.
    assert redact(urls(password(char))[1]) == "postgresql://u:***@h:5432/db"


@pytest.mark.parametrize("char", SPECIAL)
def test_scrub_removes_the_password_as_written_decoded_and_encoded(char):
    secret = password(char)
    for url in urls(secret):
        message = (f'connection to server at "h", port 5432 failed: FATAL: password "{secret}" '
                   f"{quote(secret, safe='')} {quote(secret)} {quote_plus(secret)} in {url} for user \"u\"")
        scrubbed = scrub(message, url)
        assert not leaks(scrubbed), (url, scrubbed)
    assert 'for user "u"' in scrub(message, urls(secret)[1])  # a URL libpq reads: the rest stays


@pytest.mark.parametrize("char", SPECIAL)
def test_a_url_with_any_character_in_its_password_is_taken_or_refused_without_showing_it(tmp_path, char):
    for url in urls(password(char)):
        try:
            storage = state_store(Settings(state_dir=tmp_path, state_url=url), "m").storage
        except StateError as error:
            assert not leaks(str(error)), str(error)
            continue
        shown = storage.where(LEDGER) + storage.where(LOCK) + storage.where("schema.json")
        assert not leaks(shown), shown


@pytest.mark.parametrize("char", ["#", "?", "/", "@", " ", '"', "&"])
def test_an_unreachable_database_never_shows_a_password_whatever_its_characters(tmp_path, monkeypatch, capsys,
                                                                                  char):
    port, secret = closed_port(), password(char)
    ws = new_workspace(tmp_path, monkeypatch)
    for url in (f"postgresql://perennial:{secret}@127.0.0.1:{port}/perennial",
                f"postgresql://perennial:{quote(secret, safe='')}@127.0.0.1:{port}/perennial"):
        monkeypatch.setenv("PERENNIAL_STATE_URL", url)
        assert cli.main(["release", "b1.csv", "--config", str(ws.config_path), "--reason", "x"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("perennial: error: ") and err.count("\n") == 1
        assert not leaks(err), err
    assert err.startswith(f"perennial: error: cannot connect to the state database postgresql://perennial:***@"
                          f"127.0.0.1:{port}/perennial (")
