"""MLflow down or refusing: one clear line, nothing written. (Batch names MLflow's filters cannot
hold: tests/flow/test_outages_store.py.)"""

from __future__ import annotations

import secrets
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from conftest import make_batch, new_workspace
from perennial.app.cli import main
from perennial.app.local_server import BIN, free_port, quiet_env, stop

# Measured: a CLI call failing on an unreachable MLflow ends in 15-20 s on 2 busy cores (mostly
# imports; the 2 retries take ~3 s). MLflow's own defaults took 12.5 minutes.
DOES_NOT_HANG = 180
NOTHING_WRITTEN = "nothing was written — the batches will be processed on the next run"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("command", ["run", "status"])
def test_unreachable_mlflow_is_one_line_exit_2_quickly_and_nothing_is_written(tmp_path, monkeypatch,
                                                                              command):
    ws = new_workspace(tmp_path, monkeypatch)
    ws.add("a.csv", make_batch(seed=1))
    before = _snapshot(ws.batches)
    uri = f"http://127.0.0.1:{free_port()}"  # bound and released: nothing listens there
    env = {**quiet_env(), "PERENNIAL_STATE_DIR": str(tmp_path / "state"),
           "PERENNIAL_MLFLOW_TRACKING_URI": uri, "PREFECT_HOME": str(tmp_path / "prefect"),
           "OMP_NUM_THREADS": "1"}
    # A process of its own, as a user runs it, so a hang can be stopped (with its children).
    proc = subprocess.Popen([str(BIN / "perennial"), command, "--config", str(ws.config_path)], env=env,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=DOES_NOT_HANG)
    except subprocess.TimeoutExpired:
        stop(proc)
        pytest.fail(f"`perennial {command}` still running after {DOES_NOT_HANG} s with MLflow down")
    expected = f"perennial: error: MLflow at {uri} is unreachable (connection refused, after 2 retries)"
    if command == "run":
        expected += f"; {NOTHING_WRITTEN}"
    assert (proc.returncode, err.strip(), out) == (2, expected, "")
    assert not (tmp_path / "state").exists()
    assert _snapshot(ws.batches) == before


# -- a basic-auth MLflow server -------------------------------------------------------------------


class AuthServer:
    def __init__(self, url: str, password: str) -> None:
        self.url, self.password = url, password


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory) -> AuthServer:
    """`mlflow server --app-name basic-auth` on 127.0.0.1 with its user store and data in tmp."""
    root = tmp_path_factory.mktemp("mlflow-auth")
    (root / "basic_auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{root / 'users.db'}\nadmin_username = admin\n")
    password = secrets.token_urlsafe(16)
    port = free_port()
    env = {**quiet_env(), "MLFLOW_AUTH_CONFIG_PATH": str(root / "basic_auth.ini"),
           "MLFLOW_AUTH_ADMIN_PASSWORD": password, "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
           # Lean: one worker and no job consumers (~500 MB instead of ~3 GB).
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(root / "server.log", "w")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1", "--port",
         str(port), "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--default-artifact-root", str(root / "artifacts")],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180  # measured 19 s on 2 busy cores
        while True:
            assert proc.poll() is None, f"mlflow server exited; see {root / 'server.log'}"
            assert time.monotonic() < deadline, f"mlflow server not healthy; see {root / 'server.log'}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield AuthServer(f"http://127.0.0.1:{port}", password)
    finally:
        stop(proc)
        log.close()


def _against(server: AuthServer, tmp_path, monkeypatch, user: str | None, password: str | None):
    ws = new_workspace(tmp_path, monkeypatch)
    monkeypatch.setenv("PERENNIAL_MLFLOW_TRACKING_URI", server.url)
    for var, value in {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}.items():
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)
    return ws


REFUSED = {
    "no credentials": (None, None, "no credentials were sent"),
    "wrong password": ("admin", "not-the-password", "user 'admin' not accepted"),
}


@pytest.mark.parametrize("case", REFUSED)
@pytest.mark.parametrize("command", ["run", "status"])
def test_refused_credentials_are_one_line_exit_2_and_never_an_empty_registry(auth_server, tmp_path,
                                                                             monkeypatch, capsys,
                                                                             command, case):
    user, password, who = REFUSED[case]
    ws = _against(auth_server, tmp_path, monkeypatch, user, password)
    ws.add("a.csv", make_batch(seed=1))
    assert main([command, "--config", str(ws.config_path)]) == 2
    out, err = capsys.readouterr()
    expected = (f"perennial: error: MLflow at {auth_server.url}: credentials refused (HTTP 401, {who}); "
                "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to a user of that server")
    if command == "run":
        expected += f"; {NOTHING_WRITTEN}"
    assert (err.strip(), out) == (expected, "")
    assert not (tmp_path / "state").exists()


def test_the_registry_never_reads_refused_credentials_as_no_model(auth_server, tmp_path, monkeypatch):
    from perennial.adapters.mlflow_registry import champion_version, registered_versions
    from perennial.core.types import OutageError

    ws = _against(auth_server, tmp_path, monkeypatch, None, None)
    for read in (registered_versions, champion_version):
        with pytest.raises(OutageError, match=r"credentials refused \(HTTP 401, no credentials were sent\)"):
            read(ws.name, ws.settings)


def test_right_credentials_run_and_status_work(auth_server, tmp_path, monkeypatch, capsys, prefect_server):
    ws = _against(auth_server, tmp_path, monkeypatch, "admin", auth_server.password)
    assert main(["status", "--config", str(ws.config_path)]) == 0
    assert f"test-model: no champion yet ({auth_server.url})" in capsys.readouterr().out

    ws.add("a.csv", make_batch(seed=1))
    assert main(["run", "--config", str(ws.config_path)]) == 0
    assert main(["status", "--config", str(ws.config_path)]) == 0
    assert "test-model: champion v1" in capsys.readouterr().out
