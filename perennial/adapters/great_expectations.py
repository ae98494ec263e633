"""Great Expectations adapter: a suite derived from the schema, the declared bounds and the champion's
reference data, whose results are classified by the rule that made each expectation.

Three kinds of rule (docs/validation.md):
- the contract (columns, types, booleans, labels) and the bounds declared in `validation.columns`:
  a broken one rejects the batch;
- inferred properties (null rate, range, categories of the reference): one that moved is a shift,
  recorded and returned, unless strict checks are on (globally or for the column), then it rejects.
A released batch (`perennial release`) has every failure waived as a shift, except missing columns
and rows without a label (`UNUSABLE`); its unseen labels are new classes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import pandas as pd

from perennial.core.config import ColumnRule, ValidationConfig
from perennial.core.sampling import batch_seed, uniform_rows
from perennial.core.schema import features_frame, labels
from perennial.core.text import shorten
from perennial.core.types import Batch, Schema, ValidationResult, pct

NUMERIC_TYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                 "float16", "float32", "float64", "Int8", "Int16", "Int32", "Int64", "Float32",
                 "Float64", "bool", "boolean"]
BOOLEAN_VALUES = [True, False, 0, 1, "true", "false", "True", "False", "TRUE", "FALSE", "0", "1"]

CONTRACT, DECLARED, INFERRED = "contract", "declared", "inferred"
# Each check the suite can hold, and the kind of rule it is.
CHECKS = {
    "columns": CONTRACT, "numeric_type": CONTRACT, "boolean_values": CONTRACT,
    "label_present": CONTRACT, "label_known": CONTRACT, "label_numeric": CONTRACT,
    "declared_range": DECLARED, "declared_nulls": DECLARED, "declared_categories": DECLARED,
    "null_rate": INFERRED, "range": INFERRED, "categories": INFERRED,
}
# Checks no release waives: with a column missing, or rows without a label, the file is unfit to learn
# from as it is; it must be fixed (and ingested under a new name).
UNUSABLE = {"columns", "label_present", "label_numeric"}


def _strict(cfg: ValidationConfig, column: str | None) -> bool:
    """Whether the inferred checks of `column` reject: its own `strict`, else the global one."""
    rule = cfg.columns.get(column) if column else None
    return rule.strict if rule is not None and rule.strict is not None else cfg.strict


def _rejects(check: str, column: str | None, cfg: ValidationConfig, released: bool) -> bool:
    """Whether breaking `check` rejects the batch."""
    if check in UNUSABLE:
        return True
    if released:
        return False
    return CHECKS[check] != INFERRED or _strict(cfg, column)


def _meta(check: str, column: str | None, cfg: ValidationConfig, released: bool, **details: Any) -> dict:
    """The expectation's meta: the check that made it, whether it rejects, what its message needs."""
    return {"perennial": {"check": check, "rejects": _rejects(check, column, cfg, released), **details}}


def _declared(E: Any, name: str, rule: ColumnRule | None, has_numbers: bool,
              meta: Callable[..., dict]) -> list[Any]:
    """Expectations for the bounds declared for one column; on every value (no `mostly`)."""
    if rule is None:
        return []
    out = []
    if (rule.min is not None or rule.max is not None) and has_numbers:
        out.append(E.ExpectColumnValuesToBeBetween(
            column=name, min_value=rule.min, max_value=rule.max, meta=meta("declared_range")))
    if rule.max_null_rate is not None:
        out.append(E.ExpectColumnValuesToNotBeNull(
            column=name, mostly=1.0 - rule.max_null_rate, meta=meta("declared_nulls")))
    if rule.categories is not None:
        out.append(E.ExpectColumnValuesToBeInSet(
            column=name, value_set=rule.categories, meta=meta("declared_categories")))
    return out


