"""Labels that arrive later (issue 23), below the flows: the label pool kept in the state, the ledger's
waiting batches, the policy's estimate and gap, and the batch, label and validation adapters on files."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from conftest import make_batch
from perennial.adapters.batch_files import load_batch, read_batch, read_label_file
from perennial.adapters.great_expectations import validate_batch
from perennial.core.config import PolicyConfig, ValidationConfig, load_config
from perennial.core.files import file_sha256
from perennial.core.labels import LabelError, LabelFile, LabelPool, read_labels
from perennial.core.metrics import METRICS
from perennial.core.policy import await_labels, estimated_alarm, with_gap
from perennial.core.schema import features_frame, infer_schema
from perennial.core.state import AWAITING, EXPIRED, STARTED, StateChange, StateStore
from perennial.core.types import (
    Action,
    Batch,
    BatchError,
    CycleRecord,
    Decision,
    DriftResult,
    StateError,
    Trigger,
)

ACCURACY, MAE = METRICS["accuracy"], METRICS["mae"]
POLICY = PolicyConfig(drift_share_moderate=0.2, drift_share_severe=0.5,
                      drop_moderate=0.05, drop_severe=0.15, max_fine_tunes=2)


def label_file(pairs: list[tuple[object, object]], source: str) -> LabelFile:
    return read_labels(pd.DataFrame(pairs, columns=["row", "y"]), "row", "y", source)


def pool_of(*files: tuple[list[tuple[object, object]], str, int]) -> LabelPool:
    """A pool with label files (pairs, name, arrival) added in order; each file's sha is 'sha-<name>'."""
    pool = LabelPool.empty()
    for pairs, name, arrived in files:
        pool = pool.add(label_file(pairs, name), "row", "y", f"sha-{name}", arrived)
    return pool


def held(pool: LabelPool) -> dict[str, object]:
    return dict(zip(pool.frame["id"], pool.frame["target"], strict=True))


# -- The label pool -----------------------------------------------------------------------------------

def test_a_later_file_corrects_an_earlier_label_and_the_replacement_is_counted():
    pool = pool_of(([(1, "a"), (2, "a")], "l1.csv", 0), ([(2, "b"), (3, "b"), (3, "c")], "l2.csv", 1))
    assert held(pool) == {"1": "a", "2": "b", "3": "c"}
    assert pool.duplicates == 2  # id 2 across files, id 3 within l2.csv
    assert pool.files == {"l1.csv": "sha-l1.csv", "l2.csv": "sha-l2.csv"}
    assert dict(zip(pool.frame["id"], pool.frame["arrived"], strict=True)) == {"1": 0, "2": 1, "3": 1}


def test_a_refused_file_is_remembered_with_its_error_and_labels_nothing():
    why = "label file l2.csv: id column 'row' missing"
    pool = pool_of(([(1, "a")], "l1.csv", 0)).refuse("l2.csv", "sha2", why)
    assert pool.refused == {"l2.csv": why}
    assert pool.files == {"l1.csv": "sha-l1.csv", "l2.csv": "sha2"}  # not read again until it changes
    assert held(pool) == {"1": "a"}


def test_without_removes_exactly_the_ids_a_batch_learnt_from():
    pool = pool_of(([(i, "a") for i in range(1, 6)], "l1.csv", 0))
    left = pool.without(pd.Series(["2", "4", "99"]))
    assert sorted(held(left)) == ["1", "3", "5"]
    assert len(pool.frame) == 5  # the pool itself is unchanged


def test_expire_drops_only_old_labels_of_no_pending_batch_and_counts_them():
    pool = pool_of(([(1, "a"), (2, "a"), (3, "a")], "old.csv", 0), ([(4, "b")], "new.csv", 3))
    # now=5, max_wait=3: ids 1-3 arrived 5 batches ago, id 4 two; id 2 belongs to a pending batch.
    expired = pool.expire(5, 3, pending={"2"})
    assert held(expired) == {"2": "a", "4": "b"} and expired.expired == 2
    assert pool.expire(5, 6, pending=set()) is pool  # nothing old enough: unchanged
    assert pool.expire(3, 3, pending=set()).expired == 3  # exactly max_wait batches old expires


