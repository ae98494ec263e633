"""Credentials in the MLflow tracking URI are refused (MLflow prints the URI in its "View run" lines and
Prefect keeps the settings with each run's parameters): one line pointing to MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD, exit code 2, and the password nowhere, from every entry point."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from conftest import new_workspace
from perennial.app.cli import main
from perennial.core.config import Settings, settings_error, without_credentials

PASSWORD = "s3cr#t"
SAYS = ("MLFLOW_TRACKING_URI (or PERENNIAL_MLFLOW_TRACKING_URI) holds credentials, which MLflow and Prefect "
        "would show: set it to http://127.0.0.1:5999 and put them in MLFLOW_TRACKING_USERNAME and "
        "MLFLOW_TRACKING_PASSWORD")


@pytest.fixture
def uri_with_password(tmp_path, monkeypatch):
    """A workspace whose MLflow tracking URI (MLflow's own variable) holds a user and password."""
    ws = new_workspace(tmp_path, monkeypatch)
    monkeypatch.delenv("PERENNIAL_MLFLOW_TRACKING_URI")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://admin:{PASSWORD}@127.0.0.1:5999")
    return ws


@pytest.mark.parametrize("command", [["status"], ["run"], ["status", "--history"], ["serve"]])
def test_every_command_refuses_credentials_in_the_tracking_uri_in_one_line(uri_with_password, capsys,
                                                                          command):
    argv = [command[0], "--config", str(uri_with_password.config_path), *command[1:]]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err == f"perennial: error: {SAYS}\n" and out == ""
    assert "s3cr" not in out + err and "admin" not in out + err


@pytest.mark.parametrize("uri", [f"http://admin:{PASSWORD}@127.0.0.1:5999", "http://admin:s3cr%23t@127.0.0.1:5999",
                                 f"HTTPS://admin:{PASSWORD}@127.0.0.1:5999", "http://admin:s3/cr@t@127.0.0.1:5999",
                                 "http://admin@127.0.0.1:5999", "http://admin:s3cr?t@127.0.0.1:5999"])
def test_the_settings_refuse_credentials_without_quoting_them(monkeypatch, uri):
    monkeypatch.delenv("PERENNIAL_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(ValidationError) as error:
        Settings()
    # Not even pydantic's own text (a deployed run's log shows it) quotes the value.
    for text in (str(error.value), repr(error.value), settings_error(error.value)):
        assert "s3" not in text and "admin" not in text, text
    assert settings_error(error.value) == SAYS.replace("http:", uri.partition(":")[0] + ":")


@pytest.mark.parametrize("uri", ["http://127.0.0.1:5000", "https://mlflow.example/prefix", "databricks",
                                 "sqlite:////tmp/at@sign/mlflow.db", "file:///tmp/a@b/mlruns"])
def test_a_uri_without_credentials_is_taken_as_it_is(monkeypatch, uri):
    monkeypatch.delenv("PERENNIAL_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert Settings().tracking_uri() == uri


def test_another_settings_error_is_one_line_naming_the_variable(tmp_path, monkeypatch, capsys):
    ws = new_workspace(tmp_path, monkeypatch)
    monkeypatch.setenv("PERENNIAL_MLFLOW_RETRIES", "many")
    assert main(["status", "--config", str(ws.config_path)]) == 2
    assert capsys.readouterr().err == ("perennial: error: PERENNIAL_MLFLOW_RETRIES: Input should be a valid "
                                       "integer, unable to parse string as an integer\n")


@pytest.mark.parametrize("uri, shown", [
    ("postgresql://mlflow:p#w/d@db:5432/mlflow", "postgresql://db:5432/mlflow"),  # a database store's URI
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("sqlite:////tmp/at@sign/mlflow.db", "sqlite:////tmp/at@sign/mlflow.db"),
])
def test_messages_name_a_tracking_uri_without_its_credentials(uri, shown):
    assert without_credentials(uri) == shown


def test_a_database_store_uri_is_kept_secret_where_prefect_records_the_settings(monkeypatch):
    """A database store's URI holds its password: Prefect records a flow's Settings parameter as
    pydantic dumps it, which shows a secret as ***."""
    from perennial.core.config import Settings

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://mlflow:s3cr#t@127.0.0.1:5432/mlflow")
    settings = Settings()
    assert settings.tracking_uri() == "postgresql://mlflow:s3cr#t@127.0.0.1:5432/mlflow"
    for shown in (repr(settings), settings.model_dump_json(), str(settings.model_dump(mode="json"))):
        assert "s3cr#t" not in shown
