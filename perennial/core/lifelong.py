"""Lifelong learning: a class-balanced replay memory, and the accuracy matrix with its metrics.

The matrix holds values of the metric models are judged by (`policy.metric`, accuracy by default);
its name keeps the literature's.

Pure logic on pandas and numpy; the flow decides when to call it and where the results are kept.
Metrics follow Lopez-Paz & Ranzato (2017, average accuracy and backward transfer) and Chaudhry et
al. (2018, forgetting), where R[i, j] is the accuracy on window j of the model in service after step i.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# Each remembered row keeps a uniform random key for life: a class's memory is the rows with the
# smallest keys among all rows of that class ever offered, i.e. a uniform sample of them, and a
# later batch can be merged in without the rows that were dropped (bottom-k sampling).
KEY = "_replay_key"


def class_quotas(available: dict[str, int], capacity: int) -> dict[str, int]:
    """Slots per class: equal shares, a class with fewer rows than its share keeping all of them
    and leaving the rest to the others (class-balanced reservoir, Chrysakis & Moens 2020)."""
    quotas, left = {}, capacity
    by_size = sorted(available, key=lambda c: (available[c], c))
    for i, label in enumerate(by_size):
        share = left // (len(by_size) - i)
        quotas[label] = min(available[label], share)
        left -= quotas[label]
    return quotas


# Strata of a regression target's memory: its deciles, so rare high and low values stay remembered.
TARGET_QUANTILES = 10


@dataclass(frozen=True)
class ReplayMemory:
    """At most `capacity` labelled rows of the current concept, balanced over its classes; for a
    regression target (`quantiles` > 0) over that many quantile bins of the target's values."""

    capacity: int
    target: str
    frame: pd.DataFrame  # the rows, with their KEY column
    quantiles: int = 0

    @classmethod
    def empty(cls, capacity: int, target: str, quantiles: int = 0) -> ReplayMemory:
        return cls(capacity, target, pd.DataFrame(), quantiles)

    def __len__(self) -> int:
        return len(self.frame)

    def counts(self) -> dict[str, int]:
        """Rows per class."""
        if self.frame.empty:
            return {}
        return self.frame[self.target].astype(str).value_counts().to_dict()

    def add(self, rows: pd.DataFrame, seed: int) -> ReplayMemory:
        """A new memory that has also been offered `rows`; this one is left as it was."""
        if rows.empty:
            return self
        keyed = rows.assign(**{KEY: np.random.default_rng(seed).random(len(rows))})
        pool = keyed if self.frame.empty else pd.concat([self.frame, keyed], ignore_index=True)
        kept = _keep(pool, self.target, self.capacity, self.quantiles)
        return ReplayMemory(self.capacity, self.target, kept, self.quantiles)

    def rows(self) -> pd.DataFrame:
        """The remembered rows as they came, without their keys."""
        return self.frame.drop(columns=[KEY], errors="ignore")

    def sample(self, n: int, seed: int) -> pd.DataFrame:
        """At most n remembered rows, drawn uniformly without replacement."""
        rows = self.rows()
        return rows.sample(min(n, len(rows)), random_state=seed) if n > 0 else rows.iloc[:0]

    @classmethod
    def load(cls, path: Path, capacity: int, target: str, quantiles: int = 0) -> ReplayMemory:
        """A saved memory; a smaller capacity than it was saved with drops rows by the same rule."""
        try:
            return cls.of(pd.read_parquet(path), capacity, target, quantiles)
        except NotAMemory as exc:
            raise ValueError(f"{path}: {exc}") from None

    @classmethod
    def of(cls, frame: pd.DataFrame, capacity: int, target: str, quantiles: int = 0) -> ReplayMemory:
        """A memory from its saved rows (`frame`, as `load` reads it)."""
        if frame.empty:
            return cls.empty(capacity, target, quantiles)
        if KEY not in frame.columns or target not in frame.columns:
            raise NotAMemory(f"not a replay memory (expected columns {KEY!r} and {target!r})")
        # The saved keys decide again: the same rows when the capacity is unchanged.
        return cls(capacity, target, _keep(frame, target, capacity, quantiles), quantiles)


class NotAMemory(ValueError):
    """Saved rows without the columns of a replay memory."""


def strata(values: pd.Series, quantiles: int) -> pd.Series:
    """What a memory balances over: the labels, or (`quantiles` > 0) the quantile bin of each value
    among the rows offered."""
    if not quantiles:
        return values.astype(str)
    numbers = pd.to_numeric(values, errors="coerce")
    ranks = numbers.rank(method="first", pct=True).fillna(1.0)
    return np.minimum((ranks * quantiles).astype(int), quantiles - 1).astype(str)


def _keep(pool: pd.DataFrame, target: str, capacity: int, quantiles: int = 0) -> pd.DataFrame:
    """The rows with the smallest keys of each class (or target quantile), as many as its quota."""
    pool = pool.sort_values(KEY, kind="stable")
    label = strata(pool[target], quantiles)
    quotas = class_quotas(label.value_counts().to_dict(), capacity)
    rank = pool.groupby(label, sort=False).cumcount().to_numpy()
    return pool[rank < label.map(quotas).to_numpy()].reset_index(drop=True)


# -- Evaluation across time ---------------------------------------------------------------------

def _earlier(matrix: np.ndarray, scope: Sequence[int] | None) -> list[int]:
    last = matrix.shape[0] - 1
    columns = range(last) if scope is None else scope
    return [j for j in columns if j < last and not np.isnan(matrix[last, j])]


