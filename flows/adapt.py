"""Adaptation: train a challenger for a batch, compare, register, promote (check-and-set).

`training_cycle` calls `adapt_batch` in-process (embedded mode); on a Prefect server the `adapt`
flow runs it when a `perennial.drift.detected` event arrives (deployed mode).
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow

from perennial.config import PipelineConfig, Settings, load_config
from perennial.state import StateStore
from perennial.types import Action, Batch, Champion, CycleRecord, Decision, Schema
from tasks.evaluate import evaluate
from tasks.load import load_batch, split_holdout
from tasks.registry import load_champion, promote, register
from tasks.report import finish_cycle
from tasks.train import train, training_rows


def adapt_batch(config: PipelineConfig, settings: Settings, store: StateStore, batch: Batch, schema: Schema,
                decision: Decision, champion: Champion | None, expected_champion: int | None,
                record: CycleRecord) -> None:
    """Train a challenger, compare it with the champion on held-out rows, register, promote."""
    history = [r for r in store.records() if r.batch != batch.id]
    train_idx, holdout_idx = split_holdout(batch.id, batch.rows, config.training.holdout_fraction,
                                           config.training.seed)
    rows, trained_on = training_rows(batch, train_idx, decision, history, config)
    wall, cpu = time.perf_counter(), time.process_time()  # process CPU: OpenMP threads count too
    challenger = train(decision, rows, champion, schema, config)
    record.train_seconds = round(time.perf_counter() - wall, 3)
    record.train_cpu_seconds = round(time.process_time() - cpu, 3)
    evaluation = evaluate(challenger, champion, batch.frame.iloc[holdout_idx], schema)
    reference = rows.sample(config.drift.reference_rows, seed=0)
    version = register(config, settings, record.run_id, challenger, batch, schema, decision, evaluation,
                       trained_on, reference, champion)
    promotion = promote(config, settings, version, evaluation, champion, expected_champion)
    store.save_schema(schema)
    record.model_version, record.promoted, record.promotion = version, promotion.promoted, promotion.reason
    record.challenger_accuracy = evaluation.challenger_accuracy
    record.champion_version_after = promotion.champion_version
    record.status = "done"


@flow(name="adapt")
def adapt(config_path: str, batch_ids: list[str], mode: str, reason: str = "",
          window_batches: int = 1, champion_version: int = 0) -> list[CycleRecord]:
    """Fine-tune or retrain on batches the monitor flagged; `champion_version` 0 means none."""
    config = load_config(config_path)
    settings = Settings()
    store = StateStore(settings.state_dir, config.name)
    decision = Decision(Action(mode), reason, window_batches)
    expected = champion_version or None
    records = {r.batch: r for r in store.records()}
    done = []
    for batch_id in batch_ids:
        record = records.get(batch_id)
        # Only batches the monitor validated can train; any system may ask for them (README: events).
        if record is None:
            raise ValueError(f"batch {batch_id} has not been monitored yet: `perennial ingest` it first")
        if record.decision == Action.REJECT:
            raise ValueError(f"batch {batch_id} was rejected ({record.reason}); it cannot train a model")
        # Registration is once per batch, so a redelivered event adds no second version.
        record.decision, record.reason = decision.action.value, decision.reason
        batch = load_batch(Path(record.path), config)
        champion = load_champion(config, settings)
        adapt_batch(config, settings, store, batch, store.schema(), decision, champion, expected, record)
        done.append(finish_cycle(config.name, settings, store, record))
    return done
