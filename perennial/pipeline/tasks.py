"""Every Prefect task of a cycle, in one table.

A task's logic lives in the core, an adapter or the pipeline, where it is a plain function tested
without Prefect; here it becomes a task, with retries only where I/O can fail. Steps of
microseconds that need neither a retry nor a place of their own in the UI (the schema, the decision,
the ledger lines) are plain calls in the flows: each task run costs ~30 ms of Prefect's bookkeeping.
Inside
`plain_calls()` the tasks and flows of the pipeline run as plain function calls: the benchmark's
"plain Python" baseline is the flows' own body, not a copy of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from prefect.cache_policies import NO_CACHE
from prefect.flows import Flow
from prefect.tasks import Task

from perennial.adapters import (
    batch_files,
    evidently,
    evidently_workspace,
    great_expectations,
    mlflow_registry,
    prefect_artifacts,
    prefect_events,
    report_page,
)
from perennial.core import estimation, evaluation
from perennial.pipeline import lifelong, training

# Set inside `plain_calls()`: how a task or flow is called instead of through Prefect.
_plain: ContextVar[Callable[..., Any] | None] = ContextVar("plain", default=None)


class CycleTask(Task):
    """A Prefect task that `plain_calls()` turns into a plain call of its function."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        call = _plain.get()
        if call is None:
            return super().__call__(*args, **kwargs)
        return call(self.name, self.fn, *args, **kwargs)


class CycleFlow(Flow):
    """A Prefect flow that `plain_calls()` turns into a plain call of its function."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        call = _plain.get()
        return super().__call__(*args, **kwargs) if call is None else self.fn(*args, **kwargs)


def cycle_flow(**options: Any) -> Callable[[Callable[..., Any]], CycleFlow]:
    """`@flow(...)` for the pipeline's flows."""
    return lambda fn: CycleFlow(fn, **options)


@contextmanager
def plain_calls(call: Callable[..., Any] | None = None) -> Iterator[None]:
    """Run the pipeline's tasks and flows as plain function calls; each task through
    `call(name, fn, *args, **kwargs)` when given (e.g. to time it)."""
    token = _plain.set(call or (lambda name, fn, *args, **kwargs: fn(*args, **kwargs)))
    try:
        yield
    finally:
        _plain.reset(token)


@contextmanager
def without_heartbeats() -> Iterator[None]:
    """Flow runs started inside send no heartbeats. A heartbeat lets a server's automations find a
    run whose process died; Prefect's heartbeat thread sleeps in 1 s steps and the end of every flow
    run waits for it (measured: a flow with one subflow and one task took 2.08 s with heartbeats,
    0.27 s without). A batch's `training-cycle` subflow lives and dies with its parent run, whose own
    heartbeat covers it; nothing watches the temporary server of a command."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def _task(fn: Callable[..., Any], **options: Any) -> CycleTask:
    return CycleTask(fn, cache_policy=NO_CACHE, **options)


# MLflow calls retry a transient failure; a refused connection fails at once (see `_not_refused`).
_MLFLOW = {"retries": 2, "retry_delay_seconds": 2}
_MLFLOW_READ = {**_MLFLOW, "retry_condition_fn": mlflow_registry.not_refused}

# Batch files
find_new_batches = _task(batch_files.find_new_batches)
load_batch = _task(batch_files.load_batch)
# Checks
validate_batch = _task(great_expectations.validate_batch)
measure_drift = _task(evidently.measure_drift)
measure_feature_drift = _task(evidently.batch_drift)
measure_prediction_drift = _task(evidently.prediction_drift)
estimate_metric = _task(estimation.estimate_on)
score_rejected = _task(evaluation.score_rejected)
# Decisions
find_reusable = _task(lifelong.find_reusable)
request_adaptation = _task(prefect_events.request_adaptation)
# Adaptation
training_rows = _task(training.training_rows)
train = _task(training.train)
evaluate = _task(evaluation.evaluate)
score_windows = _task(lifelong.score_windows)
# The registry
load_champion = _task(mlflow_registry.load_champion, **_MLFLOW_READ)
load_version = _task(mlflow_registry.load_version, **_MLFLOW_READ)
log_cycle = _task(mlflow_registry.log_cycle, **_MLFLOW)
log_champion_score = _task(mlflow_registry.log_champion_score, **_MLFLOW)
register = _task(mlflow_registry.register, **_MLFLOW)
promote = _task(mlflow_registry.promote, **_MLFLOW)
reinstate = _task(mlflow_registry.reinstate, **_MLFLOW)
log_lifelong = _task(mlflow_registry.log_lifelong, **_MLFLOW)
log_labels = _task(mlflow_registry.log_labels, **_MLFLOW)
# What the cycle leaves behind
publish_cycle = _task(prefect_artifacts.publish_cycle)
add_drift_run = _task(evidently_workspace.add_drift_run)
write_report = _task(report_page.write_page)
log_report = _task(mlflow_registry.log_report, **_MLFLOW)
link_report = _task(prefect_artifacts.link_report)