def test_the_pool_round_trips_through_json_with_text_ids_and_its_targets_types():
    numbers = pool_of(([(7, 1), (8, 0)], "l1.csv", 2)).refuse("bad.csv", "s", "why")
    numbers.expired = 4
    back = LabelPool.from_json(numbers.to_json())
    assert back.frame["id"].tolist() == ["7", "8"]
    assert back.frame["target"].tolist() == [1, 0] and all(type(v) is int for v in back.frame["target"])
    assert back.frame["arrived"].tolist() == [2, 2]
    assert (back.files, back.refused, back.duplicates, back.expired) == \
        ({"l1.csv": "sha-l1.csv", "bad.csv": "s"}, {"bad.csv": "why"}, 0, 4)
    words = LabelPool.from_json(pool_of(([("007", "yes")], "l1.csv", 0)).to_json())
    assert held(words) == {"007": "yes"}


@pytest.mark.parametrize("text", ['{"ids": [1, 2', '{"ids": [1, 2], "targets": ["a"], "arrived": [0, 0]}',
                                  '[1, 2]'])
def test_a_malformed_label_pool_is_named_and_nothing_is_written(tmp_path, text):
    store = StateStore(tmp_path, "m")
    store.root.mkdir(parents=True)
    (store.root / "labels.json").write_text(text)
    with pytest.raises(StateError) as refused:
        store.label_pool()
    assert str(refused.value).startswith(f"state file {store.root / 'labels.json'}: ")
    assert "Nothing was written" in str(refused.value)
    with pytest.raises(StateError, match="labels.json"):
        store.check()  # a cycle stops before it writes anything
    assert (store.root / "labels.json").read_text() == text


# -- The ledger's waiting batches -----------------------------------------------------------------------

def line(batch: str, **fields) -> CycleRecord:
    defaults = {"rows": 10, "validation": "passed", "drift_share": None, "champion_accuracy_before": None,
                "decision": "noop", "reason": "stable", "champion_version_after": 1}
    return CycleRecord(batch=batch, **{**defaults, **fields})


def waiting(batch: str) -> CycleRecord:
    return line(batch, decision="await_labels", status=AWAITING, reason="waits for its labels")


@pytest.fixture
def store(tmp_path) -> StateStore:
    return StateStore(tmp_path, "m")


def test_waiting_batches_are_pending_oldest_first_and_their_wait_counted_in_newer_batches(store):
    for record in (waiting("a.csv"), line("b.csv"), waiting("c.csv")):
        store.append(record)
    assert [r.batch for r in store.pending()] == ["a.csv", "c.csv"]
    assert store.served("a.csv").reason == "waits for its labels"
    assert store.served("b.csv") is None and store.served("zzz.csv") is None
    assert [store.newer_batches(b) for b in ("a.csv", "c.csv", "zzz.csv")] == [2, 0, 0]


def test_a_waiting_batch_whose_cycle_started_is_still_processed_a_plain_started_one_is_not(store):
    store.append(waiting("a.csv"))
    store.append(line("a.csv", decision="retrain", status=STARTED))  # its labels arrived, cycle under way
    store.append(line("b.csv", decision="retrain", status=STARTED))
    store.append(line("c.csv"))
    assert store.processed() == {"a.csv", "c.csv"}  # a.csv is resumed by the labels run, not read as new
    assert store.intent("a.csv") is not None and store.served("a.csv") is not None
    assert [r.batch for r in store.pending()] == ["a.csv"]


def test_a_batch_learnt_from_once_its_labels_came_moves_to_the_end_and_waits_no_more(store):
    for record in (waiting("a.csv"), line("b.csv"), waiting("c.csv"), line("a.csv", decision="retrain")):
        store.append(record)
    assert [r.batch for r in store.records()] == ["b.csv", "c.csv", "a.csv"]
    assert store.record("a.csv").decision is Action.RETRAIN
    assert [r.batch for r in store.pending()] == ["c.csv"] and store.served("a.csv") is None
    assert "a.csv" in store.processed()


def test_a_batch_learnt_from_later_is_no_newer_arrival_for_the_batches_still_waiting(store):
    """`labels.max_wait_batches` counts batches that arrived: an older batch learnt from when its labels
    came moves to the end of the ledger, but does not make a later waiting batch wait longer."""
    for record in (waiting("a.csv"), waiting("c.csv")):
        store.append(record)
    assert store.newer_batches("c.csv") == 0
    store.append(line("a.csv", decision="retrain"))
    assert store.newer_batches("c.csv") == 0 and store.newer_batches("a.csv") == 1


