"""What a cycle leaves behind: Prefect artifacts for people, a ledger line for the next cycle."""

from __future__ import annotations

import re
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from perennial import failpoints
from perennial.config import Settings
from perennial.lifelong import AccuracyMatrix
from perennial.state import STARTED, StateChange, StateStore
from perennial.types import (
    Batch,
    Challenger,
    Champion,
    ChampionScore,
    CycleRecord,
    Decision,
    DriftResult,
    Promotion,
    ValidationResult,
)
from tasks import events
from tasks.registry import log_champion_score, log_lifelong, run_url


def cycle_record(batch: Batch, validation: ValidationResult, drift: DriftResult | None,
                 decision: Decision, champion: Champion | None, run_id: str) -> CycleRecord:
    """The ledger line of a cycle as known once decided; adapting fills in the model fields."""
    return CycleRecord(
        batch=batch.id, path=str(batch.path), rows=batch.rows,
        validation="passed" if validation.success else "failed",
        drift_share=drift.drift_share if drift else None,
        champion_accuracy_before=drift.champion_accuracy if drift else None,
        decision=decision.action.value, reason=decision.reason, supersedes=decision.supersedes, run_id=run_id,
        window_batches=decision.window_batches, reuse_version=decision.reuse_version,
        trigger=decision.trigger.value, champion_version_before=champion.version if champion else None,
        champion_version_after=champion.version if champion else None,
        drifted_columns=drift.drifted_columns if drift else [],
        shifts=validation.shifts, shifted_columns=validation.shifted_columns, unusable=validation.unusable,
        release_reason=validation.release_reason,
    )


def with_release(decision: Decision, validation: ValidationResult) -> Decision:
    """A released batch's decision says so first: `released (<reason>): ...`."""
    if validation.release_reason is None:
        return decision
    return replace(decision, reason=f"released ({validation.release_reason}): {decision.reason}")


def note_champion_score(settings: Settings, record: CycleRecord, score: ChampionScore | None) -> None:
    """A rejected batch's ledger line, reason and MLflow run gain the champion's accuracy on it."""
    if score is None:
        return
    record.champion_accuracy_before = score.accuracy
    record.reason = f"{record.reason}; {score.describe()}"
    if record.run_id:
        log_champion_score(settings, record.run_id, score.accuracy, record.reason)


def record_adaptation(record: CycleRecord, decision: Decision, promotion: Promotion, best: Challenger,
                      trials: list[Challenger]) -> None:
    """An adaptation's outcome on its ledger line: the decision as carried out, every candidate, and
    the cost of training and evaluating them all."""
    record.decision, record.reason = decision.action.value, decision.reason
    record.supersedes, record.trigger = decision.supersedes, decision.trigger.value
    record.model_version, record.promoted = promotion.version, promotion.promoted
    record.promotion, record.champion_version_after = promotion.reason, promotion.champion_version
    record.challenger_accuracy = best.evaluation.challenger_accuracy
    record.candidates = [asdict(t.result(chosen=t is best)) for t in trials]
    record.train_seconds = round(sum(t.train_seconds for t in trials), 3)
    record.train_cpu_seconds = round(sum(t.train_cpu_seconds for t in trials), 3)
    for t in trials:
        record.add_eval_cost(t.eval_seconds, t.eval_cpu_seconds)
    record.trained_rows = best.rows.rows
    record.status = "done"


def finish_step(settings: Settings, record: CycleRecord, matrix: AccuracyMatrix,
                accuracy_reached: float | None, heatmap_dir: Path | None) -> None:
    """Put the cycle's cost and lifelong metrics on its ledger line and in its MLflow run; with
    `heatmap_dir` (after a training), the accuracy matrix as a table and a heatmap too."""
    metrics = step_metrics(record, matrix, accuracy_reached)
    if not record.run_id:
        return
    heatmap = accuracy_heatmap(matrix, heatmap_dir / "accuracy_matrix.png") if heatmap_dir else None
    # The decision as carried out (an adaptation may keep another candidate than the policy's).
    tags = {"perennial.decision": record.decision, "perennial.reason": record.reason[:4000]}
    log_lifelong(settings, record.run_id, metrics, matrix if heatmap_dir else None, heatmap, tags)


def step_metrics(record: CycleRecord, matrix: AccuracyMatrix, accuracy_reached: float | None) -> dict:
    """The cost ledger and lifelong metrics of a cycle, also set on its ledger line."""
    lifelong = matrix.metrics()
    record.concept = matrix.steps[-1].concept
    record.avg_accuracy, record.bwt = lifelong.average_accuracy, lifelong.backward_transfer
    record.forgetting = lifelong.forgetting
    candidates = {f"candidate.{c['kind']}.{key}": c[key] for c in record.candidates
                  for key in ("accuracy", "forgetting", "train_cpu_seconds", "rows")}
    return {"train_seconds": record.train_seconds, "train_cpu_seconds": record.train_cpu_seconds,
            "eval_seconds": record.eval_seconds, "eval_cpu_seconds": record.eval_cpu_seconds,
            "trained_rows": record.trained_rows, "accuracy_reached": accuracy_reached,
            **lifelong.as_metrics(), **candidates}


