"""Challenger against champion on the same holdout rows of the new batch, and the champion on a
rejected batch (monitoring goes on when learning stops)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from perennial.core.schema import features_frame, labels
from perennial.core.types import Batch, Champion, ChampionScore, Evaluation, Schema

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline


def hits(model: Pipeline, frame: pd.DataFrame, schema: Schema) -> np.ndarray:
    """Which rows' label the model predicts (booleans, in row order)."""
    predicted = pd.Series(model.predict(features_frame(frame, schema)), index=frame.index)
    return (predicted.astype(str) == labels(frame, schema.target)).to_numpy(dtype=bool)


def accuracy(model: Pipeline, frame: pd.DataFrame, schema: Schema) -> float:
    """Share of rows whose label the model predicts."""
    return float(hits(model, frame, schema).mean())


def paired_noise(a: np.ndarray, b: np.ndarray, standard_errors: float = 2.0) -> float:
    """`standard_errors` standard errors of the accuracy difference of two models scored on the same
    rows (`hits` of each): only the rows where they disagree count, so it is much tighter than
    comparing two accuracies measured on different rows."""
    diff = a.astype(float) - b.astype(float)
    return standard_errors * float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 1.0


def evaluate(challenger: Pipeline, champion: Champion | None, holdout: pd.DataFrame,
             schema: Schema) -> Evaluation:
    """Accuracy of both models on the holdout rows, and which rows the challenger got right."""
    challenger_hits = hits(challenger, holdout, schema)
    return Evaluation(
        challenger_accuracy=float(challenger_hits.mean()),
        challenger_hits=challenger_hits,
        champion_accuracy=accuracy(champion.model, holdout, schema) if champion else None,
        holdout_rows=len(holdout),
    )


def labelled_inputs(frame: pd.DataFrame, schema: Schema) -> tuple[pd.DataFrame, pd.Series]:
    """The rows of a possibly broken batch that have a label, as model inputs and labels: a missing
    feature column counts as all-missing values, an unparseable number as a missing one."""
    rows = frame[frame[schema.target].notna()]
    missing = {name: np.nan for name in schema.features if name not in rows}
    return features_frame(rows.assign(**missing), schema), labels(rows, schema.target)


def score_rejected(champion: Champion | None, batch: Batch, schema: Schema) -> ChampionScore | None:
    """The champion's accuracy on a rejected batch's labelled rows (an unseen label counts as wrong);
    None without a champion. A champion that cannot predict on the batch gives no accuracy."""
    if champion is None:
        return None
    X, y = labelled_inputs(batch.frame, schema)
    if X.empty:
        return ChampionScore(champion.version, None, 0)
    try:
        predicted = pd.Series(champion.model.predict(X), index=X.index).astype(str)
    except Exception as exc:  # whatever the model raises, a rejected batch must not crash the cycle
        return ChampionScore(champion.version, None, len(X), f"{type(exc).__name__}: {exc}".splitlines()[0])
    return ChampionScore(champion.version, float((predicted == y).mean()), len(X))
