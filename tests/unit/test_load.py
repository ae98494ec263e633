"""Reading batches: clear one-line errors for files that cannot serve; stable holdout splits."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_batch
from perennial.adapters.batch_files import batch_files, iter_chunks, read_batch, split_holdout
from perennial.core.types import BatchError


def test_batch_files_in_name_order_skipping_hidden_and_other_files(tmp_path):
    for name in ["b.csv", "a.parquet", ".c.csv.tmp", ".d.csv", "notes.txt"]:
        (tmp_path / name).write_text("x")
    assert [p.name for p in batch_files(str(tmp_path))] == ["a.parquet", "b.csv"]
    assert [p.name for p in batch_files(str(tmp_path / "*.csv"))] == ["b.csv"]


def test_csv_and_parquet_read_the_same(tmp_path):
    frame = make_batch(50, seed=0)
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.to_parquet(tmp_path / "a.parquet", index=False)
    csv, parquet = (read_batch(tmp_path / n, "auto", "label") for n in ("a.csv", "a.parquet"))
    assert csv.rows == parquet.rows == 50
    assert list(csv.frame.columns) == list(parquet.frame.columns)


def test_a_file_is_read_in_chunks_without_loading_it_whole(tmp_path):
    frame = make_batch(1_005, seed=0)
    frame.to_parquet(tmp_path / "a.parquet", index=False)
    (tmp_path / "a.csv").write_text(frame.to_csv(index=False).rstrip("\n"))  # no final line break
    for name in ("a.parquet", "a.csv"):
        assert [len(chunk) for chunk in iter_chunks(tmp_path / name, "auto", 250)] == [250] * 4 + [5]


def test_empty_file_is_named(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(BatchError, match=r"empty.csv: cannot be read as csv \(No columns to parse"):
        read_batch(tmp_path / "empty.csv", "auto", "label")


def test_header_only_file_has_no_rows(tmp_path):
    (tmp_path / "h.csv").write_text("a,label\n")
    with pytest.raises(BatchError, match=r"h.csv: has no rows"):
        read_batch(tmp_path / "h.csv", "auto", "label")


def test_damaged_parquet_is_named(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(BatchError, match=r"bad.parquet: cannot be read as parquet"):
        read_batch(tmp_path / "bad.parquet", "auto", "label")


def test_missing_target_column_is_named(tmp_path):
    make_batch(10, seed=0).drop(columns=["label"]).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(BatchError, match=r"b.csv: target column 'label' missing \(found: x one, x-two"):
        read_batch(tmp_path / "b.csv", "auto", "label")


def test_holdout_split_is_stable_and_disjoint():
    train, holdout = split_holdout("batch-7.csv", 1000, 0.25, seed=0)
    again_train, again_holdout = split_holdout("batch-7.csv", 1000, 0.25, seed=0)
    assert np.array_equal(train, again_train) and np.array_equal(holdout, again_holdout)
    assert len(holdout) == 250 and not set(train) & set(holdout)
    assert set(train) | set(holdout) == set(range(1000))


def test_a_retrain_on_the_concepts_history_keeps_the_newest_batches_whole_within_its_row_budget(tmp_path):
    from perennial.adapters.batch_files import load_batch
    from perennial.core.config import PipelineConfig
    from perennial.core.lifelong import ReplayMemory
    from perennial.core.types import Candidate, CycleRecord
    from perennial.pipeline.training import earlier_batches, estimated_rows, training_rows

    config = PipelineConfig(name="m", data={"source": str(tmp_path), "target": "label"},
                            training={"history_rows": 5000})
    records = []
    for i in range(5):
        make_batch(seed=i).to_csv(tmp_path / f"b{i}.csv", index=False)
        records.append(CycleRecord(batch=f"b{i}.csv", path=str(tmp_path / f"b{i}.csv"), rows=1400,
                                   validation="passed", drift_share=None, champion_accuracy_before=None,
                                   decision="noop", reason="", champion_version_after=1, concept=1))
    batch = load_batch(tmp_path / "b4.csv", config)
    train_idx, _ = split_holdout(batch.id, batch.rows, 0.25, 0)
    earlier = earlier_batches(Candidate.RETRAIN_ALL, records[:4], config, concept=1)
    rows, sources = training_rows(Candidate.RETRAIN_ALL, batch, train_idx, earlier, set(), config,
                                  ReplayMemory.empty(100, "label"))
    # 5,000 rows: the new batch's 1,050 training rows, the newest earlier batch whole (its 1,400 rows,
    # no window kept), and the other three sharing the remaining 2,550 rows (850 each, sampled).
    assert rows.rows == 5000 == estimated_rows(Candidate.RETRAIN_ALL, records[:4], config, 1, 1050)
    assert sources == ["b0.csv", "b1.csv", "b2.csv", "b3.csv", "b4.csv"]
    newest = read_batch(tmp_path / "b3.csv", "auto", "label").frame
    assert rows.frame.iloc[2550:3950].reset_index(drop=True).equals(newest)


@pytest.mark.parametrize(("labels", "continuous"), [
    (np.round(np.random.default_rng(0).uniform(1_000, 30_000, 400), 2), True),  # a price
    (np.arange(400) * 3, True),  # integers, all distinct
    (np.arange(400) % 60, True),  # 60 integers in 400 rows
    (np.arange(400) % 30, False),  # 30 integer classes
    (np.arange(5_000) % 60, False),  # 60 integer classes in 5,000 rows
    (np.arange(400) % 2 * 1.0, False),  # 0.0 / 1.0 read from a CSV
    (np.arange(400) % 7 + 0.5, False),  # few values, fractional
])
def test_a_plainly_continuous_target_is_regression_and_refused_as_a_classification(tmp_path, labels,
                                                                                   continuous):
    """Issue 21: a numeric price target silently became a classifier with one class per price. Left out,
    the task follows the rule; set to a classification, such a target is refused in one line."""
    from perennial.adapters.batch_files import resolve_schema
    from perennial.core.config import ConfigError, PipelineConfig
    from perennial.core.types import Batch

    frame = make_batch(len(labels), seed=0).assign(label=labels)
    batch = Batch(id="b.csv", path=tmp_path / "b.csv", frame=frame)

    def config(**model):
        return PipelineConfig(name="m", data={"source": str(tmp_path), "target": "label"}, model=model,
                              config_file=tmp_path / "m.yaml")

    schema = resolve_schema(batch, config(), None)
    assert schema.task == ("regression" if continuous else "classification")
    assert schema.classes == (() if continuous else tuple(sorted({str(int(v)) if v % 1 == 0 else str(v)
                                                                  for v in labels})))
    assert resolve_schema(batch, config(task="regression"), None).task == "regression"
    if not continuous:
        assert resolve_schema(batch, config(task="classification"), None).task == "classification"
        return
    with pytest.raises(ConfigError) as refused:
        resolve_schema(batch, config(task="classification"), None)
    counts = f"{len(set(labels)):,} distinct values in {len(labels):,} rows"
    assert "\n" not in str(refused.value)
    assert str(refused.value).startswith(f"{tmp_path / 'm.yaml'}: key 'model.task': classification on column "
                                         f"'label', which holds a continuous quantity ({counts}")
    assert str(refused.value).endswith("a classifier would learn one class per value; set model.task: "
                                       "regression or leave it out")


def test_a_text_target_cannot_be_a_regression(tmp_path):
    from perennial.adapters.batch_files import resolve_schema
    from perennial.core.config import ConfigError, PipelineConfig
    from perennial.core.types import Batch

    config = PipelineConfig(name="m", data={"source": str(tmp_path), "target": "label"},
                            model={"task": "regression"}, config_file=tmp_path / "m.yaml")
    batch = Batch(id="b.csv", path=tmp_path / "b.csv", frame=make_batch(100, seed=0))
    with pytest.raises(ConfigError, match=r"key 'model.task': regression needs a numeric target, column "
                                          r"'label' holds object values \(e.g. '(low|high)'\)"):
        resolve_schema(batch, config, None)