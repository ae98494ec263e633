"""The benchmark's scoring: prequential accuracy, decision counts, detection delays and false alarms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.quality import score
from bench.scenarios import Scenario
from bench.strategies import Step


def _scenario(n: int, drifts: list[tuple[int, int]]) -> Scenario:
    labels = np.array([0, 1] * 5)
    return Scenario(
        "t", "test stream", [pd.DataFrame({"x": range(10), "label": labels}) for _ in range(n)], drifts
    )


def _step(correct: int | None, action: str) -> Step:
    """A step whose predictions get `correct` of the 10 rows right (None: no model in service yet)."""
    if correct is None:
        return Step(None, action)
    truth = np.array(["0", "1"] * 5)
    wrong = np.where(truth == "0", "1", "0")
    return Step(np.concatenate([truth[:correct], wrong[correct:]]), action, train_cpu=0.5)


def test_score_counts_decisions_delays_and_false_alarms_against_known_drifts():
    # Drifts start at batches 3 and 6; detections at 1 (false alarm), 4 (delay 1) and 6 (delay 0).
    steps = [
        _step(None, "retrain"),
        _step(9, "fine_tune"),
        _step(8, "noop"),
        _step(5, "noop"),
        _step(7, "retrain"),
        _step(9, "noop"),
        _step(4, "fine_tune"),
        _step(8, "noop"),
    ]
    result = score("perennial", _scenario(8, [(3, 3), (6, 6)]), steps, detects=True)
    assert result.accuracy == [None, 0.9, 0.8, 0.5, 0.7, 0.9, 0.4, 0.8]
    assert result.mean_accuracy == pytest.approx(5.0 / 7)
    assert result.actions == {"fine_tune": 2, "noop": 4, "retrain": 1}
    assert result.delays == [1, 0]
    assert result.false_alarms == 1
    assert result.train_cpu == pytest.approx(3.5)


def test_a_drift_never_acted_on_is_reported_missed():
    steps = [_step(None, "retrain")] + [_step(6, "noop")] * 5
    result = score("static", _scenario(6, [(2, 3)]), steps, detects=True)
    assert result.delays == [None]
    assert result.false_alarms == 0
    assert result.kappa == pytest.approx(0.2)
