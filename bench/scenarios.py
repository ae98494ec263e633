"""Labelled streams with known drift positions, cut into batches (part A of the benchmark)."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
import pandas as pd

from bench.user_model import TRUSTED_TYPES as USER_MODEL_TYPES
from perennial.app import streams

TARGET = "label"
# Every strategy's window: the batches a retrain learns from.
WINDOW_BATCHES = 3


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
    # What the scenario's Perennial config says (`config`): the target column, the task (None:
    # inferred from the target), the metric models are judged by (None: the task's default, accuracy
    # or mae) and its positive class, and the model: a preset family with its params, or the user's
    # own factory (`model.estimator`) with the skops types its saved model holds.
    target: str = TARGET
    task: str | None = None
    metric: str | None = None
    positive_class: str | None = None
    family: str = "hgb"
    params: dict[str, Any] = field(default_factory=lambda: {"max_iter": 100})
    estimator: str | None = None
    trusted_types: list[str] = field(default_factory=list)

    @property
    def no_drift(self) -> bool:
        return not self.drifts

    def config(self, window_batches: int = WINDOW_BATCHES) -> dict[str, Any]:
        """The scenario's Perennial config (as its YAML file holds it, less the name): the scenarios
        before metrics were configurable get the config they always had."""
        model: dict[str, Any] = {"family": self.family, "params": dict(self.params)}
        if self.task is not None:
            model["task"] = self.task
        if self.estimator is not None:
            model = {"estimator": self.estimator, "trusted_types": list(self.trusted_types),
                     **({"task": self.task} if self.task else {})}
        config: dict[str, Any] = {
            "data": {"source": "batches", "format": "parquet", "target": self.target},
            "model": model,
            "training": {"window_batches": window_batches},
        }
        policy = {k: v for k, v in (("metric", self.metric), ("positive_class", self.positive_class)) if v}
        if policy:
            config["policy"] = policy
        return config


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


# river's Agrawal functions (0-based; F2 and F7 in the paper's numbering) before and after the change.
LOAN_CONCEPTS = (1, 6)
LOAN_NULL_COLUMNS = ("salary", "commission")


def loan_nulls(rows: int, n: int, rng: np.random.Generator) -> Scenario:
    """Agrawal loan applicants whose salary and commission go missing more often as the concept changes.

    Rows come from river's Agrawal generator (a generator the package ships, nothing downloaded):
    function F2 (a salary band per age band) until batch n//3, then F7 (disposable income from
    salary, commission and loan), with 5% of the labels flipped. From the same batch on, salary and
    commission, the two columns F7 rests on most, are missing in 22% of the rows each instead of 15%
    (at random, independently). This is what a loan stream did when a new application form and a
    new lending rule arrived together: a null-rate rise that validation must record, not reject,
    on the very batches the model has to learn the new concept from. Education level, car make and
    zip code are strings and the numbers floats, as in real loan data.
    """
    from river.datasets import synth

    change = n // 3
    concepts = [int(i >= change) for i in range(n)]
    sources = [
        iter(synth.Agrawal(classification_function=f, seed=int(rng.integers(2**31)))) for f in LOAN_CONCEPTS
    ]
    batches = []
    for concept in concepts:
        frame = pd.DataFrame.from_records([{**x, TARGET: y} for x, y in islice(sources[concept], rows)])
        flip = rng.random(rows) < 0.05
        frame.loc[flip, TARGET] = 1 - frame.loc[flip, TARGET]
        numbers = ["salary", "commission", "age", "hvalue", "hyears", "loan"]
        frame[numbers] = frame[numbers].astype("float64")
        missing = 0.22 if concept else 0.15
        for column in LOAN_NULL_COLUMNS:
            frame.loc[rng.choice(rows, round(missing * rows), replace=False), column] = np.nan
        batches.append(frame.assign(
            elevel="level-" + frame["elevel"].astype(str),
            car="make-" + frame["car"].astype(str),
            zipcode="zip-" + frame["zipcode"].astype(str),
        ))
    return Scenario(
        "loan-nulls",
        f"Agrawal F2 -> F7 at batch {change}, salary and commission missing in 15% -> 22% of rows (5% noise)",
        batches,
        [(change, change)],
        concepts=concepts,
    )


def in_turn(frame: pd.DataFrame, pools: list[np.ndarray], visits: list[int], rows: int) -> list[pd.DataFrame]:
    """Batches of `rows` rows, batch i drawn from pool `visits[i]` (row positions in `frame`, already
    shuffled) where the previous draw from that pool stopped: without replacement."""
    taken = [0] * len(pools)
    batches = []
    for pool in visits:
        batches.append(frame.iloc[pools[pool][taken[pool]: taken[pool] + rows]].reset_index(drop=True))
        taken[pool] += rows
    return batches


# Shuttle's f1 in each season: winter around 40, summer from 48 on, outside winter's range widened by
# half its span on each side (37-44 -> 33.5-47.5). Rows with f1 of 45-47 or below 37 are never drawn.
SEASON_COLUMN = "f1"
SEASONS = ((37, 44), (48, np.inf))


def seasonal_shift(rows: int, n: int, rng: np.random.Generator) -> Scenario:
    """Real Shuttle sensor rows drawn season by season, one reading leaving its winter range in summer.

    Rows come from river's bundled Shuttle dataset (49,097 NASA shuttle sensor readings, 7% of them
    anomalies, label 1). The stream has four quarters, winter -> summer -> winter -> summer: each
    batch draws, without replacement, rows whose f1 lies in its season's band (37-44 in winter, 48 and
    above in summer), so every summer value lies outside the first winter's min..max widened by half
    its span on each side, the start of a new regime as a seasonal weather stream shows it, and
    winter comes back. P(y|x) stays that of the real data: a pure covariate shift, but one that
    matters, as summer brings the anomalies of high f1 that a winter model has hardly seen.
    `concepts` marks the seasons (0 winter, 1 summer), so forgetting is measured when winter
    returns. Batches have `rows` rows, or fewer when a season's band holds too few rows.
    """
    from river import datasets

    frame = pd.DataFrame([{**x, TARGET: int(y)} for x, y in datasets.Shuttle()])
    cut = [n * k // 4 for k in range(1, 4)]
    seasons = [sum(i >= c for c in cut) % 2 for i in range(n)]
    pools = [rng.permutation(np.flatnonzero(frame[SEASON_COLUMN].between(*band))) for band in SEASONS]
    rows = min(rows, *(len(pool) // max(1, seasons.count(s)) for s, pool in enumerate(pools)))
    batches = in_turn(frame, pools, seasons, rows)
    return Scenario(
        "seasonal-shift",
        f"river's Shuttle rows in seasons, f1 in 37-44 (winter) or >= 48 (summer, outside winter's range "
        f"widened by half its span): winter -> summer -> winter -> summer, {rows} rows per batch",
        batches,
        [(c, c) for c in cut],
        synthetic=False,
        concepts=seasons,
    )


# Bananas' first coordinate cut into four bands of equal rows: the regions batches are drawn from.
REGION_COLUMN, REGIONS = "1", 4


def regions(n: int, rng: np.random.Generator) -> Scenario:
    """Real rows drawn region by region, regions revisited: a covariate shift with a fixed relation.

    Rows come from river's bundled Bananas dataset (5,300 points of two banana-shaped classes in
    the plane). Sorted by their first coordinate and cut into four bands of equal rows, the bands
    are the regions; batch i draws, without replacement, rows of region i mod 4: every region is
    new for the first four batches, then each comes back. P(y|x) is the dataset's own everywhere, so
    one model of every region serves them all: what a housing stream does whose batches come from
    one region after another (the relation of price to features holding everywhere). `concepts`
    marks the regions, for forgetting measured when a region returns.
    """
    from river import datasets

    frame = pd.DataFrame([{**x, TARGET: int(y)} for x, y in datasets.Bananas()])
    band = pd.qcut(frame[REGION_COLUMN].rank(method="first"), REGIONS, labels=False).to_numpy()
    visits = [i % REGIONS for i in range(n)]
    pools = [rng.permutation(np.flatnonzero(band == r)) for r in range(REGIONS)]
    rows = min(len(pools[r]) // visits.count(r) for r in set(visits))
    batches = in_turn(frame, pools, visits, rows)
    return Scenario(
        "regions",
        f"river's Bananas rows region by region: four bands of its first coordinate, each new in turn, "
        f"then revisited; the class relation fixed; {rows} rows per batch",
        batches,
        [(i, i) for i in range(1, min(n, REGIONS))],
        synthetic=False,
        concepts=visits,
    )


# FriedmanDrift's target and the names of its ten features (x0-x4 matter, x5-x9 are noise).
FRIEDMAN_TARGET = "y"


def friedman_drift(rows: int, n: int, seed: int) -> Scenario:
    """A regression stream: river's FriedmanDrift with an abrupt change, later a gradual one.

    Ten features uniform in [0, 1], y = a Friedman function of five of them plus N(0, 1) noise.
    River's global drifts ('gsg' with no transition window, positions in rows) give three
    functions: F0 (y = 10 sin(pi x0 x1) + 20 (x2 - 0.5)^2 + 10 x3 + 5 x4), F1 and F2 (the same
    shape on other features in other roles). Two generators of the same seed draw the same rows and
    noise: the first switches F0 -> F1 abruptly at batch n//3, the second follows F2; from batch
    5n//8 each row follows F2 with a probability rising over n//4 batches (as agrawal-gradual mixes
    its functions), then every row does. Nothing is downloaded: the generator ships with river.
    """
    from river.datasets import synth

    abrupt, start, span = n // 3, 5 * n // 8, max(2, n // 4)
    span = min(span, n - start)
    total = n * rows
    old = synth.FriedmanDrift("gsg", position=(abrupt * rows, total + 1), transition_window=0, seed=seed)
    new = synth.FriedmanDrift("gsg", position=(1, 2), transition_window=0, seed=seed)
    rng = np.random.default_rng([seed, 1])
    records = list(zip(islice(old, total), islice(new, total), strict=True))
    batches = []
    for i in range(n):
        part = records[i * rows: (i + 1) * rows]
        frame = pd.DataFrame.from_records([{f"x{k}": v for k, v in x.items()} for (x, _), _ in part])
        p_new = float(np.clip((i - start + 1) / (span + 1), 0, 1))
        follows_new = rng.random(rows) < p_new
        y = np.where(follows_new, [y2 for _, (_, y2) in part], [y1 for (_, y1), _ in part])
        batches.append(frame.assign(**{FRIEDMAN_TARGET: y}))
    return Scenario(
        "friedman-drift",
        f"river's FriedmanDrift (regression, N(0,1) noise): F0 -> F1 abruptly at batch {abrupt}, F1 -> F2 "
        f"mixed row by row over {span} batches from batch {start}; judged by MAE",
        batches,
        [(abrupt, abrupt), (start, start + span - 1)],
        target=FRIEDMAN_TARGET,
        metric="mae",
    )


# Loan-to-income above which an applicant defaults, before the change; after it, young applicants
# (under 40) default from a lower ratio. Each rule marks about 4% of river's Agrawal applicants.
DEBT_RATIO_BEFORE, DEBT_RATIO_AFTER, YOUNG = 5.8, 4.5, 40
DEFAULT_NOISE = 0.005


def imbalanced_ap(rows: int, n: int, seed: int) -> Scenario:
    """A rare positive class (3-5% of rows) whose rule changes: loan defaults, judged by average
    precision, learnt by the user's own model (`bench.user_model`).

    Applicants are river's Agrawal rows (its generator's attributes; its labels are not used), every
    attribute a number. An applicant defaults (label 1) when the loan is more than 5.8 times the
    yearly income (salary + commission) until batch n//2, then when it is more than 4.5 times and
    the applicant is under 40: about 4% of rows each, 0.5% of the labels flipped (so 4-5%
    positives). A ratio of two columns is what trees split on poorly, so the user's model adds it
    as a feature (a FunctionTransformer of `bench.user_model.loan_to_income` before LightGBM).
    """
    from river.datasets import synth

    change = n // 2
    concepts = [int(i >= change) for i in range(n)]
    source = iter(synth.Agrawal(seed=seed))
    rng = np.random.default_rng([seed, 1])
    batches = []
    for concept in concepts:
        frame = pd.DataFrame.from_records([x for x, _ in islice(source, rows)]).astype("float64")
        ratio = frame["loan"] / (frame["salary"] + frame["commission"])
        label = (ratio > DEBT_RATIO_AFTER) & (frame["age"] < YOUNG) if concept else ratio > DEBT_RATIO_BEFORE
        y = label.to_numpy().astype(int)
        flip = rng.random(rows) < DEFAULT_NOISE
        y[flip] = 1 - y[flip]
        batches.append(frame.assign(**{TARGET: y}))
    return Scenario(
        "imbalanced-ap",
        f"river's Agrawal applicants, default (about 4% of rows) when loan > {DEBT_RATIO_BEFORE} x income, "
        f"from batch {change} when loan > {DEBT_RATIO_AFTER} x income under age {YOUNG} ({DEFAULT_NOISE:.1%} "
        "noise); judged by average precision; the user's own model (LightGBM after a derived "
        "loan-to-income feature)",
        batches,
        [(change, change)],
        concepts=concepts,
        task="binary",
        metric="average_precision",
        positive_class="1",
        estimator="bench.user_model:build",
        trusted_types=list(USER_MODEL_TYPES),
    )


def all_scenarios(rows: int, batches: int, seed: int = 42) -> list[Scenario]:
    rng = np.random.default_rng(seed)
    # The later scenarios draw from their own streams, so the earlier ones keep their batches.
    return [
        sea_abrupt(rows, batches, rng),
        agrawal_gradual(rows, batches, rng),
        hyperplane_incremental(rows, batches, rng),
        recurring(rows, batches, rng),
        no_drift(rows, batches, rng),
        loan_nulls(rows, batches, np.random.default_rng([seed, 1])),
        phishing(10),
        seasonal_shift(rows, batches, np.random.default_rng([seed, 2])),
        regions(batches, np.random.default_rng([seed, 3])),
        friedman_drift(rows, batches, seed + 4),
        imbalanced_ap(rows, batches, seed + 5),
    ]
