"""The benchmark's scoring: prequential accuracy, decision counts, detection delays and false alarms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.quality import score
from bench.scenarios import LOAN_NULL_COLUMNS, SEASON_COLUMN, Scenario, all_scenarios
from bench.strategies import SklearnStrategy, Step


def _scenario(n: int, drifts: list[tuple[int, int]], concepts: list[int] | None = None) -> Scenario:
    labels = np.array([0, 1] * 5)
    return Scenario(
        "t",
        "test stream",
        [pd.DataFrame({"x": range(10), "label": labels}) for _ in range(n)],
        drifts,
        concepts=concepts,
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
    assert result.forgetting is None  # no holdout accuracies: no matrix


def test_forgetting_comes_from_the_accuracy_matrix_of_the_models_in_service():
    # Concepts A, B, A: the model after batch 2 lost 0.2 on batch 0 (A) and 0.3 on batch 1 (B).
    steps = [_step(None, "retrain"), _step(6, "fine_tune"), _step(7, "fine_tune")]
    for step, row in zip(steps, [[0.9], [0.6, 0.8], [0.7, 0.5, 0.9]], strict=True):
        step.holdout_accuracy = row
    scenario = _scenario(3, [(1, 1), (2, 2)], concepts=[0, 1, 0])
    result = score("fine-tune-every", scenario, steps, detects=False)
    assert result.matrix is not None and np.isnan(result.matrix[0, 1])
    assert result.forgetting == pytest.approx((0.2 + 0.3) / 2)
    assert result.bwt == pytest.approx(((0.7 - 0.9) + (0.5 - 0.8)) / 2)
    assert result.concept_forgetting == pytest.approx(0.2)  # batch 0 only: batch 1 is concept B


def test_the_replay_baseline_remembers_every_batch_it_learnt_from():
    from perennial.app import streams
    from perennial.core.config import PipelineConfig
    from perennial.core.schema import infer_schema

    rng = np.random.default_rng(0)
    batches = [streams.sea(200, c, rng) for c in (0, 0, 1)]
    config = PipelineConfig(name="t", data={"source": "batches", "target": "label"},
                            model={"family": "hgb", "params": {"max_iter": 10}})
    strategy = SklearnStrategy("fine-tune-replay", lambda i: ("retrain", 1) if i == 0 else ("fine_tune", 0),
                               infer_schema(batches[0], "label", None), config, replay=True)
    steps = [strategy.step(i, batch) for i, batch in enumerate(batches)]
    assert [s.action for s in steps] == ["retrain", "fine_tune", "fine_tune"]
    assert [len(s.holdout_accuracy or []) for s in steps] == [1, 2, 3]
    assert strategy.memory is not None and len(strategy.memory) == 3 * 150  # every training row fits


def test_a_drift_never_acted_on_is_reported_missed():
    steps = [_step(None, "retrain")] + [_step(6, "noop")] * 5
    result = score("static", _scenario(6, [(2, 3)]), steps, detects=True)
    assert result.delays == [None]
    assert result.false_alarms == 0
    assert result.kappa == pytest.approx(0.2)


@pytest.fixture(scope="module")
def quick_scenarios() -> dict[str, Scenario]:
    """Every scenario as the benchmark's quick mode builds it."""
    return {s.name: s for s in all_scenarios(300, 4)}


def test_loan_nulls_raises_the_missing_share_of_two_columns_with_the_concept(quick_scenarios):
    scenario = quick_scenarios["loan-nulls"]
    [(change, end)] = scenario.drifts
    assert change == end and scenario.concepts is not None
    for i, batch in enumerate(scenario.batches):
        assert scenario.concepts[i] == int(i >= change)
        for column in LOAN_NULL_COLUMNS:
            assert batch[column].isna().mean() == pytest.approx(0.22 if i >= change else 0.15, abs=0.01)
        assert batch.drop(columns=list(LOAN_NULL_COLUMNS)).notna().all().all()
        assert batch["elevel"].str.startswith("level-").all() and batch["age"].dtype == np.float64


def test_seasonal_shift_leaves_the_widened_winter_range_in_summer_and_comes_back(quick_scenarios):
    scenario = quick_scenarios["seasonal-shift"]
    seasons = scenario.concepts
    assert seasons is not None and 0 in seasons[seasons.index(1):]  # winter returns after summer
    assert [start for start, _ in scenario.drifts] == [i for i in range(1, len(seasons))
                                                       if seasons[i] != seasons[i - 1]]
    winter = pd.concat(scenario.batches[: scenario.drifts[0][0]])[SEASON_COLUMN]
    span = winter.max() - winter.min()
    low, high = winter.min() - span / 2, winter.max() + span / 2
    for season, batch in zip(seasons, scenario.batches, strict=True):
        outside = float(np.mean((batch[SEASON_COLUMN] < low) | (batch[SEASON_COLUMN] > high)))
        assert outside >= 0.9 if season else outside == 0
