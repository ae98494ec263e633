"""Shared by the three tiers: the tier markers and the rule that unit tests start no server, one
Prefect test server per session (per xdist worker), a fresh state folder and SQLite MLflow per test.

Tiers, one folder each; every test gets its folder's marker (`pytest tests/unit` = `pytest -m unit`):
- tests/unit: pure logic and single libraries; no server, no Prefect harness, no MLflow store.
- tests/flow: flows on the Prefect test harness, MLflow on SQLite in tmp, `perennial` child processes.
- tests/deployed: real servers (Prefect, `perennial serve`, MLflow, `mlflow models serve`) and the
  installed command as a user runs it.
"""

from __future__ import annotations

import ast
import atexit
import functools
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# As Perennial's own servers (local_server.NO_BLOCKS): no test uses Prefect blocks.
os.environ.setdefault("PREFECT_API_BLOCKS_REGISTER_ON_START", "false")
# Small fits in tests: OpenMP threads spinning on 2 busy cores made them 10-30x slower, not faster.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# A Prefect home of this test process (each xdist worker has its own), never the user's ~/.prefect:
# set before Prefect is imported, which reads it once.
_PREFECT_HOME = tempfile.mkdtemp(prefix="perennial-tests-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)  # and at unconfigure: xdist workers
# may end without running atexit.


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)


ROWS = 1400  # training rows (75%) stay above 1,000, where Evidently uses effect sizes, not p-values

TESTS = Path(__file__).parent
TIERS = ("unit", "flow", "deployed")
# Fixtures that start a server; a unit test may not use them, even through another fixture.
SERVER_FIXTURES = {"prefect_server", "_prefect_harness"}


