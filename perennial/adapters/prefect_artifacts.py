"""Prefect artifacts adapter: what a person reads about a cycle in the Prefect UI, and the events it emits."""

from __future__ import annotations

import re

from perennial.adapters import prefect_events as events
from perennial.core.metrics import metric_named_or_accuracy
from perennial.core.state import AWAITING
from perennial.core.types import Action, CycleRecord, DriftResult, pct


def cycle_markdown(model: str, record: CycleRecord) -> str:
    """A short human summary of one cycle, its values in the metric the model is judged by."""
    m = metric_named_or_accuracy(record.metric)
    name = record.metric.replace("_", " ")
    lines = [
        f"# {model}: `{record.batch}` -> **{record.decision}**",
        "",
        f"**Why:** {record.reason}",
        "",
        f"| rows | validation | drift share | champion {name} before | challenger {name} "
        "| registered version | champion after |",
        "|---|---|---|---|---|---|---|",
        f"| {record.rows} | {record.validation} | {pct(record.drift_share, 1)} "
        f"| {m.format(record.champion_accuracy_before, 1)} | {m.format(record.challenger_accuracy, 1)} "
        f"| {record.model_version or '-'} | {record.champion_version_after or '-'} |",
    ]
    if record.candidates:
        lines += ["", f"| candidate | holdout {name} | forgetting | rows | train s (CPU) | |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {c['kind']} | {m.format(c['accuracy'], 1)} | {m.format_gap(c['forgetting'], 1)} "
                  f"| {c['rows']:,} "
                  f"| {c['train_seconds']:.2f} ({c['train_cpu_seconds']:.2f}) "
                  f"| {'chosen' if c['chosen'] else ''} |" for c in record.candidates]
    lines += labels_markdown(record, m)
    if record.promotion:
        lines += ["", f"**Promotion:** {record.promotion}"]
    if record.release_reason:
        lines += ["", f"**Released** by a user: {record.release_reason}"]
    if record.shifts:
        lines += ["", "**Shifted** (recorded, not rejecting):", *(f"- {shift}" for shift in record.shifts)]
    if record.drifted_columns:
        lines += ["", "Drifted columns: " + ", ".join(f"`{c}`" for c in record.drifted_columns)]
    if record.quarantined_to:
        lines += ["", f"Quarantined to `{record.quarantined_to}`"]
    return "\n".join(lines)


def labels_markdown(record: CycleRecord, m) -> list[str]:
    """Labels that arrive later: the estimate made when the batch was served, and its labels so far."""
    lines = []
    if record.estimate:
        e = record.estimate
        alarm = " — **alarm**: a drop beyond the band" if e.get("alarm") else ""
        lines += ["", f"**Estimated {e['metric']}** when served without labels: {m.format(e['value'], 1)} "
                  f"[{m.format(e['low'], 1)}, {m.format(e['high'], 1)}] ({e['method']}){alarm}"]
    if record.prediction_drift:
        p = record.prediction_drift
        lines += ["", f"Prediction drift: {'yes' if p['drifted'] else 'no'} ({p['method']} {p['score']:.3g})"]
    if record.labels and record.labels.get("labelled"):
        seen = record.labels
        lines += ["", f"**Labels**: {seen['labelled']:,} of {seen['rows']:,} rows "
                  f"({pct(seen['coverage'], 1)}); class mix {seen.get('class_mix')} against predicted "
                  f"{seen.get('predicted_mix')}"]
    return lines


def artifact_key(model: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-")


def link_report(model: str, page: str, mlflow_location: str | None) -> None:
    """A link to the model's report page (rewritten after every cycle)."""
    from prefect.artifacts import create_link_artifact

    where = f"; in MLflow: {mlflow_location}" if mlflow_location else ""
    create_link_artifact(page, link_text=f"Report page of {model}", key=f"{artifact_key(model)}-report",
                         description=f"The model's life on one page, as of this cycle{where}")


def publish_cycle(model: str, record: CycleRecord, drift: DriftResult | None,
                  mlflow_link: str | None) -> None:
    """Markdown summary, per-feature drift table and MLflow run link as Prefect artifacts."""
    key = artifact_key(model)
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

    create_markdown_artifact(cycle_markdown(model, record), key=f"{key}-cycle",
                             description=f"{record.batch}: {record.decision}")
    if drift is not None:
        create_table_artifact(
            [{"column": f.column, "method": f.method, "score": round(f.score, 6),
              "threshold": f.threshold, "drifted": f.drifted} for f in drift.features],
            key=f"{key}-drift", description=f"Per-feature drift of {record.batch}")
    if mlflow_link:
        create_link_artifact(mlflow_link, link_text=f"MLflow run of {record.batch}", key=f"{key}-mlflow-run")
    if record.decision is Action.REJECT:
        events.emit(events.BATCH_REJECTED, model, {
            "batch": record.batch, "reason": record.reason, "quarantined_to": record.quarantined_to,
            "champion_accuracy": record.champion_accuracy_before, "metric": record.metric,
            "champion_version": record.champion_version_after})
    if record.decision is Action.AWAIT_LABELS and record.status == AWAITING:
        events.emit(events.PERFORMANCE_ESTIMATED, model, {
            "batch": record.batch, "metric": record.metric, "estimate": record.estimate,
            "alarm": bool(record.estimate and record.estimate.get("alarm")), "reason": record.reason,
            "drift_share": record.drift_share, "prediction_drift": record.prediction_drift,
            "champion_version": record.champion_version_after})
    if record.promoted:
        events.emit(events.MODEL_PROMOTED, model, {
            "version": record.model_version, "batch": record.batch, "decision": record.decision,
            "reason": record.promotion})
