"""The metric a model is judged by (`policy.metric`): one small object every part speaks through.

A `Metric` knows its name, its task, its direction, what of a model's output it scores (labels,
class probabilities or values), how to compute it, and its noise band on the rows scored. The
policy, the champion/challenger gate, the forgetting matrix, the ledger and the benchmark never do
arithmetic on a metric's raw value: they compare *utilities* (`Metric.utility`, higher is better),
so "a drop of 0.05" means the same thing whatever the metric:

- shares (accuracy, balanced accuracy, F1, ROC AUC, average precision): the value itself; a drop
  of 0.05 is 5 points;
- R²: the value itself (a drop of 0.05 is 0.05 of R²);
- errors (MAE, RMSE, log loss, lower is better, unbounded): minus the log of the value, so a drop
  of 0.05 is an error about 5% higher (`math.expm1(0.05)` = 5.1%), whatever the target's units.

Adding a metric is one entry in `METRICS`. Importing this module is cheap (numpy only).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from perennial.core.types import pct

Task = Literal["classification", "regression"]
Output = Literal["label", "proba", "value"]
Kind = Literal["share", "r2", "error"]

# Bootstrap resamples for the noise band of a metric that is not a mean over rows (AUC, AP, F1, RMSE,
# R²): enough for a standard error within ~5% of its value.
BOOTSTRAP = 200
# An error of exactly 0 (a perfect model on the rows scored) has no logarithm.
_TINY = 1e-12
# Labels read as the positive class of a binary target when `policy.positive_class` is not set.
POSITIVE_NAMES = ("1", "true", "yes", "y", "t", "positive", "pos")


class MetricError(ValueError):
    """A metric that cannot judge this model or target (the message names the key to change)."""


@dataclass(frozen=True)
class Metric:
    """A metric bound to a target: its classes (classification) and the positive one (binary)."""

    name: str
    task: Task
    output: Output
    kind: Kind
    # The metric on the rows: y (labels as strings, or numbers) against the model's output.
    compute: Callable[[Metric, np.ndarray, np.ndarray], float]
    # Per-row contributions whose mean is the metric (accuracy, MAE, log loss): noise bands are then
    # analytic; None: they are bootstrapped.
    per_row: Callable[[Metric, np.ndarray, np.ndarray], np.ndarray] | None = None
    # A binary metric that scores one class (F1, average precision) needs to know which.
    needs_positive: bool = False
    classes: tuple[str, ...] = ()
    positive: str | None = None
    description: str = ""
    # The variance of one row's contribution as a function of the metric's value (accuracy: p(1-p),
    # binomial): values measured on different rows then compare by it alone; None: from the rows.
    variance: Callable[[float], float] | None = None

    @property
    def greater_is_better(self) -> bool:
        return self.kind != "error"

    @property
    def direction(self) -> str:
        return "higher is better" if self.greater_is_better else "lower is better"

    # -- Values ---------------------------------------------------------------------------------------

    def value(self, y: np.ndarray, out: np.ndarray) -> float:
        """The metric of `out` (a model's output on the rows, `output_of`) against the truth `y`."""
        if len(y) == 0:
            return math.nan
        return float(self.compute(self, np.asarray(y), np.asarray(out)))

    def output_of(self, model: Any, X: Any) -> np.ndarray:
        """What this metric scores of `model` on the inputs `X`: predicted labels as strings, the
        probability of each of `classes` (a class the model never learnt: 0), or predicted values."""
        if self.output == "value":
            return np.asarray(model.predict(X), dtype=float)
        if self.output == "label":
            return np.asarray(model.predict(X)).astype(str)
        if not hasattr(model, "predict_proba"):
            raise MetricError(f"key 'policy.metric': {self.name} scores class probabilities and "
                              f"{type(model).__name__} has no predict_proba")
        proba = np.asarray(model.predict_proba(X), dtype=float)
        learnt = [str(c) for c in model.classes_]
        aligned = np.zeros((proba.shape[0], len(self.classes)))
        for i, label in enumerate(self.classes):
            if label in learnt:
                aligned[:, i] = proba[:, learnt.index(label)]
        return aligned

    def score(self, model: Any, X: Any, y: np.ndarray) -> float:
        """The metric of `model` on the rows (X, y)."""
        return self.value(y, self.output_of(model, X))

    # -- Comparing ------------------------------------------------------------------------------------

    def utility(self, value: float | None) -> float:
        """The value on the scale every comparison uses: higher is better, differences comparable
        (see the module's docstring)."""
        if value is None or math.isnan(value):
            return math.nan
        if self.kind == "error":
            return -math.log(max(value, _TINY))
        return float(value)

    def drop(self, before: float | None, after: float | None) -> float | None:
        """How much worse `after` is than `before`, in utility units (negative: better)."""
        if before is None or after is None:
            return None
        gap = self.utility(before) - self.utility(after)
        return None if math.isnan(gap) else gap

    def better(self, a: float, b: float, margin: float = 0.0) -> bool:
        """`a` reaches `b` plus `margin` (utility units)."""
        return self.utility(a) >= self.utility(b) + margin

    def standard_error(self, y: np.ndarray, out: np.ndarray, seed: int = 0) -> float:
        """The standard error of the metric's utility on these rows."""
        n = len(y)
        if n < 2:
            return math.inf
        if self.per_row is not None:
            rows = self.per_row(self, y, out)
            mean, se = float(rows.mean()), float(rows.std() / math.sqrt(n))
            return se / max(mean, _TINY) if self.kind == "error" else se
        draws = self._bootstrap(n, seed)
        values = [self.utility(self.value(y[i], out[i])) for i in draws]
        finite = [v for v in values if not math.isnan(v)]
        return float(np.std(finite, ddof=1)) if len(finite) > 1 else math.inf

    def paired_noise(self, y: np.ndarray, a: np.ndarray, b: np.ndarray, standard_errors: float = 2.0,
                     seed: int = 0) -> float:
        """`standard_errors` standard errors of the utility difference of two models scored on the same
        rows (outputs `a` and `b`): only where they differ counts, so it is much tighter than comparing
        two values measured on different rows."""
        n = len(y)
        if n < 2:
            return math.inf
        if self.per_row is not None:
            ra, rb = self.per_row(self, y, a), self.per_row(self, y, b)
            if self.kind == "error":  # delta method for the difference of logs
                ra, rb = ra / max(float(ra.mean()), _TINY), rb / max(float(rb.mean()), _TINY)
            diff = ra - rb
            return standard_errors * float(diff.std(ddof=1) / math.sqrt(n))
        diffs = [self.utility(self.value(y[i], a[i])) - self.utility(self.value(y[i], b[i]))
                 for i in self._bootstrap(n, seed)]
        finite = [d for d in diffs if not math.isnan(d)]
        return standard_errors * float(np.std(finite, ddof=1)) if len(finite) > 1 else math.inf

    def drop_noise(self, reference: float, reference_rows: int, now: float, rows: int,
                   now_error: float, standard_errors: float = 2.0) -> float:
        """`standard_errors` standard errors of a drop from a reference measured on `reference_rows`
        other rows to `now` measured on `rows` rows with standard error `now_error`: each value's from
        its `variance` when the metric has one (accuracy: binomial), else the reference's taken as the
        batch's, scaled by the rows."""
        if not reference_rows or not rows:
            return 0.0
        if self.variance is not None:
            return standard_errors * math.sqrt(self.variance(reference) / reference_rows
                                               + self.variance(now) / rows)
        return standard_errors * now_error * math.sqrt(1 + rows / reference_rows)

    @staticmethod
    def _bootstrap(n: int, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).integers(0, n, size=(BOOTSTRAP, n))

    # -- Showing --------------------------------------------------------------------------------------

    def format(self, value: float | None, decimals: int | None = None) -> str:
        """A value for people: shares as percentages (83.5%), R² with three decimals, errors with four
        significant digits."""
        if value is None or math.isnan(value):
            return "-"
        if self.kind == "share":
            return pct(value, decimals)
        if self.kind == "r2":
            return f"{value:.3f}"
        return f"{value:.4g}"

    def format_gap(self, gap: float, decimals: int | None = None) -> str:
        """A difference in utility units for people: points for shares (5%), R² units, or the relative
        change of an error (5.1%)."""
        if self.kind == "share":
            return pct(gap, decimals)
        if self.kind == "r2":
            return f"{gap:.3f}"
        return f"{math.expm1(gap):.1%}"

    def bound(self, classes: tuple[str, ...], positive: str | None) -> Metric:
        """This metric for a target with these classes and positive class."""
        return replace(self, classes=tuple(classes), positive=positive)


# -- The metrics --------------------------------------------------------------------------------------

def _hits(m: Metric, y: np.ndarray, out: np.ndarray) -> np.ndarray:
    return (out.astype(str) == y.astype(str)).astype(float)


def _accuracy(m: Metric, y: np.ndarray, out: np.ndarray) -> float:
    return float(_hits(m, y, out).mean())


def _balanced_accuracy(m: Metric, y: np.ndarray, out: np.ndarray) -> float:
    # Mean recall over the classes present in y (scikit-learn's balanced_accuracy_score).
    y, out = y.astype(str), out.astype(str)
    recalls = [float((out[y == c] == c).mean()) for c in np.unique(y)]
    return float(np.mean(recalls))


def _f1(m: Metric, y: np.ndarray, out: np.ndarray) -> float:
    y, out = y.astype(str), out.astype(str)

    def f1_of(c: str) -> float:
        tp = float(((out == c) & (y == c)).sum())
        denominator = float((out == c).sum() + (y == c).sum())
        return 2 * tp / denominator if denominator else 0.0

    if len(m.classes) == 2:
        return f1_of(m.positive or m.classes[-1])
    return float(np.mean([f1_of(c) for c in np.unique(np.concatenate([y, out]))]))


def _one_vs_rest(score: Callable[[np.ndarray, np.ndarray], float]) -> Callable[[Metric, np.ndarray,
                                                                                 np.ndarray], float]:
    """A ranking metric of probabilities: of the positive class (binary), else the mean over the classes
    present in y of each class against the rest; NaN when y holds one class only."""

    def compute(m: Metric, y: np.ndarray, out: np.ndarray) -> float:
        y = y.astype(str)
        if len(m.classes) == 2:
            positive = m.positive or m.classes[-1]
            truth = y == positive
            if truth.all() or not truth.any():
                return math.nan
            return score(truth, out[:, m.classes.index(positive)])
        values = [score(y == c, out[:, i]) for i, c in enumerate(m.classes) if 0 < (y == c).sum() < len(y)]
        return float(np.mean(values)) if values else math.nan

    return compute


def _roc_auc(truth: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(truth, scores))


def _average_precision(truth: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(truth, scores))


def _log_losses(m: Metric, y: np.ndarray, out: np.ndarray) -> np.ndarray:
    index = {c: i for i, c in enumerate(m.classes)}
    # A label outside the classes (it arrived after the model) gets probability 0: the clipped maximum.
    column = np.array([index.get(label, -1) for label in y.astype(str)])
    p = np.where(column >= 0, out[np.arange(len(y)), np.maximum(column, 0)], 0.0)
    return -np.log(np.clip(p, 1e-15, 1.0))


def _absolute_errors(m: Metric, y: np.ndarray, out: np.ndarray) -> np.ndarray:
    return np.abs(y.astype(float) - out.astype(float))


def _rmse(m: Metric, y: np.ndarray, out: np.ndarray) -> float:
    return float(np.sqrt(np.mean((y.astype(float) - out.astype(float)) ** 2)))


def _r2(m: Metric, y: np.ndarray, out: np.ndarray) -> float:
    y, out = y.astype(float), out.astype(float)
    total = float(((y - y.mean()) ** 2).sum())
    return 1 - float(((y - out) ** 2).sum()) / total if total else math.nan


def _mean_of(per_row: Callable[[Metric, np.ndarray, np.ndarray], np.ndarray]) -> Callable[
        [Metric, np.ndarray, np.ndarray], float]:
    return lambda m, y, out: float(per_row(m, y, out).mean())


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("accuracy", "classification", "label", "share", _accuracy, _hits,
           description="share of rows whose label is predicted", variance=lambda p: p * (1 - p)),
    Metric("balanced_accuracy", "classification", "label", "share", _balanced_accuracy,
           description="mean recall over the classes present"),
    Metric("f1", "classification", "label", "share", _f1, needs_positive=True,
           description="F1 of the positive class (binary), macro mean over classes (multiclass)"),
    Metric("roc_auc", "classification", "proba", "share", _one_vs_rest(_roc_auc),
           description="area under the ROC curve (multiclass: one class against the rest, mean)"),
    Metric("average_precision", "classification", "proba", "share", _one_vs_rest(_average_precision),
           needs_positive=True,
           description="area under the precision-recall curve of the positive class (multiclass: mean)"),
    Metric("log_loss", "classification", "proba", "error", _mean_of(_log_losses), _log_losses,
           description="mean negative log-likelihood of the true label"),
    Metric("mae", "regression", "value", "error", _mean_of(_absolute_errors), _absolute_errors,
           description="mean absolute error"),
    Metric("rmse", "regression", "value", "error", _rmse, description="root mean squared error"),
    Metric("r2", "regression", "value", "r2", _r2, description="coefficient of determination"),
)}

