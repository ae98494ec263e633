"""Schema inference, and the conversion of a raw batch to model inputs (perennial.core.inputs)."""

from __future__ import annotations

import pandas as pd
from pandas.api import types as ptypes

from perennial.core.config import ConfigError, FeatureKind, PipelineConfig
from perennial.core.types import Schema


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


def infer_schema(frame: pd.DataFrame, target: str, declared: dict[str, FeatureKind] | None) -> Schema:
    """Declared features if given, else every non-target column with its inferred kind."""
    if declared:
        features = dict(declared)
    else:
        features = {c: infer_kind(frame[c]) for c in frame.columns if c != target}
    return Schema(features=features, target=target, classes=tuple(sorted(labels(frame, target).unique())))


def labels(frame: pd.DataFrame, target: str) -> pd.Series:
    """Labels as strings, so 1 read from CSV and 1 read from Parquet are one class."""
    series = frame[target]
    if ptypes.is_float_dtype(series) and (series.dropna() % 1 == 0).all():
        series = series.astype("Int64")
    return series.astype(str)


# A numeric target is continuous with at least 20 distinct values some of which are fractional, or
# with at least 50 integers distinct in more than a tenth of its rows (README: the target column).
# sklearn's diabetes (214 integers in 442 rows) and river's ChickWeights (212 in 578) are continuous;
# digits (10 classes) and 60 integer classes in 5,000 rows are labels.
FRACTIONAL_VALUES, INTEGER_VALUES, INTEGER_SHARE = 20, 50, 0.1


def check_target_is_a_label(frame: pd.DataFrame, config: PipelineConfig) -> None:
    """ConfigError when the target column plainly holds a quantity, not labels: a classifier would
    learn one class per value (a car-price stream trained for more than 10 minutes, silently)."""
    target = config.data.target
    values = frame[target].dropna()
    if not ptypes.is_numeric_dtype(values) or ptypes.is_bool_dtype(values):
        return
    distinct = values.nunique()
    if bool((values % 1 != 0).any()):
        continuous = distinct >= FRACTIONAL_VALUES
    else:
        continuous = distinct >= INTEGER_VALUES and distinct > INTEGER_SHARE * len(values)
    if not continuous:
        return
    where = f"{config.config_file}: " if config.config_file else ""
    examples = ", ".join(f"{v:g}" for v in values.unique()[:3])
    raise ConfigError(f"{where}key 'data.target': column '{target}' holds a continuous quantity "
                      f"({distinct:,} distinct values in {len(values):,} rows, e.g. {examples}); Perennial's "
                      "models are classifiers, which would learn one class per value: regression is not "
                      "supported yet")


def first_model_problem(train: pd.DataFrame, target: str) -> str | None:
    """Why these training rows cannot make a first model: it needs two classes (one class would be
    frozen as the only one, and the next normal batch rejected for its "new" label)."""
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
