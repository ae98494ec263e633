"""The Great Expectations and Evidently adapters on real data, returning our own result types."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import make_batch
from perennial.config import DriftConfig, ValidationConfig
from perennial.schema import features_frame, infer_schema
from perennial.types import Batch
from tasks.drift import batch_drift, evidently_drift
from tasks.validate import run_suite

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
    assert "missing column(s) 'colour'" in result.failures
    assert "column 'x one': values of type object, expected numbers" in result.failures
    assert any(re.fullmatch(r"column 'noise': 5\d\.\d% missing values, at most 7\.\d% allowed", f)
               for f in result.failures), result.failures
    assert any(f.startswith("column 'x-two': 33.") and "of values outside [" in f for f in result.failures)
    assert "label column 'label': labels never seen before: unknown" in result.failures
    assert any(f.startswith("column 'is member':") and "not true/false (e.g. perhaps)" in f
               for f in result.failures)


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
