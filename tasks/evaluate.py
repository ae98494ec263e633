"""Challenger against champion on the same holdout rows of the new batch."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from sklearn.pipeline import Pipeline

from perennial.schema import features_frame, labels
from perennial.types import Champion, Evaluation, Schema


def accuracy(model: Pipeline, frame: pd.DataFrame, schema: Schema) -> float:
    """Share of rows whose label the model predicts."""
    predicted = pd.Series(model.predict(features_frame(frame, schema)), index=frame.index)
    return float((predicted.astype(str) == labels(frame, schema.target)).mean())


@task(cache_policy=NO_CACHE)
def evaluate(challenger: Pipeline, champion: Champion | None, holdout: pd.DataFrame,
             schema: Schema) -> Evaluation:
    """Accuracy of both models on the holdout rows."""
    return Evaluation(
        challenger_accuracy=accuracy(challenger, holdout, schema),
        champion_accuracy=accuracy(champion.model, holdout, schema) if champion else None,
        holdout_rows=len(holdout),
    )
