"""Replay memory and the accuracy-matrix metrics, against hand-made inputs (no Prefect or MLflow)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from perennial.core.lifelong import (
    AccuracyMatrix,
    ReplayMemory,
    Step,
    Window,
    average_accuracy,
    backward_transfer,
    forgetting,
)

# Batches of labels: up to 6 batches of up to 60 rows over at most 4 classes, often skewed.
batches = st.lists(st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=60), min_size=1, max_size=6)


def _feed(capacity: int, stream: list[list[str]]) -> tuple[ReplayMemory, dict[str, int], pd.DataFrame]:
    memory, seen, offered = ReplayMemory.empty(capacity, "y"), {}, []
    for i, labels in enumerate(stream):
        frame = pd.DataFrame({"x": np.arange(len(labels)) + 1000 * i, "y": labels})
        memory = memory.add(frame, seed=i)
        offered.append(frame)
        for label in labels:
            seen[label] = seen.get(label, 0) + 1
    return memory, seen, pd.concat(offered, ignore_index=True)


@settings(max_examples=150, deadline=None)
@given(capacity=st.integers(1, 40), stream=batches)
def test_reservoir_is_bounded_full_and_class_balanced(capacity: int, stream: list[list[str]]) -> None:
    memory, seen, offered = _feed(capacity, stream)
    counts = memory.counts()
    assert len(memory) == min(capacity, sum(seen.values()))  # bounded, and never short of rows
    for label, kept in counts.items():
        assert kept <= seen[label]
        # Balanced: a class with fewer rows than another keeps every row it had.
        if kept < max(counts.values()) - 1:
            assert kept == seen[label], (counts, seen)
    # Only rows that were offered, each at most once.
    assert not memory.rows().duplicated().any()
    assert set(map(tuple, memory.rows().to_numpy())) <= set(map(tuple, offered.to_numpy()))


def test_each_class_is_a_uniform_sample_of_its_rows() -> None:
    # 200 rows of one class offered in 4 batches, 20 kept: over many seeds every row is kept
    # about equally often (a reservoir biased to recent batches would fail this).
    kept = np.zeros(200)
    for seed in range(300):
        memory = ReplayMemory.empty(20, "y")
        for b in range(4):
            memory = memory.add(pd.DataFrame({"x": np.arange(50) + 50 * b, "y": "a"}), seed=seed * 10 + b)
        kept[memory.rows()["x"].to_numpy()] += 1
    by_batch = kept.reshape(4, 50).sum(axis=1) / kept.sum()
    assert np.allclose(by_batch, 0.25, atol=0.03), by_batch


def test_saved_memory_reloads_to_the_same_rows(tmp_path) -> None:
    memory, _, _ = _feed(30, [["a"] * 40 + ["b"] * 5, ["c"] * 25])
    memory.frame.to_parquet(tmp_path / "memory.parquet", index=False)
    again = ReplayMemory.load(tmp_path / "memory.parquet", 30, "y")
    pd.testing.assert_frame_equal(again.rows(), memory.rows())
    # b keeps its 5 rows; a and c share the 25 other slots (the odd one goes to c, last by name).
    assert again.counts() == {"a": 12, "b": 5, "c": 13}


# R[i, j]: accuracy on window j of the model in service after step i (NaN before window j existed).
R = np.array([
    [0.90, np.nan, np.nan],
    [0.95, 0.95, np.nan],
    [0.70, 0.90, 0.85],
])


def test_metrics_match_the_hand_computed_matrix() -> None:
    assert average_accuracy(R) == pytest.approx((0.70 + 0.90 + 0.85) / 3)
    # BWT (Lopez-Paz & Ranzato): final minus just-after-learning, over earlier windows.
    assert backward_transfer(R) == pytest.approx(((0.70 - 0.90) + (0.90 - 0.95)) / 2)
    # Forgetting (Chaudhry et al.): best earlier accuracy minus final (window 0's best is 0.95, not 0.90).
    assert forgetting(R) == pytest.approx(((0.95 - 0.70) + (0.95 - 0.90)) / 2)
    # Restricted to windows 1 and 2 (one concept): only window 1 is earlier.
    assert forgetting(R, [1, 2]) == pytest.approx(0.05)
    assert backward_transfer(R, [1, 2]) == pytest.approx(-0.05)
    # A single step has nothing earlier to forget.
    assert forgetting(R[:1, :1]) == 0.0 and backward_transfer(R[:1, :1]) == 0.0


def test_accuracy_matrix_scopes_concepts_and_drops_old_windows() -> None:
    steps = [Step("b1", 1, 1, {"b1": 0.90}), Step("b2", 2, 2, {"b1": 0.95, "b2": 0.95}),
             Step("b3", 3, 2, {"b1": 0.70, "b2": 0.90, "b3": 0.85})]
    matrix = AccuracyMatrix([Window("b1", 1), Window("b2", 2), Window("b3", 2)], steps)
    np.testing.assert_array_equal(matrix.array(), R)
    metrics = matrix.metrics()
    assert metrics.forgetting == pytest.approx(0.15)
    assert metrics.concept_forgetting == pytest.approx(0.05)  # window b1 is another concept's
    assert matrix.keep_last(2) == ["b1"]
    assert [w.batch for w in matrix.windows] == ["b2", "b3"]
    np.testing.assert_array_equal(matrix.array(), [[0.95, np.nan], [0.90, 0.85]])
    assert AccuracyMatrix.from_dict(matrix.to_dict()) == matrix


def test_a_regression_memory_is_balanced_over_the_targets_deciles_so_rare_values_stay() -> None:
    """A price target is not a label: the memory keeps 50 rows of each decile of the prices offered
    (balancing over 10,000 distinct prices as classes would keep one row of 500 of them)."""
    rng = np.random.default_rng(0)
    prices = np.concatenate([rng.normal(100, 10, 9_800), rng.normal(1_000, 50, 200)])
    rows = pd.DataFrame({"x": rng.random(len(prices)), "price": prices})
    memory = ReplayMemory.empty(500, "price", quantiles=10).add(rows, seed=1)
    kept = memory.rows()["price"]
    assert len(memory) == 500
    deciles = np.quantile(prices, np.linspace(0, 1, 11))
    per_decile = np.histogram(kept, bins=deciles)[0]
    assert per_decile.min() >= 45 and per_decile.max() <= 55  # 50 of each decile
    # Offered again with more rows, the memory stays balanced and bounded; reloaded, the same rows.
    grown = memory.add(rows.assign(price=rows["price"] * 1.1), seed=2)
    assert len(grown) == 500
    again = ReplayMemory.of(grown.frame, 500, "price", quantiles=10)
    assert again.frame.equals(grown.frame)
    # As classes, the same prices: 500 "classes" of one row each.
    assert set(ReplayMemory.empty(500, "price").add(rows, seed=1).counts().values()) == {1}