def accuracy_heatmap(matrix: AccuracyMatrix, path: Path) -> Path:
    """R[i, j] as a heatmap: rows the model in service after each batch, columns the windows."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed: a PNG for the MLflow run
    import matplotlib.pyplot as plt

    table = matrix.table()
    size = max(4.0, 0.45 * len(table.columns) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.8))
    image = ax.imshow(100 * table.to_numpy(), cmap="viridis", vmin=50, vmax=100)
    ax.set_xticks(range(len(table.columns)), table.columns, rotation=90, fontsize=7)
    ax.set_yticks(range(len(table.index)), table.index, fontsize=7)
    ax.set_xlabel("window (holdout of batch)")
    ax.set_ylabel("model in service after batch")
    fig.colorbar(image, ax=ax, label="accuracy %")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def cycle_markdown(model: str, record: CycleRecord) -> str:
    """A short human summary of one cycle."""
    lines = [
        f"# {model}: `{record.batch}` -> **{record.decision}**",
        "",
        f"**Why:** {record.reason}",
        "",
        "| rows | validation | drift share | champion accuracy before | challenger accuracy "
        "| registered version | champion after |",
        "|---|---|---|---|---|---|---|",
        f"| {record.rows} | {record.validation} | {_fmt(record.drift_share)} "
        f"| {_fmt(record.champion_accuracy_before)} | {_fmt(record.challenger_accuracy)} "
        f"| {record.model_version or '-'} | {record.champion_version_after or '-'} |",
    ]
    if record.candidates:
        lines += ["", "| candidate | holdout accuracy | forgetting | rows | train s (CPU) | |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {c['kind']} | {_fmt(c['accuracy'])} | {_fmt(c['forgetting'])} | {c['rows']:,} "
                  f"| {c['train_seconds']:.2f} ({c['train_cpu_seconds']:.2f}) "
                  f"| {'chosen' if c['chosen'] else ''} |" for c in record.candidates]
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


@task(cache_policy=NO_CACHE)
def publish_cycle(model: str, record: CycleRecord, drift: DriftResult | None,
                  mlflow_link: str | None) -> None:
    """Markdown summary, per-feature drift table and MLflow run link as Prefect artifacts."""
    key = re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-")
    create_markdown_artifact(cycle_markdown(model, record), key=f"{key}-cycle",
                             description=f"{record.batch}: {record.decision}")
    if drift is not None:
        create_table_artifact(
            [{"column": f.column, "method": f.method, "score": round(f.score, 6),
              "threshold": f.threshold, "drifted": f.drifted} for f in drift.features],
            key=f"{key}-drift", description=f"Per-feature drift of {record.batch}")
    if mlflow_link:
        create_link_artifact(mlflow_link, link_text=f"MLflow run of {record.batch}", key=f"{key}-mlflow-run")
    if record.decision == "reject":
        events.emit(events.BATCH_REJECTED, model, {
            "batch": record.batch, "reason": record.reason, "quarantined_to": record.quarantined_to,
            "champion_accuracy": record.champion_accuracy_before,
            "champion_version": record.champion_version_after})
    if record.promoted:
        events.emit(events.MODEL_PROMOTED, model, {
            "version": record.model_version, "batch": record.batch, "decision": record.decision,
            "reason": record.promotion})


@task(cache_policy=NO_CACHE)
def record_intent(store: StateStore, record: CycleRecord) -> None:
    """Record the decision before any side effect: a run after a crash resumes it, not decides again."""
    store.append(replace(record, status=STARTED))
    failpoints.reached("decided")


@task(cache_policy=NO_CACHE)
def record_cycle(store: StateStore, record: CycleRecord, change: StateChange | None) -> None:
    """Commit the cycle's state with its ledger line; from here on the batch is never processed again."""
    store.commit(record, change)


def finish_cycle(model: str, settings: Settings, store: StateStore, record: CycleRecord,
                 drift: DriftResult | None = None, change: StateChange | None = None) -> CycleRecord:
    """Publish the cycle's artifacts and events, then commit its state and ledger line."""
    record.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    publish_cycle(model, record, drift, run_url(settings, record.run_id) if record.run_id else None)
    record_cycle(store, record, change)
    get_run_logger().info("%s -> %s (%s): %s", record.batch, record.decision, record.status, record.reason)
    return record