# The metric when `policy.metric` is not set: today's behaviour for classification.
DEFAULT_METRIC: dict[str, str] = {"classification": "accuracy", "regression": "mae"}


def positive_class(classes: tuple[str, ...], configured: str | None) -> str | None:
    """The positive class of a binary target: `policy.positive_class`, else the one named like a
    positive (1, true, yes, ...); None when neither says (or the target is not binary)."""
    if configured is not None:
        return configured
    if len(classes) != 2:
        return None
    named = [c for c in classes if c.strip().lower() in POSITIVE_NAMES]
    return named[0] if len(named) == 1 else None


def metric_named(name: str | None, task: Task, classes: tuple[str, ...] = (),
                 configured_positive: str | None = None, where: str = "") -> Metric:
    """The metric `name` (the task's default when None) bound to the target's classes, or MetricError
    naming the key: a metric of the other task, a positive class that is not one of the classes, or a
    binary metric of one class when no class is named positive."""
    metric = METRICS[name or DEFAULT_METRIC[task]]
    if metric.task != task:
        raise MetricError(f"{where}key 'policy.metric': {metric.name} is a {metric.task} metric and the "
                          f"target is a {task} target (metrics for it: "
                          f"{', '.join(n for n, m in METRICS.items() if m.task == task)})")
    if configured_positive is not None and classes and configured_positive not in classes:
        raise MetricError(f"{where}key 'policy.positive_class': {configured_positive!r} is not a class of "
                          f"the target (classes: {', '.join(classes[:12])})")
    positive = positive_class(classes, configured_positive)
    if metric.needs_positive and len(classes) == 2 and positive is None:
        raise MetricError(f"{where}key 'policy.positive_class': {metric.name} scores the positive class of "
                          f"a binary target; name it (one of: {', '.join(classes)})")
    return metric.bound(classes, positive)



def metric_named_or_accuracy(name: str) -> Metric:
    """The metric a ledger line names, for showing its values (accuracy for a name no longer known)."""
    return METRICS.get(name, METRICS["accuracy"])