def test_a_waiting_batch_is_learnt_from_its_labelled_file_once_it_exists(store, tmp_path):
    path = tmp_path / "in" / "a.csv"
    store.append(waiting("a.csv"))
    assert store.judged_file(path) == path  # no labels yet
    labelled = store.labelled_path("a.csv")
    labelled.parent.mkdir(parents=True)
    labelled.write_text("row,x,y\n1,0.5,yes\n")
    assert labelled == store.root / "labelled" / "a.csv"
    assert store.judged_file(path) == labelled
    store.append(line("b.csv", status=EXPIRED))
    assert store.judged_file(tmp_path / "in" / "b.csv") == tmp_path / "in" / "b.csv"
    store.append(line("a.csv", decision="retrain"))  # learnt: its line is no longer awaiting
    assert store.judged_file(path) == path


def test_the_label_pool_is_committed_with_the_ledger_line_or_not_at_all(store, monkeypatch):
    pool = pool_of(([(1, "a"), (2, "b")], "l1.csv", 0)).without(pd.Series(["1"]))
    monkeypatch.setenv("PERENNIAL_FAILPOINT", "staged:raise")
    with pytest.raises(RuntimeError, match="failpoint staged"):
        store.commit(line("a.csv", decision="retrain"), StateChange(labels=pool))
    assert store.records() == [] and store.label_pool().frame.empty  # a crash here leaves neither
    monkeypatch.delenv("PERENNIAL_FAILPOINT")
    with store.lock():  # the next run finishes the staged commit: both
        pass
    assert [r.batch for r in store.records()] == ["a.csv"]
    assert store.label_pool().to_json() == pool.to_json() and held(store.label_pool()) == {"2": "b"}
    store.commit(line("b.csv"), StateChange())  # a commit without labels leaves the pool alone
    assert store.label_pool().to_json() == pool.to_json()


@pytest.mark.parametrize(("decision", "status", "learnable"), [
    ("reject", "done", False), ("await_labels", AWAITING, False), ("noop", EXPIRED, False),
    ("noop", "done", True), ("retrain", "done", True), ("fine_tune", "done", True),
])
def test_only_batches_whose_rows_carry_labels_are_learnable(decision, status, learnable):
    assert line("a.csv", decision=decision, status=status).learnable is learnable


# -- Policy: the estimate when served, the gap when the labels came -----------------------------------

def estimate(value: float, low: float, high: float, metric: str = "accuracy") -> dict:
    return {"metric": metric, "value": value, "low": low, "high": high, "rows": 500,
            "method": "confidence-based", "alarm": False}


@pytest.mark.parametrize(("metric", "band", "reference", "alarm"), [
    (ACCURACY, (0.75, 0.70, 0.80), 0.90, True),
    (ACCURACY, (0.88, 0.85, 0.92), 0.90, False),  # the band reaches the reference
    (ACCURACY, (0.85, 0.80, 0.90), 0.90, False),
    (MAE, (1.35, 1.2, 1.5), 1.0, True),  # higher errors are worse
    (MAE, (0.65, 0.5, 0.8), 1.0, False),
    (ACCURACY, (math.nan, math.nan, math.nan), 0.90, False),
])
def test_an_estimated_alarm_needs_the_whole_band_worse_than_the_reference(metric, band, reference, alarm):
    assert estimated_alarm(estimate(*band, metric=metric.name), reference, metric) is alarm


def test_no_alarm_without_an_estimate_or_a_reference():
    assert not estimated_alarm(None, 0.9, ACCURACY)
    assert not estimated_alarm(estimate(0.5, 0.4, 0.6), None, ACCURACY)


def test_a_batch_served_without_labels_waits_and_says_why_or_with_what_estimate():
    none = await_labels(None, 0.9, ACCURACY, "20 held-out rows, calibration needs at least 30", "no drift")
    assert none.action is Action.AWAIT_LABELS and none.trigger is Trigger.NONE
    assert none.reason == ("waits for its labels: no estimate (20 held-out rows, calibration needs at least "
                           "30); no drift")
    alarm = await_labels(estimate(0.75, 0.70, 0.80), 0.90, ACCURACY, None, "2 drifted column(s)")
    assert (alarm.action, alarm.trigger) == (Action.AWAIT_LABELS, Trigger.DRIFT)
    assert alarm.reason.startswith("alarm, waits for labels: estimated accuracy 75% [70%, 80%] against 90% "
                                   "of recent labelled batches")
    calm = await_labels(estimate(0.89, 0.86, 0.92), 0.90, ACCURACY, None, "no drift")
    assert (calm.action, calm.trigger) == (Action.AWAIT_LABELS, Trigger.NONE)
    assert calm.reason == "waits for its labels: estimated accuracy 89% [86%, 92%] against 90% of recent " \
        "labelled batches; no drift"


