"""The champion serves the user's own rows, outside Perennial: pyfunc and `mlflow models serve`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import make_batch, new_workspace

ROOT = Path(__file__).resolve().parents[2]
NAME = "served-model"
CLASSES = {"low", "high"}


def serving_batch(seed: int) -> pd.DataFrame:
    """`make_batch` with an integer column and a boolean one with nulls that decides many labels."""
    frame = make_batch(seed=seed)
    rng = np.random.default_rng(seed)
    frame.insert(4, "visits", rng.integers(0, 20, len(frame)))
    # Mostly True, so a missing value is imputed as True (the median); the label follows it.
    opted = rng.random(len(frame)) < 0.7
    frame.insert(5, "opted in", pd.Series(opted, dtype=object).where(rng.random(len(frame)) >= 0.1, None))
    frame.loc[frame["opted in"].eq(True), "label"] = "high"
    return frame


@pytest.fixture(scope="module")
def served(tmp_path_factory, prefect_server):
    """A champion trained on a CSV batch; the batch's rows as a user reads them, without the label."""
    with pytest.MonkeyPatch.context() as mp:
        ws = new_workspace(tmp_path_factory.mktemp("served"), mp, name=NAME)
        path = ws.add("b01.csv", serving_batch(seed=1))
        [record] = ws.run()
        assert record.promoted, record.reason
        rows = pd.read_csv(path).drop(columns=["label"])
        yield ws, rows


def _env(ws) -> dict[str, str]:
    """The environment of a shell with this venv activated (`mlflow models serve` runs `uvicorn`)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    path = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return {**env, "PATH": path, "MLFLOW_TRACKING_URI": ws.settings.tracking_uri(),
            "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


# Run with Perennial's checkout off sys.path (its editable install puts it there): the served model
# must bring its own input conversion.
PYFUNC = """
import importlib.util, json, os, sys
sys.path = [p for p in sys.path if os.path.realpath(p or ".") != sys.argv[1]]
assert importlib.util.find_spec("perennial") is None
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(f"models:/{sys.argv[3]}@champion")
predictions = model.predict(pd.read_csv(sys.argv[2]))
import perennial.core.inputs
print(json.dumps({"predictions": [str(p) for p in predictions], "inputs": perennial.core.inputs.__file__}))
"""


def test_the_champion_predicts_a_users_rows_where_perennial_is_not_installed(served, tmp_path):
    from perennial.adapters.mlflow_registry import load_champion
    from perennial.core.config import load_config
    from perennial.core.schema import features_frame

    ws, rows = served
    rows.to_csv(tmp_path / "rows.csv", index=False)
    done = subprocess.run([sys.executable, "-c", PYFUNC, str(ROOT), str(tmp_path / "rows.csv"), NAME],
                          cwd=tmp_path, env=_env(ws), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(out["inputs"]).parts[-4:] == ("code", "perennial", "core", "inputs.py")
    assert not Path(out["inputs"]).is_relative_to(ROOT)
    predictions = out["predictions"]
    assert len(predictions) == len(rows) and set(predictions) <= CLASSES
    # The very model Perennial uses, on the very rows it would convert itself.
    config = load_config(ws.config_path)
    champion = load_champion(config, ws.settings)
    schema = ws.store.schema()
    assert predictions == list(champion.model.predict(features_frame(rows, schema)))


def test_the_signature_describes_the_columns_as_users_have_them(served):
    import mlflow

    ws, _ = served
    mlflow.set_tracking_uri(ws.settings.tracking_uri())
    info = mlflow.models.get_model_info(f"models:/{NAME}@champion")
    declared = {c["name"]: (c["type"], c.get("required", True)) for c in info.signature.inputs.to_dict()}
    assert declared == {
        "x one": ("double", True), "x-two": ("double", True), "noise": ("double", False),
        "colour": ("string", True), "visits": ("long", True), "is member": ("boolean", True),
        # MLflow's server would turn a null declared boolean into False.
        "opted in": ("any", False),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 180) -> float:
    """Seconds until GET /ping answers 200."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if server.poll() is not None:
            pytest.fail(f"mlflow models serve exited {server.returncode}: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as answer:
                if answer.status == 200:
                    return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"mlflow models serve not healthy after {timeout} s: {log.read_text()[-3000:]}")


def _stop(server: subprocess.Popen) -> None:
    """The server and its uvicorn workers: the process group it leads."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_mlflow_models_serve_answers_json_rows_as_the_champion_does(served, tmp_path):
    from perennial.adapters.mlflow_registry import load_champion
    from perennial.core.config import load_config
    from perennial.core.schema import features_frame

    ws, rows = served
    port, log = _free_port(), tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}"
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(mlflow_cli), "models", "serve", "-m", f"models:/{NAME}@champion", "--env-manager", "local",
             "--host", "127.0.0.1", "-p", str(port)],
            cwd=tmp_path, env=_env(ws), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        seconds = _wait_healthy(url, server, log)
        print(f"mlflow models serve healthy after {seconds:.1f} s")
        predictions = _invoke(url, rows)
        # Optional columns (nulls in the training batch) may be left out: missing in every row.
        without = rows.drop(columns=["noise", "opted in"])
        predictions_without = _invoke(url, without)
    finally:
        _stop(server)
    champion, schema = load_champion(load_config(ws.config_path), ws.settings), ws.store.schema()
    assert predictions == list(champion.model.predict(features_frame(rows, schema)))
    assert predictions_without == list(champion.model.predict(features_frame(without, schema)))


def _invoke(url: str, rows: pd.DataFrame) -> list[str]:
    """The server's predictions for rows sent as JSON: booleans and integers stay JSON booleans and
    integers, NaN becomes null."""
    split = json.loads(rows.to_json(orient="split"))
    body = json.dumps({"dataframe_split": {"columns": split["columns"], "data": split["data"]}})
    request = urllib.request.Request(f"{url}/invocations", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.status == 200
        return json.load(answer)["predictions"]
