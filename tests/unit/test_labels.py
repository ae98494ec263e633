"""Labels that arrive later (issue 23): the config keys, and the rules joining label files by row id to
the batches waiting for them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perennial.core.config import ConfigError, load_config
from perennial.core.labels import LabelError, batch_ids, join_labels, labelled_rows, orphans, read_labels
from perennial.core.types import BatchError

BASE = "name: m\ndata: {source: in, target: y, id: row}\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "model.yaml"
    path.write_text(text)
    return path


# -- Config --------------------------------------------------------------------------------------------

def test_labels_are_off_by_default(tmp_path):
    config = load_config(write(tmp_path, "name: m\ndata: {source: in, target: y}\n"))
    assert config.data.id is None and config.labels.source is None and config.labels_pattern() is None
    assert (config.labels.min_coverage, config.labels.max_wait_batches) == (0.8, 10)


def test_a_label_source_is_read_relative_to_the_config_file(tmp_path):
    path = write(tmp_path, BASE + "labels: {source: late, min_coverage: 1, max_wait_batches: 3}\n")
    config = load_config(path)
    assert config.data.id == "row"
    assert config.labels_pattern() == str(tmp_path / "late")
    assert (config.labels.min_coverage, config.labels.max_wait_batches) == (1.0, 3)


def test_a_label_source_needs_the_id_column(tmp_path):
    path = write(tmp_path, "name: m\ndata: {source: in, target: y}\nlabels: {source: late}\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert str(refused.value) == (f"{path}: key 'labels.source': needs data.id, the column that joins labels "
                                  "to the rows of a batch")


def test_the_id_column_cannot_be_the_target_nor_a_feature(tmp_path):
    path = write(tmp_path, "name: m\ndata: {source: in, target: y, id: y}\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert str(refused.value) == (f"{path}: key 'data.id': must differ from data.target ('y'): a row id is "
                                  "not a label")
    path = write(tmp_path, "name: m\ndata: {source: in, target: y, id: row, features: {row: numeric}}\n")
    with pytest.raises(ConfigError, match=r"key 'data.id': 'row' is also in data.features: a row id is not"):
        load_config(path)


@pytest.mark.parametrize(("key", "value", "problem"), [
    ("min_coverage", 0, "greater than 0"), ("min_coverage", 1.5, "less than or equal to 1"),
    ("max_wait_batches", 0, "greater than or equal to 1"),
])
def test_label_limits_out_of_range_are_refused_naming_the_key(tmp_path, key, value, problem):
    path = write(tmp_path, BASE + f"labels: {{source: late, {key}: {value}}}\n")
    with pytest.raises(ConfigError, match=rf"{path}: key 'labels.{key}': Input should be {problem} \(got"):
        load_config(path)


# -- Join rules -----------------------------------------------------------------------------------------

def batch(n: int = 10, start: int = 0) -> pd.DataFrame:
    """A batch without labels: an int64 id column and one feature."""
    return pd.DataFrame({"row": np.arange(start, start + n, dtype="int64"), "x": np.linspace(0, 1, n)})


def label_file(pairs: list[tuple[object, object]], source: str = "labels-1.csv"):
    return read_labels(pd.DataFrame(pairs, columns=["row", "y"]), "row", "y", source)


def test_coverage_and_readiness_follow_the_labelled_share():
    labels = label_file([(i, "yes" if i % 2 else "no") for i in range(8)])
    filled, join = join_labels(batch(), labels.frame, "row", "y", 0.8, "b1.csv")
    assert (join.batch, join.rows, join.labelled, join.joined, join.coverage, join.ready) == \
        ("b1.csv", 10, 8, 8, 0.8, True)
    _, short = join_labels(batch(), labels.frame, "row", "y", 0.9, "b1.csv")
    assert (short.coverage, short.ready) == (0.8, False)
    assert join.class_mix == {"no": 0.5, "yes": 0.5}


def test_duplicate_ids_are_counted_and_the_last_label_wins():
    labels = label_file([(1, "no"), (2, "no"), (1, "yes"), (1, "maybe"), (3, "no")])
    assert (labels.rows, labels.duplicates, len(labels.frame)) == (5, 2, 3)
    kept = dict(zip(labels.frame["row"], labels.frame["y"], strict=True))
    assert kept == {"1": "maybe", "2": "no", "3": "no"}
    # The same rule when raw rows (several files in arrival order) are joined at once.
    raw = pd.DataFrame([(1, "no"), (1, "yes"), (42, "no"), (42, "yes")], columns=["row", "y"])
    filled, join = join_labels(batch(), raw, "row", "y", 0.5, "b1.csv")
    assert join.duplicates == 1  # id 42 is no row of this batch
    assert filled.loc[filled["row"] == 1, "y"].item() == "yes"


def test_labels_of_no_pending_batch_are_orphans():
    labels = label_file([(1, "a"), (12, "b"), (99, "c")]).frame
    pending = set(batch_ids(batch(), "row", "b1.csv")) | set(batch_ids(batch(5, start=10), "row", "b2.csv"))
    assert orphans(labels, pending, "row")["row"].tolist() == ["99"]


def test_integer_ids_of_a_batch_match_text_ids_of_a_label_file():
    labels = read_labels(pd.DataFrame({"row": ["3", "4"], "y": [1, 0]}), "row", "y", "l.parquet")
    filled, join = join_labels(batch(), labels.frame, "row", "y", 0.1, "b1.csv")
    assert filled["row"].dtype == "int64"  # the batch keeps its own column
    assert filled.set_index("row").loc[[3, 4], "y"].tolist() == [1, 0] and join.labelled == 2
    # And the other way round: ids with gaps read as floats (7.0) are the integers they hold.
    floats = pd.DataFrame({"row": [3.0, 4.0, np.nan], "y": [0, 1, 1]}).dropna()
    assert join_labels(batch(), floats, "row", "y", 0.1, "b1.csv")[1].labelled == 2


def test_a_row_without_a_label_is_never_given_one():
    labels = label_file([(0, "a"), (1, None), (2, "b")])
    assert labels.empty == 1
    filled, join = join_labels(batch(4), labels.frame, "row", "y", 0.5, "b1.csv")
    assert filled["y"].isna().tolist() == [False, True, False, True]
    assert join.labelled == 2 and join.coverage == 0.5
    learnt = labelled_rows(filled, "y")
    assert learnt["row"].tolist() == [0, 2] and learnt["y"].tolist() == ["a", "b"]
    assert labelled_rows(batch(4), "y").empty  # a batch no label reached has nothing to learn from


def test_labels_accumulate_over_files_and_a_later_label_corrects_an_earlier_one():
    first = label_file([(i, "no") for i in range(5)], "labels-1.csv")
    filled, join = join_labels(batch(), first.frame, "row", "y", 0.8, "b1.csv")
    assert (join.labelled, join.ready) == (5, False)
    second = label_file([(4, "yes"), (5, "yes"), (6, "yes"), (7, "no")], "labels-2.csv")
    filled, join = join_labels(filled, second.frame, "row", "y", 0.8, "b1.csv")
    assert (join.labelled, join.joined, join.relabelled, join.ready) == (8, 4, 1, True)
    assert filled["y"].tolist()[:8] == ["no"] * 4 + ["yes"] * 3 + ["no"]
    assert join.class_mix == {"no": 5 / 8, "yes": 3 / 8}


@pytest.mark.parametrize(("drop", "role"), [("row", "id"), ("y", "target")])
def test_a_label_file_missing_a_column_is_named(drop, role):
    frame = pd.DataFrame({"row": [1, 2], "y": ["a", "b"], "note": ["", ""]}).drop(columns=[drop])
    with pytest.raises(LabelError) as refused:
        read_labels(frame, "row", "y", "in/labels-3.csv")
    kept = ", ".join(frame.columns)
    assert str(refused.value) == f"label file in/labels-3.csv: {role} column '{drop}' missing (found: {kept})"


def test_label_rows_without_an_id_are_counted():
    frame = pd.DataFrame({"row": [1, None, 3, None, None], "y": ["a"] * 5})
    with pytest.raises(LabelError) as refused:
        read_labels(frame, "row", "y", "labels-4.csv")
    assert str(refused.value) == ("label file labels-4.csv: 3 of 5 rows have no id (column 'row'); every "
                                  "label needs the id of its row")


def test_a_batch_repeating_ids_is_refused_naming_it_and_the_count():
    repeated = pd.concat([batch(6), batch(2)], ignore_index=True)
    with pytest.raises(BatchError) as refused:
        join_labels(repeated, label_file([(0, "a")]).frame, "row", "y", 0.5, "b7.csv")
    assert str(refused.value) == ("batch b7.csv: 2 rows repeat the id of an earlier row (column 'row', e.g. "
                                  "'0'); ids must be unique to join labels")


def test_class_mix_is_of_the_batchs_labels_and_absent_for_a_regression():
    labels = label_file([(0, 1), (1, 1), (2, 1), (3, 0), (42, 0)])
    _, join = join_labels(batch(), labels.frame, "row", "y", 0.5, "b1.csv")
    assert join.class_mix == {"0": 0.25, "1": 0.75}
    prices = label_file([(0, 10.5), (1, 12.25)])
    filled, join = join_labels(batch(), prices.frame, "row", "y", 0.5, "b1.csv", task="regression")
    assert join.class_mix is None and labelled_rows(filled, "y")["y"].tolist() == [10.5, 12.25]


def test_the_row_id_is_never_inferred_as_a_feature():
    from perennial.core.schema import infer_schema

    frame = pd.DataFrame({"row": [1, 2, 3], "x": [0.1, 0.2, 0.3], "y": ["a", "b", "a"]})
    assert list(infer_schema(frame, "y", None, row_id="row").features) == ["x"]
    assert list(infer_schema(frame, "y", None).features) == ["row", "x"]