def labelled(realised: float, reference: float, rows: int = 2000, metric=None) -> DriftResult:
    return DriftResult(features=[], drift_share=0.0, champion_accuracy=realised, reference_accuracy=reference,
                       reference_rows=rows, batch_rows=rows, metric=metric)


def gap(decision: Decision, band: dict, drift: DriftResult) -> Decision:
    return with_gap(decision, band, drift, fine_tunes=0, policy=POLICY, window_batches=3,
                    since_adaptation=None)


FINE_TUNE = Decision(Action.FINE_TUNE, "moderate drop", trigger=Trigger.DRIFT)
RETRAIN = Decision(Action.RETRAIN, "severe drop", 1, trigger=Trigger.DRIFT)


def test_a_drop_the_estimate_did_not_foresee_is_a_concept_change_retrained_on_this_batch():
    decision = gap(FINE_TUNE, estimate(0.88, 0.86, 0.90), labelled(0.70, 0.90))
    assert (decision.action, decision.supersedes, decision.window_batches, decision.trigger) == \
        (Action.RETRAIN, True, 1, Trigger.DRIFT)
    assert decision.reason.startswith("concept change: realised accuracy 70%, estimated 88% [86%, "
                                      "90%] when served")


def test_a_drop_the_estimate_foresaw_is_covariate_shift_fine_tuned():
    decision = gap(RETRAIN, estimate(0.70, 0.66, 0.74), labelled(0.70, 0.90))
    assert (decision.action, decision.supersedes) == (Action.FINE_TUNE, False)
    assert decision.reason.startswith("covariate shift: realised accuracy 70%, estimated 70% [66%, "
                                      "74%] when served")


@pytest.mark.parametrize(("band", "action"), [((1.0, 0.9, 1.1), Action.RETRAIN),
                                              ((2.0, 1.8, 2.2), Action.FINE_TUNE)])
def test_for_an_error_metric_the_gap_is_a_higher_error_than_the_band(band, action):
    drift = labelled(2.0, 1.0, metric=MAE)  # MAE doubled
    decision = gap(FINE_TUNE, estimate(*band, metric="mae"), drift)
    assert decision.action is action
    assert f"realised mae 2, estimated {band[0]:g} [{band[1]:g}, {band[2]:g}] when served" in decision.reason


def test_without_a_drop_beyond_noise_the_decision_stands_with_both_figures():
    stable = Decision(Action.NOOP, "stable")
    kept = gap(stable, estimate(0.89, 0.87, 0.91), labelled(0.90, 0.90))
    assert (kept.action, kept.reason) == (Action.NOOP, "stable; realised accuracy 90%, estimated 89% [87%, "
                                          "91%] when served")
    # Below the band, but 50 rows each side: a 10-point drop is within the sampling noise.
    noisy = gap(stable, estimate(0.89, 0.86, 0.92), labelled(0.80, 0.90, rows=50))
    assert noisy.action is Action.NOOP and noisy.reason.startswith("stable; realised accuracy 80%")


def test_an_estimate_of_another_metric_or_a_rejected_batch_changes_nothing():
    assert gap(FINE_TUNE, estimate(0.88, 0.86, 0.90, metric="f1"), labelled(0.70, 0.90)) == FINE_TUNE
    rejected = Decision(Action.REJECT, "validation failed")
    assert gap(rejected, estimate(0.88, 0.86, 0.90), labelled(0.70, 0.90)) == rejected
    assert gap(FINE_TUNE, None, labelled(0.70, 0.90)) == FINE_TUNE


# -- Files: batches without their target, label files --------------------------------------------------

