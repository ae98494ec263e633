"""Challenger against champion on the same holdout rows of the new batch, and the champion on a
rejected batch (monitoring goes on when learning stops); always in the metric models are judged by."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from perennial.core.metrics import Metric
from perennial.core.schema import features_frame, target_values
from perennial.core.types import Batch, Champion, ChampionScore, Evaluation, Schema

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline


def outputs(model: Pipeline, frame: pd.DataFrame, schema: Schema, metric: Metric) -> np.ndarray:
    """What `metric` scores of the model on these rows (labels, probabilities or values)."""
    return metric.output_of(model, features_frame(frame, schema))


def score(model: Pipeline, frame: pd.DataFrame, schema: Schema, metric: Metric) -> float:
    """The metric of the model on these rows."""
    return metric.value(target_values(frame, schema).to_numpy(), outputs(model, frame, schema, metric))


def evaluate(challenger: Pipeline, champion: Champion | None, holdout: pd.DataFrame, schema: Schema,
             metric: Metric) -> Evaluation:
    """The metric of both models on the holdout rows, and the challenger's output on each row (candidates
    are compared row by row: paired)."""
    y = target_values(holdout, schema).to_numpy()
    out = outputs(challenger, holdout, schema, metric)
    return Evaluation(
        challenger_accuracy=metric.value(y, out),
        champion_accuracy=score(champion.model, holdout, schema, metric) if champion else None,
        holdout_rows=len(holdout),
        challenger_output=out,
        holdout_y=y,
    )


def labelled_inputs(frame: pd.DataFrame, schema: Schema) -> tuple[pd.DataFrame, pd.Series]:
    """The rows of a possibly broken batch that have a label, as model inputs and labels: a missing
    feature column counts as all-missing values, an unparseable number as a missing one."""
    rows = frame[frame[schema.target].notna()]
    if schema.regression:  # a value that is no number has no label either
        rows = rows[pd.to_numeric(rows[schema.target], errors="coerce").notna()]
    missing = {name: np.nan for name in schema.features if name not in rows}
    return features_frame(rows.assign(**missing), schema), target_values(rows, schema)


def score_rejected(champion: Champion | None, batch: Batch, schema: Schema,
                   metric: Metric) -> ChampionScore | None:
    """The champion's metric on a rejected batch's labelled rows (an unseen label counts as wrong);
    None without a champion or without labels (a batch served before its labels arrive). A champion
    that cannot predict on the batch gives no value."""
    if champion is None or schema.target not in batch.frame:
        return None
    X, y = labelled_inputs(batch.frame, schema)
    if X.empty:
        return ChampionScore(champion.version, None, 0, metric=metric)
    try:
        value = metric.score(champion.model, X, y.to_numpy())
    except Exception as exc:  # whatever the model raises, a rejected batch must not crash the cycle
        return ChampionScore(champion.version, None, len(X), f"{type(exc).__name__}: {exc}".splitlines()[0],
                             metric=metric)
    return ChampionScore(champion.version, value, len(X), metric=metric)
