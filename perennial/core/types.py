"""Our own result types: what tasks return, whatever tool produced them."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd

from perennial.core.config import FeatureKind
from perennial.core.lifelong import AccuracyMatrix, ReplayMemory
from perennial.core.sampling import sample_rows


def pct(x: float | None, decimals: int | None = None) -> str:
    """A share as a percentage for people, the one formatter of them all: `decimals` fixed, or by
    default whole numbers without a decimal (90%) and others with one (88.5%); None is "-"."""
    if x is None:
        return "-"
    if decimals is None:
        decimals = 0 if abs(x * 100 - round(x * 100)) < 1e-9 else 1
    return f"{x:.{decimals}%}"


def judged_by(metric: Any) -> Any:
    """`metric`, or accuracy when None (results made before metrics were chosen)."""
    if metric is not None:
        return metric
    from perennial.core.metrics import METRICS  # it imports this module

    return METRICS["accuracy"]


def sampling_noise(p1: float, n1: int, p2: float, n2: int) -> float:
    """Two standard errors of the difference of two accuracies measured on n1 and n2 rows: a smaller
    difference may be sampling noise."""
    return 2 * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)


class BatchError(ValueError):
    """A batch file cannot be used at all (unreadable, empty, wrong format)."""


class StateError(ValueError):
    """Perennial's state folder cannot serve: its lock is held by another cycle, or a state file is
    corrupt (the message names it)."""


class DiskError(OSError):
    """The disk refused a write (full, over quota, read-only): the run stops, the batch waits."""


class RegistryError(ValueError):
    """A registered model version Perennial will not load: not a skops model it saved, or one holding
    types it does not trust (loading it could run code from the registry)."""


class OutageError(RuntimeError):
    """MLflow cannot be used right now (unreachable, or it refused the credentials): nothing about
    the batch is wrong, so a later run processes it."""


class RollbackError(ValueError):
    """`perennial rollback` cannot do what was asked: no champion, no earlier one in the history, no
    such version, or the version is the champion already (the message says which)."""


# Errors whose message is all a user needs: the CLI prints them on one line, without a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (BatchError, StateError, RegistryError, OutageError, RollbackError,
                                            DiskError)

# The decision of a `champion` move by `perennial rollback`. Not an `Action`: a rollback is no cycle,
# so no ledger line (`CycleRecord.decision`) ever holds it; the alias history and the
# `perennial.model.promoted` event do.
ROLLBACK = "rollback"


@dataclass(frozen=True)
class AliasMove:
    """One move of the `champion` alias, as its history in the registry records it: when (UTC, ISO),
    from which version (None: there was no champion) to which, by which decision (an `Action` value:
    a promotion or a reuse; or `ROLLBACK`), for which batch (None for a rollback), and why."""

    seq: int
    at: str
    from_version: int | None
    to_version: int
    decision: str
    batch: str | None
    reason: str

    def to_json(self) -> str:
        """Compact JSON, the history entry's stored form (its `seq` is in the entry's key)."""
        import json

        return json.dumps({"at": self.at, "from": self.from_version, "to": self.to_version,
                           "decision": self.decision, "batch": self.batch, "reason": self.reason},
                          separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, seq: int, text: str) -> AliasMove:
        import json

        data = json.loads(text)
        return cls(seq, data["at"], data.get("from"), int(data["to"]), data["decision"], data.get("batch"),
                   data.get("reason", ""))


@dataclass(frozen=True)
class RollbackOutcome:
    """What `perennial rollback` did: the move recorded; `again` when it found that very rollback done
    already (a retry) and moved nothing; `ungated`, why the version now served never passed the
    promotion gate (None: it did)."""

    move: AliasMove
    again: bool = False
    ungated: str | None = None


@dataclass(frozen=True)
class Schema:
    """Feature columns with their kinds, the target, the task and (classification) the known labels;
    frozen after batch one."""

    features: dict[str, FeatureKind]
    target: str
    classes: tuple[str, ...]
    # "classification" or "regression" (`model.task`, or inferred from the first batch's target).
    task: str = "classification"

    def columns(self, kind: FeatureKind) -> list[str]:
        return [name for name, k in self.features.items() if k == kind]

    def with_classes(self, new: tuple[str, ...]) -> Schema:
        return replace(self, classes=tuple(sorted({*self.classes, *new})))

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    def to_dict(self) -> dict[str, Any]:
        return {"features": self.features, "target": self.target, "classes": list(self.classes),
                "task": self.task}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schema:
        # A schema frozen before tasks existed is a classifier's.
        return cls(dict(data["features"]), data["target"], tuple(data["classes"]),
                   data.get("task", "classification"))


@dataclass
class Batch:
    id: str
    path: Path
    frame: pd.DataFrame
    # The SHA-256 of the file's bytes when read: a retrain re-reading the batch later checks it.
    sha256: str | None = None

    @property
    def rows(self) -> int:
        return len(self.frame)


@dataclass
class TrainingRows:
    """The rows a challenger learns from: one frame, or (out of core) chunks read anew on every call."""

    rows: int
    frame: pd.DataFrame | None = None
    chunks: Callable[[], Iterable[pd.DataFrame]] | None = None

    @property
    def out_of_core(self) -> bool:
        return self.frame is None

    def sample(self, n: int, seed: int = 0) -> pd.DataFrame:
        """At most n of the rows, drawn uniformly (the champion's reference)."""
        if self.frame is not None:
            return self.frame.sample(min(len(self.frame), n), random_state=seed)
        return sample_rows(self.chunks(), n, seed)


@dataclass
class ValidationResult:
    """`success`: the contract held (no rejecting failure). `failures` reject the batch; `shifts` are
    inferred properties that moved beyond the reference (recorded, not rejecting)."""

    success: bool
    failures: list[str]
    expectations: int
    new_classes: tuple[str, ...] = ()
    report: dict[str, Any] = field(default_factory=dict)
    shifts: list[str] = field(default_factory=list)
    shifted_columns: list[str] = field(default_factory=list)
    # Failures no release can waive (missing columns, rows without a label): the file must be fixed.
    unusable: list[str] = field(default_factory=list)
    # Set when the batch was released (`perennial release`): its failures were waived as shifts.
    release_reason: str | None = None

    def summary(self) -> str:
        if self.success:
            return f"passed {self.expectations} expectations"
        return "; ".join(self.failures)

    def refused(self, failure: str) -> ValidationResult:
        """This result with one more rejecting failure (a check made outside the suite)."""
        return replace(self, success=False, failures=[*self.failures, failure])


@dataclass
class FeatureDrift:
    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass
class DriftResult:
    features: list[FeatureDrift]
    drift_share: float
    report_html: Path | None = None
    champion_accuracy: float | None = None
    reference_accuracy: float | None = None
    # Rows behind each accuracy: the reference (see `Reference`) and the new batch (None: unknown).
    reference_rows: int | None = None
    batch_rows: int | None = None
    reference: Reference | None = None
    # Columns whose inferred properties validation saw move (null rate, range, categories): drift
    # signals too, counted in `drift_share` with the columns Evidently found drifted.
    shifted_columns: list[str] = field(default_factory=list)
    # The metric the `*_accuracy` values are in (None: accuracy), and the standard error of the
    # champion's value on the batch (its utility's; None: accuracy's binomial one).
    metric: Any = field(default=None, repr=False, compare=False)
    champion_error: float | None = None
    # Evidently's snapshot of the measurement, for the model's Evidently workspace (adapters only).
    evidently_run: Any = field(default=None, repr=False, compare=False)

    @property
    def drifted_columns(self) -> list[str]:
        return [f.column for f in self.features if f.drifted]

    def add_shifts(self, columns: list[str]) -> None:
        """Count the columns validation saw shift in the drift share."""
        self.shifted_columns = list(columns)
        measured = {f.column for f in self.features} | set(columns)
        moved = set(self.drifted_columns) | set(columns)
        self.drift_share = len(moved) / len(measured) if measured else 0.0

    @property
    def judged_by(self) -> Any:
        """The metric of the values (a `perennial.core.metrics.Metric`)."""
        return judged_by(self.metric)

    @property
    def accuracy_drop(self) -> float | None:
        """How much worse the champion is on the batch than the reference, in the metric's utility."""
        return self.judged_by.drop(self.reference_accuracy, self.champion_accuracy)

    @property
    def accuracy_noise(self) -> float:
        """Two standard errors of the drop: a smaller drop may be sampling noise of small batches."""
        if self.accuracy_drop is None or not self.reference_rows or not self.batch_rows:
            return 0.0
        return self.judged_by.drop_noise(self.reference_accuracy or 0.0, self.reference_rows,
                                         self.champion_accuracy or 0.0, self.batch_rows,
                                         self.champion_error or 0.0)


class Action(StrEnum):
    REJECT = "reject"
    NOOP = "noop"
    FINE_TUNE = "fine_tune"
    RETRAIN = "retrain"
    REUSE = "reuse"
    # A batch without its labels: watched (validated, drift, an estimated metric), learnt from when its
    # labels arrive (`labels.source`).
    AWAIT_LABELS = "await_labels"

    @property
    def adapts(self) -> bool:
        """Whether the model in service may change."""
        return self in (Action.FINE_TUNE, Action.RETRAIN, Action.REUSE)


class Trigger(StrEnum):
    """Why a model is trained: an alarm (the champion lost accuracy or the data drifted), or not."""

    NONE = ""
    FIRST_MODEL = "first_model"
    NEW_LABELS = "new_labels"
    DRIFT = "drift"
    # Labelled rows accumulated while stable: learning from them is not a drift alarm.
    DATA_GROWTH = "data_growth"


class Candidate(StrEnum):
    """A way to train a challenger; an adaptation trains the policy's own and, within the cost
    budget, others, and keeps the best on the same holdout rows."""

    FINE_TUNE = "fine_tune"
    RETRAIN_WINDOW = "retrain_window"
    RETRAIN_BATCH = "retrain_batch"
    # Every accepted batch of the champion's concept (a data-growth retrain).
    RETRAIN_GROWN = "retrain_grown"
    # The same rows when an alarm asks: all the history that still holds, the evidence that it does.
    RETRAIN_ALL = "retrain_all"

    @property
    def learns_history(self) -> bool:
        """Learns from every accepted batch of the concept (within `training.history_rows`)."""
        return self in (Candidate.RETRAIN_GROWN, Candidate.RETRAIN_ALL)

    @property
    def action(self) -> Action:
        return Action.FINE_TUNE if self is Candidate.FINE_TUNE else Action.RETRAIN


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    # Accepted batches a retrain learns from; 1 when the old concept is judged superseded.
    window_batches: int = 1
    # The old concept no longer holds: a new one starts (fresh replay memory, earlier windows out
    # of the forgetting gate's scope).
    supersedes: bool = False
    # `reuse`: the former champion put back in service.
    reuse_version: int | None = None
    trigger: Trigger = Trigger.NONE

    @property
    def candidate(self) -> Candidate | None:
        """The policy's own way to train for this decision (None when it trains nothing)."""
        if self.action is Action.FINE_TUNE:
            return Candidate.FINE_TUNE
        if self.action is not Action.RETRAIN:
            return None
        if self.trigger is Trigger.DATA_GROWTH:
            return Candidate.RETRAIN_GROWN
        return Candidate.RETRAIN_BATCH if self.window_batches == 1 else Candidate.RETRAIN_WINDOW


@dataclass(frozen=True)
class Growth:
    """Labelled rows of the concept in service: those its model learnt from, and those since."""

    learned_rows: int
    new_rows: int


@dataclass(frozen=True)
class Reference:
    """The accuracy a batch is judged against: the best that recent models showed, and on how many rows."""

    accuracy: float
    rows: int
    version: int | None
    # Batches behind it; 0 when it is the champion's accuracy on its own holdout rows.
    batches: int = 0

    def describe(self, metric: Any = None) -> str:
        value = judged_by(metric).format(self.accuracy)
        if not self.batches:
            return f"{value} (v{self.version}'s holdout)"
        return f"{value} (v{self.version} on {self.batches} recent batch(es))"


@dataclass
class Champion:
    version: int
    model: Any
    holdout_accuracy: float
    reference: pd.DataFrame
    holdout_rows: int | None = None
    # The concept the version was trained on (docs/lifelong.md).
    concept: int = 1
    # Rows of its concept it learnt from (None: registered before Perennial recorded it).
    learned_rows: int | None = None
    # The metric of `holdout_accuracy` (a version registered under another `policy.metric` keeps its own).
    metric: str = "accuracy"


@dataclass
class ChampionScore:
    """The champion's accuracy on a rejected batch's labelled rows: monitoring goes on when learning stops."""

    version: int
    accuracy: float | None
    rows: int
    error: str | None = None
    metric: Any = field(default=None, repr=False, compare=False)

    def describe(self) -> str:
        if self.accuracy is not None:
            m = judged_by(self.metric)
            named = "" if m.name == "accuracy" else f"{m.name} "
            return (f"champion v{self.version} scores {named}{m.format(self.accuracy, 1)} on its "
                    f"{self.rows:,} labelled rows")
        if self.error is None:
            return f"champion v{self.version} not scored: no row has a label"
        return f"champion v{self.version} could not score it ({self.error})"


@dataclass
class Evaluation:
    challenger_accuracy: float
    champion_accuracy: float | None
    holdout_rows: int
    # The challenger's forgetting on earlier windows of its concept, and how many windows that was.
    forgetting: float = 0.0
    forgetting_windows: int = 0
    # The challenger's output on each holdout row and the rows' truth: candidates are compared row by
    # row (paired); and the metric of the values (None: accuracy).
    challenger_output: Any = field(default=None, repr=False, compare=False)
    holdout_y: Any = field(default=None, repr=False, compare=False)
    metric: Any = field(default=None, repr=False, compare=False)


@dataclass
class CandidateResult:
    """One candidate of an adaptation as the ledger and the MLflow run show it."""

    kind: str
    accuracy: float
    # On the earlier windows of its concept (the promotion gate's), and on every earlier window.
    forgetting: float
    rows: int
    train_seconds: float | None = None
    train_cpu_seconds: float | None = None
    chosen: bool = False
    forgetting_all: float = 0.0


@dataclass
class Challenger:
    """A trained candidate: how it was trained, what it learnt from, and how it did on the batch's
    holdout rows and on the windows of earlier batches."""

    kind: Candidate
    model: Any
    evaluation: Evaluation
    # The concept it belongs to, its replay memory (this batch's training rows offered to it).
    concept: int
    memory: ReplayMemory
    rows: TrainingRows
    trained_on: list[str]
    # Rows of its concept it has learnt from (a fine-tune adds the batch to its parent's).
    learned_rows: int
    matrix: AccuracyMatrix
    train_seconds: float = 0.0
    train_cpu_seconds: float = 0.0
    eval_seconds: float = 0.0
    eval_cpu_seconds: float = 0.0

    def result(self, chosen: bool) -> CandidateResult:
        return CandidateResult(self.kind.value, self.evaluation.challenger_accuracy,
                               self.evaluation.forgetting, self.rows.rows, round(self.train_seconds, 3),
                               round(self.train_cpu_seconds, 3), chosen,
                               self.matrix.metrics(self.evaluation.metric).forgetting)


@dataclass
class Promotion:
    version: int
    promoted: bool
    reason: str
    champion_version: int


@dataclass
class CycleRecord:
    """One line of the processed-batch ledger: what happened to a batch and why.

    The `*accuracy*` fields hold values of the metric named in `metric` (`policy.metric`; their names
    are those of ledgers written when accuracy was the only one)."""

    batch: str
    rows: int
    validation: str
    drift_share: float | None
    champion_accuracy_before: float | None
    decision: Action
    reason: str
    champion_version_after: int | None
    # The decision judged the old concept superseded (a deployed adapt run reads it from here).
    supersedes: bool = False
    trigger: str = ""
    champion_version_before: int | None = None
    model_version: int | None = None
    promoted: bool | None = None
    promotion: str | None = None
    challenger_accuracy: float | None = None
    # Cost of training the challenger: wall and process CPU seconds (all threads).
    train_seconds: float | None = None
    train_cpu_seconds: float | None = None
    trained_rows: int | None = None
    # Every candidate an adaptation trained or scored: kind, accuracy on the holdout, forgetting,
    # training cost, rows, and which one became the challenger.
    candidates: list[dict[str, Any]] = field(default_factory=list)
    # Rows of its concept the model in service after this batch learnt from, and labelled rows
    # that arrived since the last training (the data-growth retrain compares the two).
    learned_rows: int | None = None
    unlearned_rows: int | None = None
    # Cost of evaluating: the challenger on the holdout and on every kept window (forgetting).
    eval_seconds: float | None = None
    eval_cpu_seconds: float | None = None
    # Lifelong metrics of the model in service after this batch, over the kept windows.
    concept: int | None = None
    avg_accuracy: float | None = None
    bwt: float | None = None
    forgetting: float | None = None
    run_id: str | None = None
    quarantined_to: str | None = None
    drifted_columns: list[str] = field(default_factory=list)
    # Validation: inferred properties that moved (not rejecting), and failures that make the file
    # unusable until fixed (missing columns, rows without a label, unreadable): it cannot be released.
    shifts: list[str] = field(default_factory=list)
    shifted_columns: list[str] = field(default_factory=list)
    unusable: list[str] = field(default_factory=list)
    path: str = ""
    # The SHA-256 of the file's bytes as the cycle read them (None on lines written before it was
    # recorded): a retrain re-reading the batch leaves it out if its file no longer has them.
    sha256: str | None = None
    # "done"; "started" from the decision until the cycle's state is committed (a rerun resumes it);
    # "adaptation requested" while a deployed adapt run has the batch; "released" when a user
    # released a rejected batch (`perennial release`) for the next run to process again
    status: str = "done"
    # The rest of the decision, so a resumed cycle carries out the same one.
    window_batches: int = 1
    reuse_version: int | None = None
    finished_at: str = ""
    # Why and when the batch was released; kept on the line of the run that processed it again.
    release_reason: str | None = None
    released_at: str | None = None
    # On a `released` line: the SHA-256 of the rejected bytes (its quarantined copy), the only bytes
    # the next run learns (None on lines written before it was recorded).
    released_sha256: str | None = None
    # The metric of the `*accuracy*` values on this line.
    metric: str = "accuracy"
    # Labels that arrive later (`labels.source`): the champion's metric estimated when the batch was
    # served without labels (metric, value, low, high, rows, method, alarm), kept on the line of the
    # cycle its labels led to; the labels' coverage and class mix against the predicted mix; the drift
    # of the champion's predictions (share of drifted prediction columns: 0 or 1).
    estimate: dict[str, Any] | None = None
    labels: dict[str, Any] | None = None
    prediction_drift: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.decision = Action(self.decision)  # the ledger's JSON holds its value

    @property
    def learnable(self) -> bool:
        """Whether the batch's rows carry labels a model may learn from: not rejected, not waiting for
        its labels (served without them), not expired before they came."""
        return self.decision not in (Action.REJECT, Action.AWAIT_LABELS) and self.status != "labels expired"

    def recorded_decision(self) -> Decision:
        """The decision this line records, for a run that carries it out (a resumed or deployed one)."""
        return Decision(self.decision, self.reason, self.window_batches or 1, self.supersedes,
                        self.reuse_version, Trigger(self.trigger))

    def add_eval_cost(self, wall: float, cpu: float) -> None:
        self.eval_seconds = round((self.eval_seconds or 0.0) + wall, 3)
        self.eval_cpu_seconds = round((self.eval_cpu_seconds or 0.0) + cpu, 3)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
