"""A `perennial run` killed with SIGKILL mid-run leaves no temporary Prefect server behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_batch, new_workspace
from perennial.app.local_server import quiet_env

ROOT = Path(__file__).resolve().parents[2]
SERVER_APP = b"prefect.server.api.server:create_app"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; Linux only")


def servers_of(prefect_home: Path) -> list[int]:
    """Processes running a Prefect server app with this PREFECT_HOME in their environment."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if SERVER_APP not in (entry / "cmdline").read_bytes():
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # ended meanwhile, or not ours to read
            continue
        if f"PREFECT_HOME={prefect_home}".encode() in environ:
            found.append(int(entry.name))
    return found


def test_a_killed_run_leaves_no_prefect_server(tmp_path, monkeypatch):
    ws = new_workspace(tmp_path, monkeypatch)
    for i in range(4):
        ws.add(f"b{i}.csv", make_batch(seed=i))
    home = tmp_path / "prefect"
    env = {**quiet_env(), "PREFECT_HOME": str(home), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "PERENNIAL_STATE_DIR": os.environ["PERENNIAL_STATE_DIR"],
           "PERENNIAL_MLFLOW_TRACKING_URI": os.environ["PERENNIAL_MLFLOW_TRACKING_URI"]}
    log = tmp_path / "run.log"
    command = [sys.executable, "-m", "perennial.app.cli", "run", "--config", str(ws.config_path)]
    with open(log, "w") as out:
        run = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        # Mid-run: the first batch is in the ledger, three are still to come.
        deadline = time.monotonic() + 600  # measured 60-70 s on 2 busy cores
        while not (ws.store.ledger_path.exists() and ws.store.ledger_path.read_text().strip()):
            assert run.poll() is None, f"the run ended before it was killed:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no batch processed in time:\n{log.read_text()}"
            time.sleep(0.2)
        assert servers_of(home), "the run's server is not where this test looks for it"
        run.send_signal(signal.SIGKILL)
        run.wait()
        # The kernel kills the server when its parent dies: give it a few seconds, not more.
        gone_by = time.monotonic() + 10
        while servers_of(home) and time.monotonic() < gone_by:
            time.sleep(0.2)
        assert servers_of(home) == []
    finally:
        if run.poll() is None:
            run.kill()
        for pid in servers_of(home):  # the orphans this test exists to catch
            os.kill(pid, signal.SIGKILL)
