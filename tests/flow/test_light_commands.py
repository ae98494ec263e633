"""Commands that train nothing stay light: `status`, `status --history` and a `run` with nothing new
load neither the validator, the drift tool nor scikit-learn, and such a `run` starts no Prefect server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import make_batch, new_workspace

HEAVY = ("great_expectations", "evidently", "sklearn", "lightgbm")

# In a fresh interpreter, as a user's shell runs the command: the exit code, what it printed, and which
# of the heavy libraries it imported.
SCRIPT = f"HEAVY = {HEAVY!r}\n" + """
import contextlib, io, json, sys
from perennial.app.cli import main
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "out": out.getvalue(), "err": err.getvalue(),
                  "heavy": sorted(m for m in HEAVY if m in sys.modules)}))
"""


def command(*args: str) -> dict:
    # No PREFECT_API_URL: a command that needed Prefect would start its temporary server.
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_status_and_a_run_with_nothing_new_load_no_heavy_library_and_start_no_server(
        tmp_path, monkeypatch, prefect_server):
    # Parameters configured: checking them against the estimator is what imported scikit-learn.
    ws = new_workspace(tmp_path, monkeypatch, model={"family": "hgb", "params": {"max_iter": 50}})
    ws.add("b1.csv", make_batch(seed=1))
    [record] = ws.run()
    assert record.decision == "retrain"

    run = command("run", "--config", str(ws.config_path))
    assert run["code"] == 0 and "No new batches for test-model" in run["out"]
    assert "Starting a temporary Prefect server" not in run["err"]
    assert run["heavy"] == []

    status = command("status", "--config", str(ws.config_path))
    assert status["code"] == 0 and "test-model: champion v1" in status["out"]
    assert status["heavy"] == []

    history = command("status", "--history", "--config", str(ws.config_path))
    assert history["code"] == 0 and "v1" in history["out"]
    assert history["heavy"] == []

    # With a new batch the same command starts its server and checks the parameters (scikit-learn).
    ws.add("b2.csv", make_batch(seed=2))
    run = command("run", "--config", str(ws.config_path))
    assert run["code"] == 0 and "b2.csv" in run["out"]
    assert "Starting a temporary Prefect server" in run["err"]
    assert "sklearn" in run["heavy"]


def test_a_row_id_column_named_by_data_id_is_never_learnt_from(tmp_path, monkeypatch, prefect_server):
    ws = new_workspace(tmp_path, monkeypatch, data={"id": "row"})
    ws.add("b1.csv", make_batch(seed=1).rename_axis("row").reset_index())
    [record] = ws.run()
    assert record.decision == "retrain"
    assert "row" not in ws.store.schema().features and "label" not in ws.store.schema().features
