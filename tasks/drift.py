"""Evidently adapter and test-then-train accuracy: how far a batch moved from the champion's data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from perennial.config import DriftConfig
from perennial.schema import features_frame
from perennial.types import Batch, Champion, DriftResult, FeatureDrift, Schema
from tasks.evaluate import accuracy


def evidently_drift(current: pd.DataFrame, reference: pd.DataFrame, schema: Schema,
                    cfg: DriftConfig, html_path: Path | None) -> DriftResult:
    """Per-column drift with Evidently's default method for each column type."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift

    numeric = [c for c in schema.columns("numeric") if reference[c].notna().any()]
    categorical = [c for c in schema.columns("categorical") + schema.columns("boolean")
                   if reference[c].notna().any()]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    columns = numeric + categorical
    report = Report(
        [DriftedColumnsCount(columns=columns),
         *(ValueDrift(column=c, method=cfg.method, threshold=cfg.threshold) for c in columns)],
        include_tests=True,
    )
    snapshot = report.run(
        current_data=Dataset.from_pandas(current[columns], data_definition=definition),
        reference_data=Dataset.from_pandas(reference[columns], data_definition=definition),
    )
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))

    # Match results by metric id and column name, never by position in the report.
    result = snapshot.dict()
    scores = {m["id"]: m for m in result["metrics"]}
    features = []
    for test in result["tests"]:
        params = test.get("metric_config", {}).get("params", {})
        if not params.get("type", "").endswith("ValueDrift"):
            continue
        metric = scores[test["metric_config"]["metric_id"]]
        features.append(FeatureDrift(
            column=params["column"], method=str(params.get("method")), score=float(metric["value"]),
            threshold=float(params["threshold"]), drifted=test["status"] == "FAIL"))
    share = sum(f.drifted for f in features) / len(features) if features else 0.0
    return DriftResult(features=features, drift_share=share, report_html=html_path)


@task(cache_policy=NO_CACHE)
def measure_drift(batch: Batch, schema: Schema, champion: Champion, cfg: DriftConfig,
                  html_path: Path | None) -> DriftResult:
    """Feature drift against the champion's reference data, and the champion's accuracy on the batch."""
    current = features_frame(batch.frame, schema)
    reference = features_frame(champion.reference, schema)
    drift = evidently_drift(current, reference, schema, cfg, html_path)
    drift.champion_accuracy = accuracy(champion.model, batch.frame, schema)
    drift.reference_accuracy = champion.holdout_accuracy
    return drift
