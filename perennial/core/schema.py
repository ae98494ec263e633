"""Schema inference, and the conversion of a raw batch to model inputs (perennial.core.inputs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
from pandas.api import types as ptypes

from perennial.core.config import ConfigError, FeatureKind, PipelineConfig
from perennial.core.text import bounded
from perennial.core.types import Schema

if TYPE_CHECKING:
    from perennial.core.metrics import Metric


def infer_kind(series: pd.Series) -> FeatureKind:
    """Kind of a column from its dtype: bool -> boolean, numbers -> numeric, else categorical."""
    if ptypes.is_bool_dtype(series):
        return "boolean"
    if ptypes.is_numeric_dtype(series):
        return "numeric"
    values = {str(v).strip().lower() for v in series.dropna().unique()[:10]}
    if values and values <= {"true", "false"}:
        return "boolean"
    return "categorical"


def infer_schema(frame: pd.DataFrame, target: str, declared: dict[str, FeatureKind] | None,
                 task: str = "classification", row_id: str | None = None) -> Schema:
    """Declared features if given, else every column but the target and the row id (`data.id`) with
    its inferred kind; the labels seen (classification) or none (regression)."""
    if declared:
        features = dict(declared)
    else:
        features = {c: infer_kind(frame[c]) for c in frame.columns if c not in (target, row_id)}
    labelled = frame[frame[target].notna()]
    classes = () if task == "regression" else tuple(sorted(labels(labelled, target).unique()))
    return Schema(features=features, target=target, classes=classes, task=task)


def labels(frame: pd.DataFrame, target: str) -> pd.Series:
    """Labels as strings, so 1 read from CSV and 1 read from Parquet are one class."""
    series = frame[target]
    if ptypes.is_float_dtype(series) and (series.dropna() % 1 == 0).all():
        series = series.astype("Int64")
    return series.astype(str)


# A numeric target is continuous with at least 20 distinct values some of which are fractional, or
# with at least 50 integers distinct in more than a tenth of its rows (docs/configuration.md: model.task).
# sklearn's diabetes (214 integers in 442 rows) and river's ChickWeights (212 in 578) are continuous;
# digits (10 classes) and 60 integer classes in 5,000 rows are labels.
FRACTIONAL_VALUES, INTEGER_VALUES, INTEGER_SHARE = 20, 50, 0.1


def continuous(values: pd.Series) -> tuple[bool, int]:
    """Whether a target column plainly holds a quantity rather than labels, and its distinct values."""
    values = values.dropna()
    if not ptypes.is_numeric_dtype(values) or ptypes.is_bool_dtype(values):
        return False, values.nunique()
    distinct = values.nunique()
    if bool((values % 1 != 0).any()):
        return distinct >= FRACTIONAL_VALUES, distinct
    return distinct >= INTEGER_VALUES and distinct > INTEGER_SHARE * len(values), distinct


def infer_task(frame: pd.DataFrame, config: PipelineConfig) -> str:
    """The task: `model.task` when set (checked against the target), else regression for a plainly
    continuous target and classification for any other. ConfigError naming `model.task` when the
    target cannot be what it says: a classifier would learn one class per value of a quantity (a
    car-price stream trained for more than 10 minutes, silently), a regressor cannot learn text."""
    target, task = config.data.target, config.model.task
    where = f"{config.config_file}: " if config.config_file else ""
    values = frame[target]
    is_continuous, distinct = continuous(values)
    if task is None:
        return "regression" if is_continuous else "classification"
    if task == "regression":
        if not ptypes.is_numeric_dtype(values) or ptypes.is_bool_dtype(values):
            example = bounded(values.dropna().iloc[0]) if distinct else "-"
            raise ConfigError(f"{where}key 'model.task': regression needs a numeric target, column "
                              f"'{target}' holds {values.dtype} values (e.g. {example})")
        return "regression"
    if is_continuous:
        examples = ", ".join(f"{v:g}" for v in values.dropna().unique()[:3])
        raise ConfigError(f"{where}key 'model.task': {task} on column '{target}', which holds a continuous "
                          f"quantity ({distinct:,} distinct values in {values.notna().sum():,} rows, e.g. "
                          f"{examples}): a classifier would learn one class per value; set model.task: "
                          "regression or leave it out")
    if task == "binary" and distinct != 2:
        raise ConfigError(f"{where}key 'model.task': binary, but column '{target}' holds {distinct} classes "
                          "in the first batch; set model.task: multiclass (or classification)")
    return "classification"


def first_model_problem(train: pd.DataFrame, target: str, task: str = "classification") -> str | None:
    """Why these training rows cannot make a first model: it needs two classes (one class would be
    frozen as the only one, and the next normal batch rejected for its "new" label), or for a
    regression two distinct values."""
    if task == "regression":
        if train[target].nunique() >= 2:
            return None
        return (f"a first model needs at least two distinct values of '{target}' in its training rows; "
                "release it once a champion exists")
    seen = labels(train[train[target].notna()], target).unique()
    if len(seen) >= 2:
        return None
    only = f"only '{seen[0]}'" if len(seen) else "no label"
    return (f"a first model needs at least two classes of '{target}' in its training rows, this batch has "
            f"{only}; release it once a champion exists")


def features_frame(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Model inputs in schema order: numbers as float, booleans as 0/1, categories as strings; a
    column the frame lacks is missing in every row."""
    from perennial.core.inputs import ModelInputs  # scikit-learn: loaded when first used

    return ModelInputs(schema.features).transform(frame)


def check_column_rules(config: PipelineConfig, schema: Schema) -> None:
    """Every declared rule (`validation.columns`) names a feature column and suits its kind."""
    where = f"{config.config_file}: " if config.config_file else ""
    for name, rule in config.validation.columns.items():
        key = f"key 'validation.columns.{name}'"
        kind = schema.features.get(name)
        if kind is None:
            names = list(schema.features)
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise ConfigError(f"{where}{key}: not a feature column (features: {shown})")
        if (rule.min is not None or rule.max is not None) and kind != "numeric":
            raise ConfigError(f"{where}{key}: min/max need a numeric column, '{name}' is {kind}")
        if rule.categories is not None and kind != "categorical":
            raise ConfigError(f"{where}{key}: categories need a categorical column, '{name}' is {kind}")


def metric_for(config: PipelineConfig, schema: Schema) -> Metric:
    """The metric this model is judged by (`policy.metric`, or the task's default), bound to its
    target; a ConfigError naming the key when it cannot judge this target."""
    from perennial.core.metrics import MetricError, metric_named

    where = f"{config.config_file}: " if config.config_file else ""
    try:
        return metric_named(config.policy.metric, schema.task, schema.classes, config.policy.positive_class,
                            where)
    except MetricError as exc:
        raise ConfigError(str(exc)) from None


def target_values(frame: pd.DataFrame, schema: Schema) -> pd.Series:
    """The target as models learn it: labels as strings (classification) or numbers (regression)."""
    if schema.regression:
        return pd.to_numeric(frame[schema.target], errors="coerce").astype("float64")
    return labels(frame, schema.target)