def config_at(tmp_path: Path):
    (tmp_path / "model.yaml").write_text("name: m\ndata: {source: in, target: y, id: row}\n"
                                         "labels: {source: late}\n")
    return load_config(tmp_path / "model.yaml")


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def unlabelled(rows: int = 12) -> pd.DataFrame:
    return pd.DataFrame({"row": range(rows), "x": [i / rows for i in range(rows)]})


def test_a_batch_without_its_target_is_read_only_when_labels_come_later(tmp_path):
    path = write_csv(tmp_path / "in" / "b1.csv", unlabelled())
    with pytest.raises(BatchError) as refused:
        read_batch(path, "auto", "y")
    assert str(refused.value) == f"batch file {path}: target column 'y' missing (found: row, x)"
    batch = read_batch(path, "auto", "y", labels_later=True)
    assert list(batch.frame.columns) == ["row", "x"] and batch.rows == 12


def test_an_unlabelled_batch_with_a_repeated_id_is_refused_naming_the_batch_and_the_id_column(tmp_path):
    config = config_at(tmp_path)
    frame = unlabelled()
    frame.loc[5, "row"] = 3
    path = write_csv(tmp_path / "in" / "b1.csv", frame)
    with pytest.raises(BatchError) as refused:
        load_batch(path, config)
    message = str(refused.value)
    assert message.startswith("batch b1.csv: 1 rows repeat the id") and "column 'row'" in message
    fine = write_csv(tmp_path / "in" / "b2.csv", unlabelled())
    assert load_batch(fine, config).sha256 == file_sha256(fine)


def test_a_label_file_without_the_id_column_is_refused_as_a_label_file(tmp_path):
    config = config_at(tmp_path)
    no_id = write_csv(tmp_path / "late" / "l1.csv", pd.DataFrame({"y": ["a", "b"]}))
    with pytest.raises(LabelError) as refused:
        read_label_file(no_id, config)
    assert str(refused.value) == f"label file {no_id}: id column 'row' missing (found: y)"
    no_target = write_csv(tmp_path / "late" / "l2.csv", pd.DataFrame({"row": [1, 2]}))
    with pytest.raises(LabelError) as refused:
        read_label_file(no_target, config)
    assert str(refused.value).startswith(f"label file {no_target}: target column 'y' missing")
    assert "batch file" not in str(refused.value)


def test_label_files_are_read_once_and_again_only_when_changed(tmp_path):
    from perennial.pipeline.flows.labels import gather_labels

    config = config_at(tmp_path)
    model = SimpleNamespace(config=config, store=StateStore(tmp_path / "state", "m"))
    good = write_csv(tmp_path / "late" / "l1.csv", pd.DataFrame({"row": [1, 2], "y": ["a", "b"]}))
    bad = write_csv(tmp_path / "late" / "l2.csv", pd.DataFrame({"y": ["c"]}))
    first = gather_labels(model, set())
    assert held(first) == {"1": "a", "2": "b"} and list(first.refused) == ["l2.csv"]
    assert first.files == {"l1.csv": file_sha256(good), "l2.csv": file_sha256(bad)}
    again = gather_labels(model, set())
    assert again.to_json() == first.to_json() and again.duplicates == 0  # nothing read twice
    write_csv(good, pd.DataFrame({"row": [2], "y": ["z"]}))
    changed = gather_labels(model, set())
    assert held(changed) == {"1": "a", "2": "z"} and changed.duplicates == 1
    assert model.store.label_pool().to_json() == changed.to_json()


# -- Validation of a batch without its target (real Great Expectations) -----------------------------------

REFERENCE = make_batch(300, seed=1)
SCHEMA = infer_schema(REFERENCE, "label", None)


def validate(frame: pd.DataFrame):
    return validate_batch(Batch("b.csv", Path("b.csv"), frame), SCHEMA, features_frame(REFERENCE, SCHEMA),
                          ValidationConfig())


def test_a_batch_without_its_target_is_validated_on_its_features():
    assert SCHEMA.target == "label"
    fine = validate(make_batch(300, seed=2).drop(columns=["label"]))
    assert fine.success and fine.failures == [] and fine.unusable == [] and fine.new_classes == ()
    broken = make_batch(300, seed=2).drop(columns=["label", "colour"])
    broken["x one"] = broken["x one"].astype(object)
    broken.loc[::4, "x one"] = "n/a"
    result = validate(broken)
    assert not result.success
    assert result.failures == ["missing column(s) 'colour'",
                               "column 'x one': values of type object, expected numbers"]
