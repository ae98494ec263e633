"""One MLflow run per batch: the decision, drift and validation, the champion's score, the lifelong
metrics and cost."""

from __future__ import annotations

import tempfile
from pathlib import Path

from perennial.adapters.mlflow_registry.connection import Tag, client, experiment_id, outages
from perennial.core.config import PipelineConfig, Settings
from perennial.core.lifelong import AccuracyMatrix
from perennial.core.state import batch_key
from perennial.core.types import Decision, DriftResult, ValidationResult


def _metric_key(column: str) -> str:
    return "drift." + "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in column)


def log_cycle(config: PipelineConfig, settings: Settings, batch_id: str, rows: int,
              validation: ValidationResult, drift: DriftResult | None, decision: Decision,
              attempt: int = 0) -> str:
    """One MLflow run per batch and attempt (times the batch was released before): decision, drift
    metrics, validation result and drift report. A rerun after a crash reuses the attempt's run."""
    import mlflow

    exp = experiment_id(config.name, settings)
    key = {Tag.BATCH: batch_id, Tag.BATCH_KEY: batch_key(batch_id),
           Tag.ATTEMPT: str(int(attempt))}
    with outages(settings):
        found = client(settings).search_runs(
            [exp], filter_string=f"tags.`perennial.batch_key` = '{key['perennial.batch_key']}' AND "
            f"tags.`perennial.attempt` = '{key['perennial.attempt']}'", max_results=1)
    name = f"{batch_id} {decision.action.value}"
    # The key tags go in with the new run, so a crash at any later point still finds it.
    start = (mlflow.start_run(run_id=found[0].info.run_id, run_name=name) if found
             else mlflow.start_run(experiment_id=exp, run_name=name, tags=key))
    with start as run:
        mlflow.set_tags({**key, Tag.DECISION: decision.action.value,
                         Tag.TRIGGER: decision.trigger.value,
                         Tag.REASON: decision.reason[:4000],
                         Tag.SHIFTED_COLUMNS: ",".join(validation.shifted_columns)[:4000]})
        if validation.release_reason is not None:
            mlflow.set_tag(Tag.RELEASE_REASON, validation.release_reason[:4000])
        params = {"batch": batch_id, "decision": decision.action.value,
                  "window_batches": decision.window_batches, "family": config.model.family}
        # Params cannot change once logged; a reused run's tags carry the rerun's decision.
        mlflow.log_params({k: v for k, v in params.items() if not found or k not in found[0].data.params})
        metrics: dict[str, float] = {"rows": rows, "validation_success": float(validation.success),
                                     "validation_shifts": len(validation.shifts)}
        if drift is not None:
            metrics["drift_share"] = drift.drift_share
            metrics.update({_metric_key(f.column): f.score for f in drift.features})
            if drift.champion_accuracy is not None:  # named by the metric: champion_rmse_before, rmse_drop
                name = drift.judged_by.name
                metrics[f"champion_{name}_before"] = drift.champion_accuracy
                metrics[f"{name}_drop"] = drift.accuracy_drop or 0.0
            mlflow.log_dict({"drift_share": drift.drift_share, "features": [vars(f) for f in drift.features]},
                            "drift/drift.json")
            if drift.report_html is not None and Path(drift.report_html).exists():
                mlflow.log_artifact(str(drift.report_html), "drift")
        mlflow.log_metrics(metrics)
        mlflow.log_dict({"success": validation.success, "failures": validation.failures,
                         "shifts": validation.shifts, "shifted_columns": validation.shifted_columns,
                         "release_reason": validation.release_reason,
                         "great_expectations": validation.report}, "validation/validation.json")
        return run.info.run_id


def log_champion_score(settings: Settings, run_id: str, accuracy: float | None, reason: str,
                       metric: str = "accuracy") -> None:
    """A rejected batch's run gains the champion's metric on it and the reason that states it."""
    mlflow_client = client(settings)
    if accuracy is not None:
        mlflow_client.log_metric(run_id, f"champion_{metric}_before", accuracy)
    mlflow_client.set_tag(run_id, Tag.REASON, reason[:4000])


def log_lifelong(settings: Settings, run_id: str, metrics: dict[str, float], matrix: AccuracyMatrix | None,
                 heatmap: Path | None, tags: dict[str, str] | None = None) -> None:
    """Cost and lifelong metrics of a cycle in its run, with `tags`; after a training, the accuracy
    matrix too."""
    import mlflow

    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({k: v for k, v in metrics.items() if v is not None})
        mlflow.set_tags(tags or {})
        if matrix is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "accuracy_matrix.csv"
                matrix.table().to_csv(path, float_format="%.4f")
                mlflow.log_artifact(str(path), "lifelong")
            if heatmap is not None:
                mlflow.log_artifact(str(heatmap), "lifelong")


def log_labels(settings: Settings, run_id: str, estimate: dict | None, labels: dict | None,
               prediction_drift: dict | None) -> None:
    """A batch's run gains what labels arriving later add: the metric estimated when it was served
    without labels (`estimated_<metric>` and its band), the drift of the champion's predictions, and,
    once labels came, their coverage (the run of the cycle they led to is the same run)."""
    metrics: dict[str, float] = {}
    if estimate is not None:
        name = estimate["metric"]
        metrics |= {f"estimated_{name}": estimate["value"], f"estimated_{name}_low": estimate["low"],
                    f"estimated_{name}_high": estimate["high"], "estimate_alarm": float(estimate["alarm"])}
    if prediction_drift is not None:
        metrics |= {"prediction_drift_score": prediction_drift["score"],
                    "prediction_drifted": float(prediction_drift["drifted"])}
    if labels is not None:
        metrics |= {"label_coverage": labels["coverage"], "labelled_rows": labels["labelled"]}
    finite = {k: float(v) for k, v in metrics.items() if v is not None and v == v}
    if finite:
        mlflow_client = client(settings)
        for key, value in finite.items():
            mlflow_client.log_metric(run_id, key, value)


REPORT_FOLDER = "report"


def log_report(name: str, settings: Settings, page: Path) -> str | None:
    """The model's report page on the run of its latest registered version (replacing the page the
    run had), the version tagged with where it is; returns that location (None: no version yet)."""
    mlflow_client = client(settings)
    # The name may sit in a filter: PipelineConfig.name's pattern allows no quote.
    latest = mlflow_client.search_model_versions(f"name = '{name}'", max_results=1,
                                                 order_by=["version_number DESC"])
    if not latest or not latest[0].run_id:
        return None
    version = latest[0]
    mlflow_client.log_artifact(version.run_id, str(page), REPORT_FOLDER)
    where = f"runs:/{version.run_id}/{REPORT_FOLDER}/{page.name}"
    mlflow_client.set_model_version_tag(name, version.version, Tag.REPORT, where)
    return where
