"""Evidently adapter and the test-then-train metric: how far a batch moved from the champion's data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from perennial.core.config import DriftConfig
from perennial.core.evaluation import outputs
from perennial.core.files import place_atomically
from perennial.core.metrics import Metric
from perennial.core.sampling import batch_seed, uniform_rows
from perennial.core.schema import features_frame, target_values
from perennial.core.types import Batch, Champion, DriftResult, FeatureDrift, Reference, Schema


def evidently_drift(current: pd.DataFrame, reference: pd.DataFrame, schema: Schema,
                    cfg: DriftConfig, html_path: Path | None, batch: str | None = None) -> DriftResult:
    """Per-column drift with Evidently's default method for each column type; the snapshot is named
    after the batch (its run in the model's Evidently workspace)."""
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
        name=batch, metadata={"batch": batch} if batch else None, tags=["perennial"],
    )
    if html_path is not None:
        html = snapshot.get_html_str(as_iframe=False).encode()  # what save_html writes, placed whole
        place_atomically(html_path, lambda out: out.write(html))

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
    return DriftResult(features=features, drift_share=_share(features), report_html=html_path,
                       evidently_run=snapshot)


def _share(features: list[FeatureDrift]) -> float:
    """The fraction of drifted features."""
    return sum(f.drifted for f in features) / len(features) if features else 0.0


def confirm_borderline(drift: DriftResult, frame: pd.DataFrame, reference: pd.DataFrame, schema: Schema,
                       cfg: DriftConfig) -> None:
    """Recompute on every row of `frame` the columns whose sampled score is within `recheck_margin`
    of the threshold, with Evidently's own test for the column (the one its report chose) but
    without the report's cost."""
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    borderline = {f.column: f for f in drift.features if abs(f.score - f.threshold) <= cfg.recheck_margin}
    if not borderline:
        return
    current = features_frame(frame, Schema({c: schema.features[c] for c in borderline}, schema.target,
                                           schema.classes))
    for column, feature in borderline.items():
        kind = ColumnType.Categorical if schema.features[column] != "numeric" else ColumnType.Numerical
        ref, cur = reference[column].dropna(), current[column].dropna()
        result = get_stattest(ref, cur, kind, cfg.method)(ref, cur, kind, cfg.threshold)
        feature.score, feature.drifted = float(result.drift_score), bool(result.drifted)
        feature.method += " (every row)"
    drift.drift_share = _share(drift.features)


def batch_drift(batch: Batch, reference: pd.DataFrame, schema: Schema, cfg: DriftConfig,
                html_path: Path | None) -> DriftResult:
    """Drift of a batch: a large one through a uniform sample (the default scores are distances,
    which do not grow with the sample), columns near their threshold confirmed on every row."""
    sample = uniform_rows(batch.frame, cfg.sample_rows, batch_seed(batch.id))
    drift = evidently_drift(features_frame(sample, schema), reference, schema, cfg, html_path, batch.id)
    if len(sample) < batch.rows:
        confirm_borderline(drift, batch.frame, reference, schema, cfg)
    return drift


def measure_drift(batch: Batch, schema: Schema, champion: Champion, reference: Reference, cfg: DriftConfig,
                  html_path: Path | None, metric: Metric) -> DriftResult:
    """Feature drift against the champion's reference data, and the champion's metric on every row
    (to be judged against `reference`, the value recent models reached) with its standard error."""
    drift = batch_drift(batch, features_frame(champion.reference, schema), schema, cfg, html_path)
    y = target_values(batch.frame, schema).to_numpy()
    out = outputs(champion.model, batch.frame, schema, metric)
    drift.metric, drift.champion_accuracy = metric, metric.value(y, out)
    drift.champion_error = metric.standard_error(y, out)  # its band (`Metric.drop_noise`)
    drift.reference = reference
    drift.reference_accuracy, drift.reference_rows = reference.accuracy, reference.rows or None
    drift.batch_rows = batch.rows
    return drift


def prediction_drift(batch: Batch, schema: Schema, champion: Champion, cfg: DriftConfig) -> FeatureDrift:
    """Drift of the champion's predictions on the batch against its predictions on its reference data,
    with Evidently's default test for their type: what a batch without labels still shows of the
    model's behaviour."""
    sample = uniform_rows(batch.frame, cfg.sample_rows, batch_seed(batch.id))
    kind = "numeric" if schema.regression else "categorical"
    frames = [pd.DataFrame({"prediction": predictions(champion.model, rows, schema)})
              for rows in (sample, champion.reference)]
    drift = evidently_drift(frames[0], frames[1], Schema({"prediction": kind}, schema.target, schema.classes),
                            cfg, None)
    return drift.features[0]


def predictions(model: object, frame: pd.DataFrame, schema: Schema) -> pd.Series:
    """The model's predictions on the rows: labels as text (classification) or numbers."""
    predicted = model.predict(features_frame(frame, schema))
    return pd.Series(predicted).astype(float if schema.regression else str)
