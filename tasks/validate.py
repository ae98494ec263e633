"""Great Expectations adapter: a suite derived from the schema and the champion's reference data."""

from __future__ import annotations

import uuid
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from perennial.config import ValidationConfig
from perennial.sampling import batch_seed, uniform_rows
from perennial.schema import features_frame, labels
from perennial.types import Batch, Schema, ValidationResult

NUMERIC_TYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                 "float16", "float32", "float64", "Int8", "Int16", "Int32", "Int64", "Float32",
                 "Float64", "bool", "boolean"]
BOOLEAN_VALUES = [True, False, 0, 1, "true", "false", "True", "False", "TRUE", "FALSE", "0", "1"]


def build_expectations(schema: Schema, reference: pd.DataFrame | None, cfg: ValidationConfig,
                       dtypes: dict[str, str]) -> list[Any]:
    """Expectations for a batch: columns, types, null rates, ranges, categories and labels."""
    import great_expectations as gx

    E = gx.expectations
    out: list[Any] = [E.ExpectTableColumnsToMatchSet(
        column_set=[*schema.features, schema.target], exact_match=False)]
    for name, kind in schema.features.items():
        if name not in dtypes:
            continue  # reported once by the table expectation
        if kind == "numeric":
            out.append(E.ExpectColumnValuesToBeInTypeList(column=name, type_list=NUMERIC_TYPES))
            if dtypes[name] not in NUMERIC_TYPES:
                continue  # ranges of text are meaningless; the type failure says it all
        elif kind == "boolean":
            out.append(E.ExpectColumnValuesToBeInSet(column=name, value_set=BOOLEAN_VALUES))
        if reference is None or name not in reference:
            continue
        ref = reference[name]
        allowed_nulls = min(1.0, float(ref.isna().mean()) + cfg.null_rate_tolerance)
        out.append(E.ExpectColumnValuesToNotBeNull(column=name, mostly=1.0 - allowed_nulls))
        if kind == "numeric" and ref.notna().any():
            low, high = float(ref.min()), float(ref.max())
            pad = (high - low) * cfg.range_tolerance
            out.append(E.ExpectColumnValuesToBeBetween(
                column=name, min_value=low - pad, max_value=high + pad, mostly=cfg.range_mostly))
        elif kind == "categorical":
            out.append(E.ExpectColumnValuesToBeInSet(
                column=name, value_set=sorted(ref.dropna().unique().tolist()), mostly=cfg.category_mostly))
    if schema.target in dtypes:
        out.append(E.ExpectColumnValuesToNotBeNull(column=schema.target))
        if not cfg.allow_new_classes:
            out.append(E.ExpectColumnValuesToBeInSet(column=schema.target, value_set=list(schema.classes)))
    return out


def _checked_frame(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Raw numeric and boolean columns (their types are under test); categories and labels as strings."""
    out = frame.copy()
    categorical = [c for c in schema.columns("categorical") if c in frame]
    if categorical:
        converted = features_frame(frame[categorical], Schema(
            {c: "categorical" for c in categorical}, schema.target, schema.classes))
        out[categorical] = converted
    if schema.target in frame:
        out[schema.target] = labels(frame, schema.target).where(frame[schema.target].notna())
    return out


def _pct(value: float) -> str:
    return f"{value:.1f}%"


def _failure_message(kind: str, kwargs: dict, result: dict, schema: Schema,
                     dtypes: dict[str, str]) -> str:
    column = kwargs.get("column")
    unexpected = float(result.get("unexpected_percent") or 0.0)
    examples = ", ".join(list(dict.fromkeys(map(str, result.get("partial_unexpected_list") or [])))[:3])
    if kind == "expect_table_columns_to_match_set":
        missing = (result.get("details") or {}).get("mismatched", {}).get("missing") or []
        return "missing column(s) " + ", ".join(f"'{c}'" for c in missing)
    if kind == "expect_column_values_to_be_in_type_list":
        return f"column '{column}': values of type {dtypes.get(column)}, expected numbers"
    if kind == "expect_column_values_to_not_be_null":
        allowed = 100 * (1 - kwargs.get("mostly", 1.0))
        return f"column '{column}': {_pct(unexpected)} missing values, at most {_pct(allowed)} allowed"
    if kind == "expect_column_values_to_be_between":
        return (f"column '{column}': {_pct(unexpected)} of values outside "
                f"[{kwargs['min_value']:.4g}, {kwargs['max_value']:.4g}] (e.g. {examples})")
    if kind == "expect_column_values_to_be_in_set" and column == schema.target:
        return f"label column '{column}': labels never seen before: {examples}"
    if kind == "expect_column_values_to_be_in_set":
        expected = "true/false" if schema.features.get(column) == "boolean" else "known categories"
        return f"column '{column}': {_pct(unexpected)} of values not {expected} (e.g. {examples})"
    return f"{kind} failed on column '{column}'"


def rows_to_check(frame: pd.DataFrame, batch_labels: pd.Series | None, schema: Schema, cfg: ValidationConfig,
                  seed: int) -> pd.DataFrame:
    """A large batch's rows GX checks: a uniform sample, plus every row that breaks a rule with no
    tolerance (a missing or unseen label, a non-boolean value in a boolean column), so those
    verdicts are the full batch's; rates with a tolerance are the sample's estimates."""
    if len(frame) <= cfg.sample_rows:
        return frame
    exact = pd.Series(False, index=frame.index)
    if batch_labels is not None:
        exact |= frame[schema.target].isna() | ~batch_labels.isin(schema.classes)
    for name in schema.columns("boolean"):
        if name in frame:
            exact |= frame[name].notna() & ~frame[name].isin(BOOLEAN_VALUES)
    return uniform_rows(frame, cfg.sample_rows, seed, keep=exact.to_numpy())


def run_suite(batch: Batch, schema: Schema, reference: pd.DataFrame | None,
              cfg: ValidationConfig) -> ValidationResult:
    """Run the derived suite with GX Core and translate its result into ours."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    name = f"batch-{uuid.uuid4().hex[:8]}"
    definition = (context.data_sources.add_pandas(name).add_dataframe_asset(name)
                  .add_batch_definition_whole_dataframe(name))
    suite = gx.ExpectationSuite(name=name)
    dtypes = {str(c): str(t) for c, t in batch.frame.dtypes.items()}
    for expectation in build_expectations(schema, reference, cfg, dtypes):
        suite.add_expectation(expectation)
    suite = context.suites.add(suite)
    batch_labels = labels(batch.frame, schema.target) if schema.target in batch.frame else None
    checked = rows_to_check(batch.frame, batch_labels, schema, cfg, batch_seed(batch.id))
    run = gx.ValidationDefinition(data=definition, suite=suite, name=name).run(
        batch_parameters={"dataframe": _checked_frame(checked, schema)}, result_format="SUMMARY")

    failures = [
        _failure_message(r.expectation_config.type, r.expectation_config.kwargs, r.result or {}, schema,
                         dtypes)
        for r in run.results if not r.success
    ]
    new_classes: tuple[str, ...] = ()
    if batch_labels is not None:
        seen = set(batch_labels.unique())
        new_classes = tuple(sorted(seen - set(schema.classes)))
    return ValidationResult(success=run.success, failures=failures,
                            expectations=len(run.results), new_classes=new_classes,
                            report=run.describe_dict())


@task(cache_policy=NO_CACHE)
def validate_batch(batch: Batch, schema: Schema, reference: pd.DataFrame | None,
                   cfg: ValidationConfig) -> ValidationResult:
    """Check a batch against the schema and the champion's reference data."""
    return run_suite(batch, schema, reference, cfg)