def _inferred(E: Any, name: str, kind: str, ref: pd.Series, cfg: ValidationConfig, has_numbers: bool,
              meta: Callable[..., dict]) -> list[Any]:
    """Expectations for one column inferred from the reference: null rate, range, categories."""
    reference_nulls = float(ref.isna().mean())
    allowed_nulls = min(1.0, reference_nulls + cfg.null_rate_tolerance)
    out = [E.ExpectColumnValuesToNotBeNull(
        column=name, mostly=1.0 - allowed_nulls,
        meta=meta("null_rate", reference=reference_nulls, tolerance=cfg.null_rate_tolerance))]
    if kind == "numeric" and has_numbers and ref.notna().any():
        low, high = float(ref.min()), float(ref.max())
        pad = (high - low) * cfg.range_tolerance
        out.append(E.ExpectColumnValuesToBeBetween(
            column=name, min_value=low - pad, max_value=high + pad, mostly=cfg.range_mostly,
            meta=meta("range", low=low, high=high, tolerance=cfg.range_tolerance)))
    elif kind == "categorical":
        out.append(E.ExpectColumnValuesToBeInSet(
            column=name, value_set=sorted(ref.dropna().unique().tolist()), mostly=cfg.category_mostly,
            meta=meta("categories")))
    return out


def build_expectations(schema: Schema, reference: pd.DataFrame | None, cfg: ValidationConfig,
                       dtypes: dict[str, str], released: bool = False) -> list[Any]:
    """Expectations for a batch: the contract, the declared bounds and, given the champion's
    reference, the inferred null rates, ranges and categories; each tagged with its rule (meta)."""
    import great_expectations as gx

    E = gx.expectations
    # A batch served without its labels (they come later, `labels.source`) is checked on its features.
    labelled = [schema.target] if schema.target in dtypes else []
    out: list[Any] = [E.ExpectTableColumnsToMatchSet(
        column_set=[*schema.features, *labelled], exact_match=False,
        meta=_meta("columns", None, cfg, released))]
    for name, kind in schema.features.items():
        if name not in dtypes:
            continue  # reported once by the table expectation
        meta = partial(_meta, column=name, cfg=cfg, released=released)
        # Ranges of text are meaningless; the type failure says it all.
        has_numbers = dtypes[name] in NUMERIC_TYPES
        if kind == "numeric":
            out.append(E.ExpectColumnValuesToBeInTypeList(
                column=name, type_list=NUMERIC_TYPES, meta=meta("numeric_type")))
        elif kind == "boolean":
            out.append(E.ExpectColumnValuesToBeInSet(
                column=name, value_set=BOOLEAN_VALUES, meta=meta("boolean_values")))
        out += _declared(E, name, cfg.columns.get(name), has_numbers, meta)
        if reference is not None and name in reference:
            out += _inferred(E, name, kind, reference[name], cfg, has_numbers, meta)
    if schema.target in dtypes:
        meta = partial(_meta, column=schema.target, cfg=cfg, released=released)
        out.append(E.ExpectColumnValuesToNotBeNull(column=schema.target, meta=meta("label_present")))
        if schema.regression:  # a regression's target: numbers, whatever their values
            out.append(E.ExpectColumnValuesToBeInTypeList(
                column=schema.target, type_list=NUMERIC_TYPES, meta=meta("label_numeric")))
        # A released batch's unseen labels are new classes, as with `allow_new_classes`.
        elif not (cfg.allow_new_classes or released):
            out.append(E.ExpectColumnValuesToBeInSet(
                column=schema.target, value_set=list(schema.classes), meta=meta("label_known")))
    return out


