"""Shared fixtures: one Prefect test server per session, a fresh state folder and SQLite MLflow per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
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
# Small fits in tests: OpenMP threads spinning on 2 busy cores made them 10-30x slower, not faster.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROWS = 1400  # training rows (75%) stay above 1,000, where Evidently uses effect sizes, not p-values


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """A temporary Prefect server shared by every flow test."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


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
    # Tests of one path each: no data-growth retrains and only the policy's own candidate, unless a
    # test turns them on (tests/test_adaptation.py runs them with the defaults).
    "policy": {"drift_share_moderate": 0.2, "drift_share_severe": 0.7,
               "accuracy_drop_moderate": 0.05, "accuracy_drop_severe": 0.15, "max_fine_tunes": 3,
               "growth_ratio": None, "candidate_budget": 0.0},
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