def tier_of(path: Path) -> str | None:
    """The tier folder a test file is in, if any."""
    parts = Path(path).resolve().parts[len(TESTS.resolve().parts):]
    inside = Path(path).resolve().is_relative_to(TESTS.resolve())
    return parts[0] if inside and len(parts) > 1 and parts[0] in TIERS else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test gets its folder's tier marker; a unit test asking for a server fixture, or a test
    outside the tier folders, stops the run before any test starts."""
    errors = []
    for item in items:
        tier = tier_of(item.path)
        if tier is None:
            errors.append(f"{item.nodeid}: not in a tier folder; move it to tests/{{{','.join(TIERS)}}}/")
            continue
        item.add_marker(tier)
        if tier == "unit" and (used := SERVER_FIXTURES & set(item.fixturenames)):
            errors.append(f"{item.nodeid}: a unit test uses {', '.join(sorted(used))}, which starts a "
                          "server; move it to tests/flow or tests/deployed")
    if errors:
        raise pytest.UsageError("test tiers:\n" + "\n".join(errors))


# -- xdist: a module's shared fixture stays on one worker ------------------------------------------


@functools.cache
def shares_a_fixture(module: Path) -> bool:
    """Whether a test module defines a fixture wider than a function (one trained model, one server,
    its tests often in order)."""
    for node in ast.walk(ast.parse(module.read_text())):
        for decorator in getattr(node, "decorator_list", []):
            if isinstance(decorator, ast.Call) and ast.unparse(decorator.func).endswith("fixture"):
                scope = next((k.value for k in decorator.keywords if k.arg == "scope"), None)
                if scope is not None and not (isinstance(scope, ast.Constant) and scope.value == "function"):
                    return True
    return False


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (the default, pyproject.toml): no workers for the unit tier alone or for named tests,
    where starting workers (each imports the stack) costs more than it saves; otherwise two more
    workers than cores, since many flow and deployed tests wait on child processes and servers.
    PYTEST_XDIST_AUTO_NUM_WORKERS overrides."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
    paths = [Path(config.invocation_params.dir, a.split("::")[0]) for a in config.args]
    unit_only = config.getoption("markexpr") == "unit" or all(
        p.resolve().is_relative_to((TESTS / "unit").resolve()) for p in paths)
    named = bool(config.args) and all("::" in a for a in config.args)
    return 0 if unit_only or named else len(os.sched_getaffinity(0)) + 2


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """With `-n`, `--dist load` (and `loadgroup`, which pytest 9.2 broke: pytest-xdist#1386) keep the
    tests of a module with a shared fixture together, in order, on one worker; any other test goes to
    the next free worker. Work is handed out in collection order: deployed (the longest), flow, unit."""
    if config.getvalue("dist") not in ("load", "loadgroup"):
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if shares_a_fixture(config.rootpath / module) else nodeid

    config.option.loadscopereorder = False
    return ModuleFixtureScheduling(config, log)


# -- no server from a unit test ---------------------------------------------------------------------

# Programs and arguments that start a server: `prefect server start`, `mlflow server`, `mlflow models
# serve`, `perennial serve`, uvicorn (Prefect's ephemeral server too); and the `perennial` command,
# which starts a temporary Prefect server. Unit tests call `main()` in-process instead.
_SERVER_WORDS = {"server", "serve", "uvicorn", "gunicorn", "perennial", "perennial.app.cli"}


def _starts_server(args) -> bool:
    argv = shlex.split(args) if isinstance(args, str) else [os.fspath(a) for a in args]
    return any(Path(a).name in _SERVER_WORDS for a in argv if "\n" not in a)


@pytest.fixture(autouse=True)
def _unit_starts_no_server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a unit test, starting a server fails the test: a child process that would be one is refused,
    and Prefect may not start its ephemeral server in-process."""
    if request.node.get_closest_marker("unit") is None:
        return
    monkeypatch.setenv("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "false")
    popen_init = subprocess.Popen.__init__

    def refuse_servers(self, args, *rest, **kwargs):
        if _starts_server(args):
            raise RuntimeError(f"a unit test may not start a server or the perennial command: {args!r}; "
                               "move the test to tests/flow or tests/deployed")
        popen_init(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse_servers)


@pytest.fixture(scope="session", autouse=True)
def _prefect_logging_outside_capture() -> None:
    """Prefect binds its console log handler to sys.stderr as it is when Prefect configures logging.
    Configured inside a test capturing with capsys or capfd, the handler kept that test's stream,
    closed after it, and later tests' stderr got "--- Logging error ---" tracebacks (seen when xdist
    ordered a capsys test first). Configured here, before any test captures."""
    import prefect.main  # noqa: F401 - configures Prefect's logging


@pytest.fixture(scope="session")
def _prefect_harness() -> Iterator[None]:
    """A temporary Prefect server shared by every flow test of this process (xdist: of this worker)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="module")
def prefect_server(request: pytest.FixtureRequest) -> None:
    """The session's Prefect test server; refused to unit tests (before it starts)."""
    if tier_of(request.node.path) == "unit":
        pytest.fail(f"{request.node.nodeid}: a unit test may not use the Prefect test server; move it to "
                    "tests/flow", pytrace=False)
    request.getfixturevalue("_prefect_harness")


def wait_for(check: Callable[[], object], what: str, timeout: float = 300):
    """`check()`'s first truthy value, polled each second (an HTTP error counts as not yet); an
    AssertionError naming `what` after `timeout` seconds (a chain of runs on a loaded 2-core machine)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def make_batch(rows: int = ROWS, *, seed: int, theta: float = 10.0, shift: float = 0.0,
               flip: bool = False, classes: int = 2) -> pd.DataFrame:
    """A labelled batch with mixed column types, nulls, and names with spaces and dashes.

    The label follows SEA (x one + x-two <= theta); `shift` moves `x one`, `x-two` and `noise`
    (covariate shift); `flip` inverts the label (an abrupt concept change).
    """
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(0, 10, rows) + shift
    x2 = rng.uniform(0, 10, rows) + shift
    score = x1 + x2
    if classes == 2:
        label = np.where(score <= theta, "low", "high")
        if flip:
            label = np.where(label == "low", "high", "low")
    else:
        label = np.select([score <= theta - 3, score <= theta + 3], ["low", "mid"], "high")
    frame = pd.DataFrame({
        "x one": x1.round(3),
        "x-two": x2.round(3),
        "noise": rng.normal(0, 1, rows) + shift,
        "colour": rng.choice(["red", "green", "blue"], rows),
        "is member": rng.random(rows) < 0.4,
        "label": label,
    })
    frame.loc[rng.random(rows) < 0.02, "noise"] = np.nan
    return frame


def with_nulls(frame, columns, percent):
    """`percent`% of the rows (every row whose index ends in 00-`percent`-1) missing in `columns`."""
    frame = frame.copy()
    for column in columns:
        frame[column] = frame[column].astype("float64").fillna(0.0)
        frame.loc[frame.index % 100 < percent, column] = None
    return frame


def hostile_header(path: Path) -> Path:
    """The reported case: a 400 KB one-line header of 200,000 columns (pandas: over 10 minutes)."""
    path.write_text(",".join(["a"] * 200_000))
    return path


@dataclass
class Workspace:
    """A monitored folder, its config, and Perennial's state for one test."""

    root: Path
    batches: Path
    config_path: Path
    name: str = "test-model"

    def add(self, name: str, frame: pd.DataFrame) -> Path:
        path = self.batches / name
        if path.suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        return path

    def configure(self, **overrides) -> None:
        config = yaml.safe_load(self.config_path.read_text())
        for dotted, value in overrides.items():
            section, key = dotted.split("__")
            config.setdefault(section, {})[key] = value
        self.config_path.write_text(yaml.safe_dump(config))

    def run(self):
        from perennial.pipeline.flows.continuous_training import continuous_training

        return continuous_training(str(self.config_path))

    @property
    def settings(self):
        from perennial.core.config import Settings

        return Settings()

    @property
    def store(self):
        from perennial.core.state import StateStore

        return StateStore(self.settings.state_dir, self.name)

    def versions(self) -> list[dict]:
        from perennial.adapters.mlflow_registry import registered_versions

        return registered_versions(self.name, self.settings)

    def champion(self) -> int | None:
        return next((v["version"] for v in self.versions() if "champion" in v["aliases"]), None)


BASE_CONFIG = {
    "name": "test-model",
    "data": {"source": "batches", "format": "auto", "target": "label"},
    "model": {"family": "sgd", "params": {}},
    # Tests of one path each: no data-growth retrains and only the policy's own candidate (no
    # retrain on the concept's history either), unless a test turns them on (tests/flow/
    # test_adaptation.py runs them with the defaults).
    "policy": {"drift_share_moderate": 0.2, "drift_share_severe": 0.7,
               "drop_moderate": 0.05, "drop_severe": 0.15, "max_fine_tunes": 3,
               "growth_ratio": None, "candidate_budget": 0.0,
               "candidates": ["fine_tune", "retrain_window", "retrain_batch"]},
    "training": {"window_batches": 3, "holdout_fraction": 0.25},
}


def new_workspace(root: Path, monkeypatch: pytest.MonkeyPatch, **config) -> Workspace:
    (root / "batches").mkdir(parents=True)
    state = root / "state"
    monkeypatch.setenv("PERENNIAL_STATE_DIR", str(state))
    monkeypatch.setenv("PERENNIAL_MLFLOW_TRACKING_URI", f"sqlite:///{state / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE_CONFIG.items()}
    for section, values in config.items():
        if isinstance(values, dict):
            merged.setdefault(section, {}).update(values)
        else:
            merged[section] = values
    config_path = root / "perennial.yaml"
    config_path.write_text(yaml.safe_dump(merged))
    return Workspace(root=root, batches=root / "batches", config_path=config_path, name=merged["name"])


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_server) -> Workspace:
    return new_workspace(tmp_path, monkeypatch)
