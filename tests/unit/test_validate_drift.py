"""The Great Expectations and Evidently adapters on real data, returning our own result types."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import make_batch, with_nulls
from perennial.adapters.evidently import batch_drift, evidently_drift
from perennial.adapters.great_expectations import run_suite
from perennial.core.config import ConfigError, DriftConfig, ValidationConfig, load_config
from perennial.core.schema import check_column_rules, features_frame, infer_schema
from perennial.core.types import Batch

REFERENCE = make_batch(seed=1)
SCHEMA = infer_schema(REFERENCE, "label", None)
CFG = ValidationConfig()


def check(frame, cfg=CFG):
    return run_suite(Batch("b.csv", Path("b.csv"), frame), SCHEMA, features_frame(REFERENCE, SCHEMA), cfg)


def test_a_batch_like_the_reference_passes():
    result = check(make_batch(seed=2))
    assert result.success, result.failures
    assert result.expectations >= 12


def test_each_kind_of_violation_is_named():
    frame = make_batch(seed=2).drop(columns=["colour"])
    frame["x one"] = frame["x one"].astype(object)
    frame.loc[::4, "x one"] = "n/a"
    frame.loc[::2, "noise"] = None
    frame.loc[::3, "x-two"] = 1e6
    frame.loc[:5, "label"] = "unknown"
    frame["is member"] = frame["is member"].astype(object)
    frame.loc[::5, "is member"] = "perhaps"
    result = check(frame)
    assert not result.success
    # Broken contract: rejects.
    assert result.failures == [
        "missing column(s) 'colour'",
        "column 'x one': values of type object, expected numbers",
        "column 'is member': 20.0% of values not true/false (e.g. perhaps)",
        "label column 'label': labels never seen before: unknown",
    ]
    assert result.unusable == ["missing column(s) 'colour'"]
    # Inferred properties that moved: shifts, named with what they moved against.
    noise = r"column 'noise': 5\d\.\d% missing values, reference 2\.\d% \+ tolerance 5\.0%"
    assert any(re.fullmatch(noise, s) for s in result.shifts), result.shifts
    assert any(s.startswith("column 'x-two': 33.4% of values outside the reference range [0.008, 9.968] "
                            "widened by 50% to [-4.972, 14.95], at most 5.0% allowed") for s in result.shifts)
    assert result.shifted_columns == ["x-two", "noise"]


NULLY_REFERENCE = with_nulls(REFERENCE, ["noise", "x one"], 15)


def shifted_batch():
    """Null rates of 'x one' and 'noise' 15% -> 22%, and 10% of 'x-two' far outside its range."""
    frame = with_nulls(make_batch(seed=2), ["noise", "x one"], 22)
    frame.loc[frame.index % 10 == 0, "x-two"] += 20
    return frame


def check_shifted(cfg=CFG):
    return run_suite(Batch("b.csv", Path("b.csv"), shifted_batch()), SCHEMA,
                     features_frame(NULLY_REFERENCE, SCHEMA), cfg)


NULL_SHIFTS = ["column 'x one': 22.0% missing values, reference 15.0% + tolerance 5.0%",
               "column 'noise': 22.0% missing values, reference 15.0% + tolerance 5.0%"]
RANGE_SHIFT = ("column 'x-two': 10.0% of values outside the reference range [0.008, 9.968] widened by 50% "
               "to [-4.972, 14.95], at most 5.0% allowed (e.g. 23.969, 28.875, 27.812)")


def test_null_rate_rise_and_out_of_range_values_are_shifts_not_failures_by_default():
    result = check_shifted()
    assert result.success and result.failures == []
    assert result.shifts == [NULL_SHIFTS[0], RANGE_SHIFT, NULL_SHIFTS[1]]
    assert result.shifted_columns == ["x one", "x-two", "noise"]


def test_strict_checks_reject_shifts_globally_or_per_column():
    strict = check_shifted(ValidationConfig(strict=True))
    assert not strict.success
    assert strict.failures == [NULL_SHIFTS[0], RANGE_SHIFT, NULL_SHIFTS[1]] and strict.shifts == []

    noise_only = check_shifted(ValidationConfig(columns={"noise": {"strict": True}}))
    assert noise_only.failures == [NULL_SHIFTS[1]]
    assert noise_only.shifted_columns == ["x one", "x-two"]

    all_but_x_two = check_shifted(ValidationConfig(strict=True, columns={"x-two": {"strict": False}}))
    assert all_but_x_two.failures == NULL_SHIFTS and all_but_x_two.shifts == [RANGE_SHIFT]


def test_declared_bounds_reject_naming_the_column_and_the_bound():
    frame = with_nulls(make_batch(seed=2), ["noise"], 10)
    frame.loc[:9, "x one"] = 12.5
    frame.loc[:2, "colour"] = "purple"
    cfg = ValidationConfig(columns={"x one": {"min": 0, "max": 10.5}, "noise": {"max_null_rate": 0.05},
                                    "colour": {"categories": ["red", "green", "blue"]}})
    result = check(frame, cfg)
    assert not result.success
    assert result.failures == [
        "column 'x one': 10 value(s) outside the declared range [0, 10.5] (e.g. 12.5)",
        "column 'noise': 10.0% missing values, declared at most 5.0%",
        "column 'colour': 3 value(s) not in the declared categories (red, green, blue) (e.g. purple)",
    ]


def test_declared_bounds_apply_without_a_reference():
    frame = make_batch(seed=2)
    frame.loc[:1, "x one"] = -1.0
    cfg = ValidationConfig(columns={"x one": {"min": 0}})
    result = run_suite(Batch("b.csv", Path("b.csv"), frame), SCHEMA, None, cfg)
    assert result.failures == ["column 'x one': 2 value(s) below the declared min 0 (e.g. -1.0)"]


def test_released_batch_has_its_failures_waived_except_unusable_ones():
    frame = make_batch(seed=2)
    frame.loc[:9, "x one"] = 12.5
    frame.loc[:5, "label"] = "unknown"
    cfg = ValidationConfig(columns={"x one": {"max": 10.5}})
    released = run_suite(Batch("b.csv", Path("b.csv"), frame), SCHEMA, features_frame(REFERENCE, SCHEMA), cfg,
                         release_reason="a new normal")
    assert released.success and released.release_reason == "a new normal"
    assert released.shifts == ["column 'x one': 10 value(s) above the declared max 10.5 (e.g. 12.5)"]
    assert released.new_classes == ("unknown",)  # accepted as a new class, as with allow_new_classes

    frame = frame.drop(columns=["colour"])
    frame.loc[7, "label"] = None
    still = run_suite(Batch("b.csv", Path("b.csv"), frame), SCHEMA, features_frame(REFERENCE, SCHEMA), cfg,
                      release_reason="a new normal")
    assert still.failures == still.unusable == ["missing column(s) 'colour'",
                                                "label column 'label': 1 row(s) without a label"]


def test_new_labels_pass_when_allowed_and_are_reported():
    frame = make_batch(seed=2)
    frame.loc[:10, "label"] = "medium"
    result = check(frame, ValidationConfig(allow_new_classes=True))
    assert result.success
    assert result.new_classes == ("medium",)


def test_unknown_categories_within_tolerance_pass():
    frame = make_batch(seed=2)
    frame.loc[:5, "colour"] = "purple"
    assert check(frame).success


def test_drift_flags_the_shifted_columns_only(tmp_path):
    reference = features_frame(REFERENCE, SCHEMA)
    current = features_frame(make_batch(seed=2), SCHEMA)
    current["noise"] += 1.0
    result = evidently_drift(current, reference, SCHEMA, DriftConfig(), tmp_path / "r.html")
    assert result.drifted_columns == ["noise"]
    assert result.drift_share == 1 / 5
    noise = next(f for f in result.features if f.column == "noise")
    assert noise.method == "Wasserstein distance (normed)" and noise.score > noise.threshold == 0.1
    assert (tmp_path / "r.html").stat().st_size > 100_000


def test_drift_method_and_threshold_come_from_config():
    reference = features_frame(REFERENCE, SCHEMA)
    current = features_frame(make_batch(seed=2), SCHEMA)
    result = evidently_drift(current, reference, SCHEMA, DriftConfig(method="psi", threshold=0.2), None)
    assert {f.method for f in result.features} == {"psi"}
    assert {f.threshold for f in result.features} == {0.2}
    assert result.drift_share == 0.0


def test_a_large_batch_is_checked_on_a_sample_but_a_single_unseen_label_still_fails():
    frame = make_batch(30_000, seed=3)
    frame.loc[17_345, "label"] = "pending"  # one row in 30,000: a uniform sample of 2,000 would miss it
    result = check(frame, ValidationConfig(sample_rows=2000))
    assert not result.success
    assert result.failures == ["label column 'label': labels never seen before: pending"]


def test_a_declared_bound_on_a_large_batch_is_exact():
    frame = make_batch(30_000, seed=3)
    frame.loc[23_456, "x one"] = 50.0  # one row in 30,000 above the declared max
    result = check(frame, ValidationConfig(sample_rows=2000, columns={"x one": {"max": 10}}))
    assert not result.success
    assert result.failures == ["column 'x one': 1 value(s) above the declared max 10 (e.g. 50.0)"]


def test_a_rule_for_a_column_that_is_not_a_feature_is_a_config_error(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("name: m\ndata: {source: in, target: label}\nvalidation: {columns: {x_one: {min: 0}}}\n")
    with pytest.raises(ConfigError) as err:
        check_column_rules(load_config(path), SCHEMA)
    assert str(err.value) == (f"{path}: key 'validation.columns.x_one': not a feature column "
                              "(features: x one, x-two, noise, colour, is member)")
    path.write_text("name: m\ndata: {source: in, target: label}\nvalidation: {columns: {colour: {max: 3}}}\n")
    with pytest.raises(ConfigError, match=r"'validation.columns.colour': min/max need a numeric column, "
                       r"'colour' is categorical"):
        check_column_rules(load_config(path), SCHEMA)


def test_sampled_drift_confirms_borderline_columns_on_every_row():
    reference = features_frame(REFERENCE, SCHEMA)
    frame = make_batch(30_000, seed=4)
    frame["noise"] += 0.08  # normed Wasserstein 0.106 on every row: near the 0.1 threshold
    cfg = DriftConfig(sample_rows=5000)
    sampled = batch_drift(Batch("b.csv", Path("b.csv"), frame), reference, SCHEMA, cfg, None)
    every_row = evidently_drift(features_frame(frame, SCHEMA), reference, SCHEMA, cfg, None)
    noise = {key: next(f for f in d.features if f.column == "noise")
             for key, d in (("s", sampled), ("a", every_row))}
    assert noise["s"].method == "Wasserstein distance (normed) (every row)"
    assert noise["s"].score == noise["a"].score and noise["s"].drifted == noise["a"].drifted
    assert [f.drifted for f in sampled.features] == [f.drifted for f in every_row.features]
