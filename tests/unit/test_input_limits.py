"""Hostile or broken batch files: too large, too wide, repeated column names, too slow to parse.
Each is rejected with one line naming the file and the key that allows more, before pandas spends
minutes on it; in a run it is quarantined and the stream goes on."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import hostile_header, make_batch
from perennial.adapters.batch_files import InputLimits, read_batch
from perennial.core.config import ConfigError, DataConfig, load_config
from perennial.core.types import BatchError


def limits(**keys) -> InputLimits:
    """The limits of a config with these `data.*` keys (the defaults otherwise)."""
    return InputLimits.of(DataConfig(source="batches", target="label", **keys))


def rejection(path: Path, **keys) -> str:
    with pytest.raises(BatchError) as caught:
        read_batch(path, "auto", "label", limits(**keys))
    return str(caught.value)


def test_a_huge_header_is_rejected_in_moments_with_the_default_limit(tmp_path):
    path = hostile_header(tmp_path / "wide.csv")
    started = time.monotonic()
    assert rejection(path) == f"batch file {path}: 200,000 columns, more than data.max_columns (2,000)"
    # Measured 6 ms; pandas took more than 150 s on this file: the bound only proves it was not parsed.
    assert time.monotonic() - started < 5


def test_a_header_longer_than_the_columns_allow_is_never_read_whole(tmp_path):
    names = [f"c{i:05d}" for i in range(5000)]
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(names) + "\n" + ",".join("1" * 5000) + "\n")
    # 11 KB are read for 10 columns (1 KB each and one more): the names that fit in them are counted.
    fitting = len(wide.read_bytes()[:11 * 1024].split(b","))
    assert fitting == 1610
    assert rejection(wide, max_columns=10) == (
        f"batch file {wide}: at least 1,610 columns, more than data.max_columns (10)")

    long_names = tmp_path / "long-names.csv"
    long_names.write_text("a" * 5000 + ",label\n1,x\n")
    assert rejection(long_names, max_columns=2) == (
        f"batch file {long_names}: header line longer than 3,072 bytes; data.max_columns (2) allows "
        "1,024 bytes per column")
    assert read_batch(long_names, "auto", "label", limits(max_columns=5)).rows == 1


def test_parquet_columns_are_counted_from_its_schema(tmp_path):
    path = tmp_path / "wide.parquet"
    pd.DataFrame({f"c{i}": [1.0] for i in range(30)} | {"label": ["x"]}).to_parquet(path, index=False)
    assert rejection(path, max_columns=30) == (
        f"batch file {path}: 31 columns, more than data.max_columns (30)")
    assert read_batch(path, "auto", "label", limits(max_columns=31)).rows == 1


def test_a_file_above_max_file_mb_is_rejected_by_its_size_before_anything_is_read(tmp_path):
    path = hostile_header(tmp_path / "big.csv")  # its size is seen first, not its columns
    assert rejection(path, max_file_mb=0.25) == (
        f"batch file {path}: 399,999 bytes, more than data.max_file_mb (0.25)")
    parquet = tmp_path / "big.parquet"
    make_batch(20_000, seed=0).to_parquet(parquet, index=False)
    size = parquet.stat().st_size
    assert rejection(parquet, max_file_mb=0.1) == (
        f"batch file {parquet}: {size:,} bytes, more than data.max_file_mb (0.1)")


def test_repeated_csv_column_names_are_named_not_renamed(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("id,salary,age,salary,age,salary,label\n1,2,3,4,5,6,x\n")
    assert list(pd.read_csv(path).columns)[3] == "salary.1"  # what pandas alone makes of it
    expected = (f"batch file {path}: repeated column name(s) 'salary' (3x), 'age' (2x); every column "
                "needs its own name")
    assert rejection(path) == expected
    # Also when a file accepted before is read again without limits (e.g. for a retrain).
    with pytest.raises(BatchError, match="repeated column name"):
        read_batch(path, "auto", "label")


def test_quoted_header_names_are_parsed_as_pandas_does(tmp_path):
    # A comma and a line break inside quotes, a BOM and a blank first line: 3 distinct names.
    path = tmp_path / "quoted.csv"
    path.write_bytes('\ufeff\n"a,b","a\nb",label\n1,2,x\n'.encode())
    batch = read_batch(path, "auto", "label", limits(max_columns=3))
    assert list(batch.frame.columns) == ["a,b", "a\nb", "label"]


def test_repeated_parquet_column_names_are_named(tmp_path):
    path = tmp_path / "dup.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array([1.0]), pa.array([2.0]), pa.array(["x"])],
                                        names=["salary", "salary", "label"]), path)
    assert rejection(path) == (f"batch file {path}: repeated column name(s) 'salary' (2x); every column "
                               "needs its own name")


@pytest.fixture(scope="module")
def long_batches(tmp_path_factory) -> dict[str, Path]:
    """A CSV of three chunks (2^20 cells each) and a Parquet file of several record batches."""
    folder = tmp_path_factory.mktemp("long")
    frame = make_batch(400_000, seed=5)
    paths = {"csv": folder / "long.csv", "parquet": folder / "long.parquet"}
    frame.to_csv(paths["csv"], index=False)
    frame.to_parquet(paths["parquet"], index=False, row_group_size=100_000)
    return paths


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_parse_past_max_parse_seconds_stops_with_a_clear_error(long_batches, fmt):
    path = long_batches[fmt]
    assert rejection(path, max_parse_seconds=1e-9) == (
        f"batch file {path}: not parsed within data.max_parse_seconds (1e-09 s); stopped after 0 rows")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_file_read_in_chunks_is_the_frame_pandas_reads_whole(long_batches, fmt):
    path = long_batches[fmt]
    whole = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
    pd.testing.assert_frame_equal(read_batch(path, "auto", "label", limits()).frame, whole)


def test_limits_are_checked_config_keys(tmp_path):
    config = tmp_path / "m.yaml"
    config.write_text("name: m\ndata: {source: in, target: y, max_columns: 0}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert str(caught.value) == (f"{config}: key 'data.max_columns': Input should be greater than or "
                                 "equal to 1 (got 0)")
    config.write_text("name: m\ndata: {source: in, target: y, max_file_mb: 1, max_parse_seconds: 30}\n")
    assert InputLimits.of(load_config(config).data) == InputLimits(1, 2000, 30)
