"""Adaptation: train a challenger for a batch, compare, register, promote (check-and-set).

`training_cycle` calls `adapt_batch` in-process (embedded mode); on a Prefect server the `adapt`
flow runs it when a `perennial.drift.detected` event arrives (deployed mode).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from perennial.config import PipelineConfig, Settings, load_config
from perennial.state import StateStore
from perennial.timing import timed
from perennial.types import Action, Batch, Champion, CycleRecord, Decision, Schema
from tasks.evaluate import evaluate
from tasks.lifelong import (
    Reuse,
    concept_memory,
    concept_windows,
    load_windows,
    next_concept,
    record_step,
    remember,
    score_windows,
)
from tasks.load import holdout_split, load_batch
from tasks.registry import load_champion, promote, register, reinstate, replay_memory
from tasks.report import finish_cycle, finish_step, record_adaptation
from tasks.train import train, training_rows


def adapt_batch(config: PipelineConfig, settings: Settings, store: StateStore, batch: Batch, schema: Schema,
                decision: Decision, champion: Champion | None, expected_champion: int | None,
                record: CycleRecord) -> None:
    """Train a challenger, compare it with the champion on held-out rows and on the windows of
    earlier batches (forgetting), register it with its replay memory, promote it or not."""
    history = [r for r in store.records() if r.batch != batch.id]
    train_idx, holdout_idx = holdout_split(batch, config)
    windows = load_windows(store, batch, config)
    concept = next_concept(windows.matrix, champion, decision)
    memory = concept_memory(store, config, champion, concept)
    rows, trained_on = training_rows(batch, train_idx, decision, history, config, memory)
    with timed() as training:
        challenger = train(decision, rows, champion, schema, config)
    with timed() as evaluating:
        evaluation = evaluate(challenger, champion, batch.frame.iloc[holdout_idx], schema)
        matrix = score_windows(challenger, windows, schema, concept)
        evaluation.forgetting = matrix.metrics().concept_forgetting
        evaluation.forgetting_windows = concept_windows(matrix)
    reference = rows.sample(config.drift.reference_rows, seed=0)
    learnt = remember(memory, batch, train_idx, config)
    version = register(config, settings, record.run_id, challenger, batch, schema, decision, evaluation,
                       trained_on, reference, champion, learnt, concept)
    promotion = promote(config, settings, version, evaluation, champion, expected_champion)
    if not promotion.promoted and champion is not None:  # the champion stays in service
        matrix = score_windows(champion.model, windows, schema, champion.concept)
        if concept != champion.concept:  # the champion's concept goes on: its memory learns the batch
            learnt = remember(concept_memory(store, config, champion, champion.concept), batch, train_idx,
                              config)
    record_step(store, config, windows, matrix, promotion.champion_version, learnt)
    store.save_schema(schema)
    record_adaptation(record, promotion, evaluation, training, evaluating, rows.rows)
    finish_step(settings, record, matrix, evaluation.challenger_accuracy, store.report_dir(batch.id))


def reuse_batch(config: PipelineConfig, settings: Settings, store: StateStore, batch: Batch,
                reuse: Reuse, champion: Champion, record: CycleRecord) -> None:
    """Put a former champion back in service, with the replay memory it was registered with."""
    decision, matrix = reuse.decision, reuse.matrix
    version = decision.reuse_version or 0
    promotion = reinstate(config, settings, version, decision.reason, champion.version)
    train_idx, _ = holdout_split(batch, config)
    memory = remember(replay_memory(config, settings, version), batch, train_idx, config)
    if promotion.promoted:
        record_step(store, config, reuse.windows, matrix, version, memory)
    record.model_version, record.promoted, record.promotion = version, promotion.promoted, promotion.reason
    record.champion_version_after = promotion.champion_version
    finish_step(settings, record, matrix, matrix.steps[-1].accuracy[batch.id], None)


def keep_batch(config: PipelineConfig, settings: Settings, store: StateStore, batch: Batch, schema: Schema,
               champion: Champion, record: CycleRecord) -> None:
    """No adaptation: the batch still joins the windows and the champion's replay memory."""
    train_idx, _ = holdout_split(batch, config)
    windows = load_windows(store, batch, config)
    with timed() as evaluating:
        matrix = score_windows(champion.model, windows, schema, champion.concept)
    memory = remember(store.replay(config.lifelong.replay_rows, config.data.target), batch, train_idx, config)
    record_step(store, config, windows, matrix, champion.version, memory)
    record.add_eval_cost(evaluating.wall, evaluating.cpu)
    finish_step(settings, record, matrix, record.champion_accuracy_before, None)


@flow(name="adapt")
def adapt(config_path: str, batch_ids: list[str], mode: str, reason: str = "",
          window_batches: int = 1, champion_version: int = 0) -> list[CycleRecord]:
    """Fine-tune or retrain on batches the monitor flagged; `champion_version` 0 means none.

    Whether the old concept is superseded is what the monitor decided for the batch (its ledger
    line); an adaptation another system asks for stays in the champion's concept.
    """
    config = load_config(config_path)
    settings = Settings()
    store = StateStore(settings.state_dir, config.name)
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
        decision = Decision(Action(mode), reason, window_batches,
                            supersedes=record.supersedes and mode == Action.RETRAIN)
        record.decision, record.reason = decision.action.value, decision.reason
        batch = load_batch(Path(record.path), config)
        champion = load_champion(config, settings)
        adapt_batch(config, settings, store, batch, store.schema(), decision, champion, expected, record)
        done.append(finish_cycle(config.name, settings, store, record))
    return done