def _checked_frame(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Raw numeric and boolean columns (their types are under test); categories and labels as strings."""
    out = frame.copy()
    categorical = [c for c in schema.columns("categorical") if c in frame]
    if categorical:
        converted = features_frame(frame[categorical], Schema(
            {c: "categorical" for c in categorical}, schema.target, schema.classes))
        out[categorical] = converted
    if schema.target in frame and not schema.regression:
        out[schema.target] = labels(frame, schema.target).where(frame[schema.target].notna())
    return out


# Longest value a message quotes from a batch (a column name, a category, an example): a batch of
# 1 MB category values made 3 MB ledger lines and events larger than Prefect accepts.
VALUE_CHARS = 60


def _values(values: list[Any], limit: int = 10) -> str:
    shown = ", ".join(shorten(str(v), VALUE_CHARS) for v in values[:limit])
    return shown + (", ..." if len(values) > limit else "")


def _declared_range(low: float | None, high: float | None) -> str:
    if low is None:
        return f"above the declared max {high:g}"
    if high is None:
        return f"below the declared min {low:g}"
    return f"outside the declared range [{low:g}, {high:g}]"


def _message(check: str, details: dict, kwargs: dict, result: dict, dtypes: dict[str, str]) -> str:
    """What broke or moved, and against what; one line naming the column."""
    column = shorten(str(kwargs.get("column")), VALUE_CHARS)
    unexpected = float(result.get("unexpected_percent") or 0.0)
    count = int(result.get("unexpected_count") or 0)
    examples = _values(list(dict.fromkeys(map(str, result.get("partial_unexpected_list") or [])))[:3])
    allowed = pct(1 - (kwargs.get("mostly") or 1.0), 1)
    if check == "columns":
        missing = (result.get("details") or {}).get("mismatched", {}).get("missing") or []
        return "missing column(s) " + ", ".join(f"'{shorten(str(c), VALUE_CHARS)}'" for c in missing)
    if check == "numeric_type":
        return f"column '{column}': values of type {dtypes.get(column)}, expected numbers"
    if check == "boolean_values":
        return f"column '{column}': {pct(unexpected / 100, 1)} of values not true/false (e.g. {examples})"
    if check == "label_present":
        return f"label column '{column}': {count:,} row(s) without a label"
    if check == "label_numeric":
        return f"target column '{column}': values of type {dtypes.get(column)}, expected numbers (regression)"
    if check == "label_known":
        return f"label column '{column}': labels never seen before: {examples}"
    # Declared bounds without a rate are exact on a large batch too: count every breaking value.
    if check == "declared_range":
        bound = _declared_range(kwargs.get("min_value"), kwargs.get("max_value"))
        return f"column '{column}': {count:,} value(s) {bound} (e.g. {examples})"
    if check == "declared_nulls":
        return f"column '{column}': {pct(unexpected / 100, 1)} missing values, declared at most {allowed}"
    if check == "declared_categories":
        return (f"column '{column}': {count:,} value(s) not in the declared categories "
                f"({_values(kwargs['value_set'])}) (e.g. {examples})")
    if check == "null_rate":
        return (f"column '{column}': {pct(unexpected / 100, 1)} missing values, reference "
                f"{pct(details['reference'], 1)} + tolerance {pct(details['tolerance'], 1)}")
    if check == "range":
        return (f"column '{column}': {pct(unexpected / 100, 1)} of values outside the reference range "
                f"[{details['low']:.4g}, {details['high']:.4g}] widened by {details['tolerance']:.0%} to "
                f"[{kwargs['min_value']:.4g}, {kwargs['max_value']:.4g}], at most {allowed} allowed "
                f"(e.g. {examples})")
    return (f"column '{column}': {pct(unexpected / 100, 1)} of values not among the reference categories "
            f"({_values(kwargs['value_set'])}), at most {allowed} allowed (e.g. {examples})")


def rows_to_check(frame: pd.DataFrame, batch_labels: pd.Series | None, schema: Schema, cfg: ValidationConfig,
                  seed: int) -> pd.DataFrame:
    """A large batch's rows GX checks: a uniform sample, plus every row that breaks a rule with no
    tolerance (a missing or unseen label, a non-boolean value in a boolean column, a value outside
    a declared range or categories, a missing value where none is allowed), so those verdicts are
    the full batch's; rates with a tolerance are the sample's estimates."""
    if len(frame) <= cfg.sample_rows:
        return frame
    exact = pd.Series(False, index=frame.index)
    if batch_labels is not None:
        exact |= frame[schema.target].isna() | ~batch_labels.isin(schema.classes)
    for name in schema.columns("boolean"):
        if name in frame:
            exact |= frame[name].notna() & ~frame[name].isin(BOOLEAN_VALUES)
    for name, rule in cfg.columns.items():
        if name in frame:
            exact |= _breaks_declared(frame[name], rule)
    return uniform_rows(frame, cfg.sample_rows, seed, keep=exact.to_numpy())


def _breaks_declared(values: pd.Series, rule: ColumnRule) -> pd.Series:
    """Rows whose value breaks a declared bound that has no tolerance."""
    breaks = pd.Series(False, index=values.index)
    if rule.max_null_rate == 0:
        breaks |= values.isna()
    if str(values.dtype) in NUMERIC_TYPES:
        if rule.min is not None:
            breaks |= values < rule.min
        if rule.max is not None:
            breaks |= values > rule.max
    if rule.categories is not None:
        breaks |= values.notna() & ~values.astype(str).isin(rule.categories)
    return breaks


def run_suite(batch: Batch, schema: Schema, reference: pd.DataFrame | None, cfg: ValidationConfig,
              release_reason: str | None = None) -> ValidationResult:
    """Run the derived suite with GX Core and translate its result into ours: rejecting failures,
    shifts, and failures no release can waive. `release_reason`: the batch was released; waive the
    rest."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    released = release_reason is not None
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    name = f"batch-{uuid.uuid4().hex[:8]}"
    definition = (context.data_sources.add_pandas(name).add_dataframe_asset(name)
                  .add_batch_definition_whole_dataframe(name))
    suite = gx.ExpectationSuite(name=name)
    dtypes = {str(c): str(t) for c, t in batch.frame.dtypes.items()}
    for expectation in build_expectations(schema, reference, cfg, dtypes, released):
        suite.add_expectation(expectation)
    suite = context.suites.add(suite)
    batch_labels = labels(batch.frame, schema.target) \
        if schema.target in batch.frame and not schema.regression else None
    checked = rows_to_check(batch.frame, batch_labels, schema, cfg, batch_seed(batch.id))
    run = gx.ValidationDefinition(data=definition, suite=suite, name=name).run(
        batch_parameters={"dataframe": _checked_frame(checked, schema)}, result_format="SUMMARY")

    failures, shifts, shifted, unusable = [], [], [], []
    for r in run.results:
        if r.success:
            continue
        config = r.expectation_config
        rule = config.meta["perennial"]  # classified by the rule that made it, never by position
        message = _message(rule["check"], rule, config.kwargs, r.result or {}, dtypes)
        if rule["check"] in UNUSABLE:
            unusable.append(message)
        if rule["rejects"]:
            failures.append(message)
        else:
            shifts.append(message)
            shifted.append(config.kwargs["column"])
    new_classes: tuple[str, ...] = ()
    if batch_labels is not None:
        seen = set(batch_labels[batch.frame[schema.target].notna()].unique())
        new_classes = tuple(sorted(seen - set(schema.classes)))
    return ValidationResult(success=not failures, failures=failures, expectations=len(run.results),
                            new_classes=new_classes, report=run.describe_dict(), shifts=shifts,
                            shifted_columns=list(dict.fromkeys(shifted)), unusable=unusable,
                            release_reason=release_reason)


def validate_batch(batch: Batch, schema: Schema, reference: pd.DataFrame | None, cfg: ValidationConfig,
                   release_reason: str | None = None) -> ValidationResult:
    """Check a batch against the schema, the declared bounds and the champion's reference data."""
    return run_suite(batch, schema, reference, cfg, release_reason)
