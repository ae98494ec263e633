"""Labelled streams with known drift positions, cut into batches (part A of the benchmark)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from perennial import streams

TARGET = "label"


@dataclass
class Scenario:
    name: str
    description: str
    batches: list[pd.DataFrame]
    # (first, last) batch index of each drift: equal for an abrupt change, a span for gradual ones.
    drifts: list[tuple[int, int]]
    synthetic: bool = True
    # The ground-truth concept of each batch; None when the concept moves continuously.
    concepts: list[int] | None = None

    @property
    def no_drift(self) -> bool:
        return not self.drifts


def _sea_quarters(name: str, description: str, concepts: tuple[int, ...], rows: int, n: int,
                  rng: np.random.Generator) -> Scenario:
    """SEA with an abrupt change at each quarter of the stream, quarter k in concept `concepts[k]`."""
    cut = [n * k // 4 for k in range(1, 4)]
    concept = [concepts[sum(i >= c for c in cut)] for i in range(n)]
    return Scenario(name, description, [streams.sea(rows, c, rng) for c in concept], [(c, c) for c in cut],
                    concepts=concept)


def sea_abrupt(rows: int, n: int, rng: np.random.Generator) -> Scenario:
    """SEA concepts 0 -> 1 -> 2 -> 3, each for a quarter of the stream."""
    description = "SEA, abrupt changes of threshold 8 -> 9 -> 7 -> 9.5 (10% label noise)"
    return _sea_quarters("sea-abrupt", description, (0, 1, 2, 3), rows, n, rng)


def agrawal_gradual(rows: int, n: int, rng: np.random.Generator) -> Scenario:
    """Agrawal function 1 -> 2; in the transition each row follows function 2 with rising probability."""
    start, span = n // 3, max(2, n // 4)
    batches = []
    for i in range(n):
        p_new = float(np.clip((i - start + 1) / (span + 1), 0, 1))
        x = streams.agrawal_features(rows, rng)
        y = np.where(rng.random(rows) < p_new, streams.agrawal_label(x, 2), streams.agrawal_label(x, 1))
        flip = rng.random(rows) < 0.05
        y[flip] = 1 - y[flip]
        # Education level and zip code are categories in real loan data.
        batches.append(
            x.assign(elevel="e" + x["elevel"].astype(str), zipcode="z" + x["zipcode"].astype(str), label=y)
        )
    return Scenario(
        "agrawal-gradual",
        f"Agrawal F1 -> F2 mixed row by row over {span} batches (5% noise)",
        batches,
        [(start, start + span - 1)],
    )


def hyperplane_incremental(rows: int, n: int, rng: np.random.Generator) -> Scenario:
    """A 10-d hyperplane that starts turning a little every batch after the first quarter."""
    weights = rng.random(10)
    direction = rng.choice([-1.0, 1.0], size=10)
    start = n // 4
    batches = []
    for i in range(n):
        if i >= start:
            weights = weights + 0.15 * direction  # steady motion in one direction: incremental drift
        batches.append(streams.hyperplane(rows, weights, rng))
    return Scenario(
        "hyperplane-incremental",
        f"Rotating 10-d hyperplane, weights moving every batch from batch {start} (5% noise)",
        batches,
        [(start, n - 1)],
    )


def recurring(rows: int, n: int, rng: np.random.Generator) -> Scenario:
    """Two SEA concepts taking turns: A -> B -> A -> B."""
    return _sea_quarters("recurring", "SEA threshold 7 (A) and 9.5 (B) taking turns: A -> B -> A -> B",
                         (2, 3, 2, 3), rows, n, rng)


def no_drift(rows: int, n: int, rng: np.random.Generator) -> Scenario:
    return Scenario(
        "no-drift",
        "SEA concept 0 throughout (control)",
        [streams.sea(rows, 0, rng) for _ in range(n)],
        [],
        concepts=[0] * n,
    )


def phishing(n: int) -> Scenario:
    """river's bundled Phishing dataset (1,250 web pages) in arrival order, as a real no-drift stream."""
    from river import datasets

    rows = [{**x, TARGET: int(y)} for x, y in datasets.Phishing()]
    frame = pd.DataFrame(rows)
    edges = np.linspace(0, len(frame), n + 1).astype(int)
    return Scenario(
        "phishing",
        f"river's Phishing dataset, {len(frame)} rows in {n} batches",
        [frame.iloc[a:b].reset_index(drop=True) for a, b in zip(edges[:-1], edges[1:], strict=True)],
        [],
        synthetic=False,
        concepts=[0] * n,
    )


def all_scenarios(rows: int, batches: int, seed: int = 42) -> list[Scenario]:
    rng = np.random.default_rng(seed)
    return [
        sea_abrupt(rows, batches, rng),
        agrawal_gradual(rows, batches, rng),
        hyperplane_incremental(rows, batches, rng),
        recurring(rows, batches, rng),
        no_drift(rows, batches, rng),
        phishing(10),
    ]
