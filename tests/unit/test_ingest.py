"""`perennial ingest`: only names the monitor will process, new to the model, never replacing a file,
and nothing left behind when it refuses or fails."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import make_batch, new_workspace
from perennial.app.cli import main
from perennial.app.commands import copy_exclusively
from perennial.core.types import BatchError, CycleRecord


@pytest.fixture
def ws(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    return new_workspace(tmp_path / "ws", monkeypatch)


def batch_file(folder: Path, name: str, seed: int = 1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    make_batch(50, seed=seed).to_csv(path, index=False)
    return path


def printed(capsys) -> str:
    """What the command printed, as one line however the console wrapped it."""
    return " ".join(capsys.readouterr().out.split())


def refused(ws, file: Path, capsys) -> str:
    """The one error line of an ingest that must write nothing into the monitored folder."""
    before = sorted(os.listdir(ws.batches))
    assert main(["ingest", str(file), "--config", str(ws.config_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert sorted(os.listdir(ws.batches)) == before
    return err


def processed(ws, name: str, decision: str) -> None:
    """A ledger line for a batch, as a run appends it."""
    ws.store.append(CycleRecord(batch=name, rows=50, validation="passed", drift_share=None,
                                champion_accuracy_before=None, decision=decision, reason="as a run wrote it",
                                champion_version_after=1, path=str(ws.batches / name)))


def test_a_new_batch_is_copied_whole_and_nothing_else_is_left(ws, tmp_path, capsys):
    file = batch_file(tmp_path / "out", "2026-01.csv")
    assert main(["ingest", str(file), "--config", str(ws.config_path)]) == 0
    assert f"Ingested {file} -> {ws.batches / '2026-01.csv'}" in printed(capsys)
    assert os.listdir(ws.batches) == ["2026-01.csv"]  # no partial file
    assert (ws.batches / "2026-01.csv").read_bytes() == file.read_bytes()


def test_a_hidden_name_is_refused(ws, tmp_path, capsys):
    file = batch_file(tmp_path / "out", ".2026-01.csv")
    assert refused(ws, file, capsys) == (
        f"perennial: error: batch file {file}: names starting with '.' are skipped by the monitor "
        "(they mark files being written); rename it")


def test_a_name_with_control_characters_is_refused(ws, tmp_path, capsys):
    file = batch_file(tmp_path / "out", "2026-01\nb.csv")
    assert refused(ws, file, capsys) == (
        f"perennial: error: batch file {str(file)!r}: its name has control characters; rename it")


def test_a_name_in_the_ledger_is_refused_even_when_its_file_is_gone(ws, tmp_path, capsys):
    processed(ws, "2026-01.csv", "noop")  # processed, then its file was removed from the folder
    file = batch_file(tmp_path / "out", "2026-01.csv")
    assert refused(ws, file, capsys) == (
        f"perennial: error: batch file {file}: 2026-01.csv was already processed (noop; `perennial status` "
        "shows it), a batch of that name would be skipped; ingest it under a new name")


def test_a_name_in_quarantine_is_refused(ws, tmp_path, capsys):
    # Quarantined, but no ledger line: the run was stopped before it appended one.
    batch_file(ws.store.quarantine_dir, "2026-01.csv")
    file = batch_file(tmp_path / "out", "2026-01.csv", seed=2)
    assert refused(ws, file, capsys) == (
        f"perennial: error: batch file {file}: 2026-01.csv is in quarantine ({ws.store.quarantine_dir}); "
        "ingest it under a new name")


def test_a_rejected_batch_comes_back_only_unchanged_so_it_can_be_released(ws, tmp_path, capsys):
    # `perennial release` asks for this when a rejected batch's file has left the folder.
    quarantined = batch_file(ws.store.quarantine_dir, "2026-01.csv")
    processed(ws, "2026-01.csv", "reject")
    changed = batch_file(tmp_path / "changed", "2026-01.csv", seed=2)
    assert "2026-01.csv was already processed (reject;" in refused(ws, changed, capsys)

    same = batch_file(tmp_path / "same", "2026-01.csv")
    assert same.read_bytes() == quarantined.read_bytes()
    assert main(["ingest", str(same), "--config", str(ws.config_path)]) == 0
    assert (f"It was rejected before (as a run wrote it); `perennial release 2026-01.csv --config "
            f"{ws.config_path} --reason ...` lets it back in") in printed(capsys)
    assert os.listdir(ws.batches) == ["2026-01.csv"]


def test_a_name_already_in_the_folder_is_refused_and_kept(ws, tmp_path, capsys):
    waiting = batch_file(ws.batches, "2026-01.csv")
    content = waiting.read_bytes()
    file = batch_file(tmp_path / "out", "2026-01.csv", seed=2)
    assert refused(ws, file, capsys) == (
        f"perennial: error: batch file {waiting}: a batch of that name already arrived; ingest the new one "
        "under a new name")
    assert waiting.read_bytes() == content


def test_the_copy_never_replaces_a_file_that_appeared_meanwhile(tmp_path):
    # The name's check passed, then another writer created the file: the link refuses, atomically.
    target = batch_file(tmp_path / "folder", "2026-01.csv")
    content = target.read_bytes()
    with pytest.raises(BatchError, match="a batch of that name already arrived"):
        copy_exclusively(batch_file(tmp_path / "out", "2026-01.csv", seed=2), target)
    assert target.read_bytes() == content
    assert os.listdir(target.parent) == ["2026-01.csv"]


def test_a_failed_copy_leaves_no_partial_file(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    unreadable = tmp_path / "a-folder.csv"
    unreadable.mkdir()  # opening it for reading fails after the partial file was created
    with pytest.raises(BatchError) as caught:
        copy_exclusively(unreadable, folder / "a.csv")
    assert str(caught.value) == (
        f"batch file {unreadable}: cannot be copied to {folder / 'a.csv'} (Is a directory)")
    assert os.listdir(folder) == []


def test_batches_are_taken_in_natural_name_order(ws):
    """Issue 20, case 12: code-point order put batch-10 before batch-9."""
    from perennial.adapters.batch_files import batch_files

    for n in (10, 9, 1, 100):
        batch_file(ws.batches, f"batch-{n}.csv")
    assert [p.name for p in batch_files(str(ws.batches))] == \
        ["batch-1.csv", "batch-9.csv", "batch-10.csv", "batch-100.csv"]


def test_ingesting_a_name_that_sorts_before_processed_ones_warns(ws, tmp_path, capsys):
    processed(ws, "batch-10.csv", "noop")
    late = batch_file(tmp_path / "out", "batch-9.csv")
    assert main(["ingest", str(late), "--config", str(ws.config_path)]) == 0
    assert "Warning: batch-9.csv sorts before batch-10.csv, already processed" in printed(capsys)
    on_time = batch_file(tmp_path / "out", "batch-11.csv")
    assert main(["ingest", str(on_time), "--config", str(ws.config_path)]) == 0
    assert "Warning" not in printed(capsys)