def average_accuracy(matrix: np.ndarray, scope: Sequence[int] | None = None) -> float:
    """ACC: mean accuracy of the last model over the windows (all, or those in `scope`)."""
    last = matrix[-1]
    columns = [j for j in (range(len(last)) if scope is None else scope) if not np.isnan(last[j])]
    return float(np.mean(last[columns])) if columns else float("nan")


def backward_transfer(matrix: np.ndarray, scope: Sequence[int] | None = None) -> float:
    """BWT: mean of R[T, j] - R[j, j] over earlier windows j; negative when the last model forgot."""
    last = matrix.shape[0] - 1
    gaps = [matrix[last, j] - matrix[j, j] for j in _earlier(matrix, scope) if not np.isnan(matrix[j, j])]
    return float(np.mean(gaps)) if gaps else 0.0


def forgetting(matrix: np.ndarray, scope: Sequence[int] | None = None) -> float:
    """F: mean over earlier windows j of the best accuracy any earlier model had on j minus the last's."""
    last = matrix.shape[0] - 1
    drops = []
    for j in _earlier(matrix, scope):
        best = np.nanmax(matrix[j:last, j]) if not np.all(np.isnan(matrix[j:last, j])) else np.nan
        if not np.isnan(best):
            drops.append(best - matrix[last, j])
    return float(np.mean(drops)) if drops else 0.0


@dataclass
class LifelongMetrics:
    average_accuracy: float
    backward_transfer: float
    forgetting: float
    # The same over the windows of the concept in service only (what the promotion gate uses).
    concept_backward_transfer: float
    concept_forgetting: float

    @classmethod
    def of(cls, matrix: np.ndarray, concept_windows: Sequence[int], utility: np.ndarray | None = None
           ) -> LifelongMetrics:
        """From the matrix of values; transfer and forgetting from `utility` (the values on the scale
        where higher is better and differences compare, `Metric.utility`), the values by default."""
        u = matrix if utility is None else utility
        return cls(average_accuracy(matrix), backward_transfer(u), forgetting(u),
                   backward_transfer(u, concept_windows), forgetting(u, concept_windows))

    def as_metrics(self) -> dict[str, float]:
        return {"avg_accuracy": self.average_accuracy, "bwt": self.backward_transfer,
                "forgetting": self.forgetting, "concept_bwt": self.concept_backward_transfer,
                "concept_forgetting": self.concept_forgetting}


@dataclass
class Window:
    """A bounded holdout slice of one accepted batch, and the concept it was judged to belong to."""

    batch: str
    concept: int


@dataclass
class Step:
    """One row of the matrix: the model in service after a batch, and its accuracy on each window."""

    batch: str
    version: int | None
    concept: int
    accuracy: dict[str, float]


@dataclass
class AccuracyMatrix:
    """R[i, j] over the kept windows; one row per accepted batch, at most `max_windows` of each."""

    windows: list[Window]
    steps: list[Step]

    @classmethod
    def empty(cls) -> AccuracyMatrix:
        return cls([], [])

    def array(self) -> np.ndarray:
        """The matrix as numbers, NaN where unknown."""
        return np.array([[s.accuracy.get(w.batch, np.nan) for w in self.windows] for s in self.steps],
                        dtype=float).reshape(len(self.steps), len(self.windows))

    def concept_columns(self, concept: int) -> list[int]:
        return [j for j, w in enumerate(self.windows) if w.concept == concept]

    def extended(self, window: Window, step: Step) -> AccuracyMatrix:
        """A new matrix with one more window and the model in service after it (a batch processed
        again replaces its earlier window and row)."""
        keep = [i for i, w in enumerate(self.windows) if w.batch != window.batch]
        return AccuracyMatrix([self.windows[i] for i in keep] + [window],
                              [self.steps[i] for i in keep] + [step])

    def last_in(self, concept: int) -> AccuracyMatrix:
        """The same matrix with its last window and last row (the batch just added, the model after
        it) belonging to `concept`."""
        *windows, window = self.windows
        *steps, step = self.steps
        return AccuracyMatrix([*windows, Window(window.batch, concept)],
                              [*steps, Step(step.batch, step.version, concept, step.accuracy)])

    def metrics(self, metric: Any = None) -> LifelongMetrics:
        """Metrics of the last row's model; the concept ones over the windows of its concept; transfer
        and forgetting in `metric`'s utility (accuracy's when None: the values themselves)."""
        values = self.array()
        utility = None if metric is None else np.vectorize(metric.utility, otypes=[float])(values) \
            if values.size else values
        return LifelongMetrics.of(values, self.concept_columns(self.steps[-1].concept), utility)

    def concepts(self) -> set[int]:
        return {w.concept for w in self.windows} | {s.concept for s in self.steps}

    def keep_last(self, max_windows: int) -> list[str]:
        """Drop the oldest windows beyond `max_windows` with their rows; returns the dropped batches."""
        dropped = [w.batch for w in self.windows[:-max_windows]] if len(self.windows) > max_windows else []
        self.windows = self.windows[len(dropped):]
        self.steps = self.steps[len(dropped):]
        for step in self.steps:
            for batch in dropped:
                step.accuracy.pop(batch, None)
        return dropped

    def to_dict(self) -> dict:
        return {"windows": [vars(w) for w in self.windows], "steps": [vars(s) for s in self.steps]}

    @classmethod
    def from_dict(cls, data: dict) -> AccuracyMatrix:
        return cls([Window(**w) for w in data["windows"]], [Step(**s) for s in data["steps"]])

    def table(self) -> pd.DataFrame:
        """Rows: model in service after each batch; columns: the windows' batches."""
        index = [f"{s.batch} (v{s.version})" if s.version else s.batch for s in self.steps]
        return pd.DataFrame(self.array(), index=index, columns=[w.batch for w in self.windows])
