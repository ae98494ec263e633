"""The champion's alias history and `perennial rollback`, end to end: real cycles (Prefect, MLflow on
SQLite) promote and reinstate, a user rolls back, and a later cycle does not reinstate the version
rolled back from where it reinstated it before."""

from __future__ import annotations

import io
import time
from contextlib import redirect_stderr, redirect_stdout
from datetime import datetime, timedelta

import pytest

from conftest import make_batch, new_workspace
from perennial.adapters.mlflow_registry import HISTORY_TAG, champion_history, client
from perennial.adapters.prefect_events import MODEL_PROMOTED, resource_id
from perennial.app.cli import main
from perennial.core.failpoints import FailpointError

NAME = "rollback-model"
WHY = "v1 misses the new region's loans"
RECORDED = f"rollback from v1 to v2: {WHY}"


def cli(ws, command: str, *args: str) -> tuple[int, str]:
    """Exit code and output of a `perennial` command."""
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(io.StringIO()):
        code = main([command, "--config", str(ws.config_path), *args])
    return code, out.getvalue()


def text(out: str) -> str:
    """Output with its whitespace collapsed (rich wraps long lines)."""
    return " ".join(out.split())


def table_rows(out: str) -> list[list[str]]:
    """The cells of a table's rows (their first lines: rich folds long cells onto the next)."""
    return [[cell.strip() for cell in line.strip("│ ").split("│")] for line in out.splitlines()
            if line.startswith("│") and line.split("│")[1].strip()]


def moves(ws) -> list[tuple]:
    history = champion_history(ws.name, ws.settings)
    return [(m.from_version, m.to_version, m.decision, m.batch) for m in history]


def raw_entries(ws) -> int:
    tags = client(ws.settings).get_registered_model(ws.name).tags
    return sum(key.startswith(HISTORY_TAG) for key in tags)


@pytest.fixture(scope="module")
def story(tmp_path_factory, prefect_server):
    """v1 on a's concept, v2 on the flipped one (b), v1 reinstated when a's concept returns (c); then a
    user rolls back to v2, and a's concept returns again (d)."""
    with pytest.MonkeyPatch.context() as mp:
        ws = new_workspace(tmp_path_factory.mktemp("rollback"), mp, name=NAME)
        ws.add("a.csv", make_batch(seed=1))
        ws.add("b.csv", make_batch(seed=2, flip=True))
        ws.add("c.csv", make_batch(seed=3))
        seen = {"cycles": {r.batch: r for r in ws.run()}, "history": champion_history(ws.name, ws.settings)}
        seen["status"] = cli(ws, "status", "--history")
        seen["rollback"] = cli(ws, "rollback", "--reason", WHY)
        seen["champion"], seen["versions"] = ws.champion(), {v["version"]: v for v in ws.versions()}
        ws.add("d.csv", make_batch(seed=4))
        seen["cycles"].update({r.batch: r for r in ws.run()})
        seen["moves"] = moves(ws)
        yield ws, seen


def test_every_promotion_and_reuse_is_in_the_history_and_status_shows_it_newest_first(story):
    ws, seen = story
    cycles, history = seen["cycles"], seen["history"]
    assert [cycles[b].decision for b in ("a.csv", "b.csv", "c.csv")] == ["retrain", "retrain", "reuse"]
    assert [(m.from_version, m.to_version, m.decision, m.batch) for m in history] == [
        (None, 1, "retrain", "a.csv"), (1, 2, "retrain", "b.csv"), (2, 1, "reuse", "c.csv")]
    assert history[0].reason == "first model: champion by default"
    assert history[1].reason == cycles["b.csv"].promotion
    assert history[2].reason.startswith("concept returned: v1 scores")
    for move in history:
        at = datetime.fromisoformat(move.at)
        assert at.utcoffset() == timedelta(0) and abs(datetime.now(at.tzinfo) - at) < timedelta(hours=1)
    code, out = seen["status"]
    assert code == 0
    assert text(out).startswith(f"{NAME}: champion history, newest first")
    rows = table_rows(out)
    assert [row[1:5] for row in rows] == [["v2", "v1", "reuse", "c.csv"], ["v1", "v2", "retrain", "b.csv"],
                                          ["-", "v1", "retrain", "a.csv"]], out
    assert rows[0][0] == history[2].at.removesuffix("+00:00")
    assert rows[2][5] == "first model: champion by default"


def test_rollback_moves_the_champion_back_and_records_why(story):
    ws, seen = story
    code, out = seen["rollback"]
    out = text(out)
    assert code == 0
    assert out.startswith(f"Rolled back {NAME}: champion v1 -> v2 ({WHY}); v1 will not be reinstated "
                          f"automatically. Restart servers of models:/{NAME}@champion to serve v2.")
    assert f"Emitted {MODEL_PROMOTED} (decision rollback) for perennial.model.{NAME}" in out
    assert seen["champion"] == 2
    v1, v2 = seen["versions"][1], seen["versions"][2]
    assert v2["aliases"] == ["champion"] and v2["promotion"] == RECORDED
    assert v1["rolled_back"] == RECORDED and v1["aliases"] == []
    assert seen["moves"][3] == (1, 2, "rollback", None)
    assert champion_history(ws.name, ws.settings)[3].reason == RECORDED
    (payload,) = promoted_events(NAME, decision="rollback")
    assert payload == {"model": NAME, "version": 2, "from_version": 1, "batch": None, "decision": "rollback",
                       "reason": RECORDED}


def test_the_version_rolled_back_from_is_not_reinstated_where_it_was_before(story):
    _, seen = story
    cycles = seen["cycles"]
    # c and d are both a's concept against a champion of the flipped one (v2): mostly wrong on both.
    assert cycles["c.csv"].champion_accuracy_before < 0.2 and cycles["d.csv"].champion_accuracy_before < 0.2
    assert cycles["c.csv"].decision == "reuse" and cycles["c.csv"].model_version == 1
    # After the rollback v1 is not a candidate for reuse: d is learnt by a retrain instead.
    d = cycles["d.csv"]
    assert d.decision == "retrain", d.reason
    assert d.reason.startswith("concept change")
    assert d.champion_version_before == 2 and d.model_version == 3 and d.champion_version_after == 3
    assert seen["moves"][4] == (2, 3, "retrain", "d.csv")


def test_a_crash_between_the_history_entry_and_the_alias_move_leaves_no_move_behind(story, monkeypatch):
    ws, seen = story
    before, entries = moves(ws), raw_entries(ws)
    assert before == seen["moves"] and ws.champion() == 3
    monkeypatch.setenv("PERENNIAL_FAILPOINT", "history-written:raise")
    with pytest.raises(FailpointError):
        cli(ws, "rollback", "--reason", "v3 is worse")
    assert ws.champion() == 3
    assert raw_entries(ws) == entries + 1  # written, and left out: its move did not happen
    assert moves(ws) == before
    monkeypatch.delenv("PERENNIAL_FAILPOINT")
    assert cli(ws, "rollback", "--reason", "v3 is worse")[0] == 0  # the default target: v2, before v3
    assert ws.champion() == 2
    assert moves(ws) == [*before, (3, 2, "rollback", None)]
    assert raw_entries(ws) == entries + 1  # the rerun wrote over its own entry


def promoted_events(model: str, decision: str) -> list[dict]:
    """Payloads of the `perennial.model.promoted` events with `decision` the test server stored."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    wanted = EventFilter(event=EventNameFilter(name=[MODEL_PROMOTED]),
                         resource=EventResourceFilter(id=[resource_id(model)]))
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as prefect:
        while True:
            payloads = [e.payload for e in prefect.read_events(filter=wanted, limit=50).events
                        if e.payload.get("decision") == decision]
            if payloads or time.monotonic() > deadline:
                return payloads
            time.sleep(0.5)


# -- audit issue 20, case 5: rollbacks do not toggle, a retry is idempotent, the promotion gate holds,
# and a rollback killed before its alias move claims nothing.

GATED = "gated-model"
BACK = "v2 misreads the new stores"


def refusal(ws, *args: str) -> str:
    """The one error line of a refused `perennial rollback`."""
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        assert main(["rollback", "--config", str(ws.config_path), *args]) == 2
    (line,) = [line for line in err.getvalue().splitlines() if " INFO mlflow." not in line]
    return line


def version_tags(ws, version: int) -> dict[str, str]:
    return client(ws.settings).get_model_version(ws.name, str(version)).tags


@pytest.fixture(scope="module")
def gated(tmp_path_factory, prefect_server):
    """v1 on a's concept, v2 (promoted) on the flipped one, v3 a fine-tune the promotion margin kept
    out of service: it never passed the gate."""
    with pytest.MonkeyPatch.context() as mp:
        ws = new_workspace(tmp_path_factory.mktemp("gated"), mp, name=GATED, policy={"promotion_margin": 0.5})
        ws.add("a.csv", make_batch(seed=11))
        ws.add("b.csv", make_batch(seed=12, flip=True))
        ws.add("c.csv", make_batch(seed=13, flip=True, shift=1.5, theta=10.6))
        cycles = [(r.decision, r.model_version, r.promoted) for r in ws.run()]
        assert cycles == [("retrain", 1, True), ("retrain", 2, True), ("fine_tune", 3, False)], cycles
        assert ws.champion() == 2
        yield ws


def test_a_rollback_killed_after_its_alias_move_is_finished_by_its_retry_not_repeated(gated, monkeypatch):
    ws = gated
    from perennial.adapters.mlflow_registry import former_champions
    from perennial.core.config import load_config

    entries = raw_entries(ws)
    monkeypatch.setenv("PERENNIAL_FAILPOINT", "alias-moved:raise")
    with pytest.raises(FailpointError):
        cli(ws, "rollback", "--reason", BACK)
    assert ws.champion() == 1 and moves(ws)[-1] == (2, 1, "rollback", None)
    # Killed before its tags: the settled history alone keeps v2 out of reuse.
    assert "perennial.rolled_back" not in version_tags(ws, 2)
    assert [c.version for c in former_champions(load_config(ws.config_path), ws.settings, 1, 5)] == []
    monkeypatch.delenv("PERENNIAL_FAILPOINT")
    code, out = cli(ws, "rollback", "--reason", BACK)  # the retry: the same command
    assert code == 0
    assert text(out).startswith(f"Rolled back {GATED} already: champion v2 -> v1 ({BACK}) was done by an "
                                "earlier rollback with this reason; nothing moved again. Restart servers")
    assert ws.champion() == 1 and raw_entries(ws) == entries + 1  # one history entry, not two
    assert [m[:3] for m in moves(ws)] == [(None, 1, "retrain"), (1, 2, "retrain"), (2, 1, "rollback")]
    why = f"rollback from v2 to v1: {BACK}"
    assert version_tags(ws, 2)["perennial.rolled_back"] == why
    assert version_tags(ws, 1)["perennial.promotion"] == why


def test_two_default_rollbacks_in_a_row_do_not_toggle(gated):
    ws = gated
    before, entries = moves(ws), raw_entries(ws)
    assert refusal(ws, "--reason", "v1 is worse after all") == (
        f"perennial: error: model {GATED}: the champion history records no version before v1 other than "
        "those rolled back from (v2); name one with --to VERSION")
    assert ws.champion() == 1 and moves(ws) == before and raw_entries(ws) == entries


def test_a_rollback_killed_before_its_alias_move_claims_nothing(gated, monkeypatch):
    ws = gated
    before, v2_promotion = moves(ws), version_tags(ws, 2)["perennial.promotion"]
    monkeypatch.setenv("PERENNIAL_FAILPOINT", "history-written:raise")
    with pytest.raises(FailpointError):
        cli(ws, "rollback", "--to", "2", "--reason", "v1 is worse after all")
    assert ws.champion() == 1 and moves(ws) == before  # its entry is written, and left out
    assert "perennial.rolled_back" not in version_tags(ws, 1)  # v1 is not claimed rolled back from
    assert version_tags(ws, 2)["perennial.promotion"] == v2_promotion  # nor v2 rolled back to


def test_rolling_back_to_a_version_that_never_passed_the_gate_needs_the_flag(gated):
    ws = gated
    entries = raw_entries(ws)
    assert version_tags(ws, 3)["perennial.promoted"] == "false"
    assert refusal(ws, "--to", "3", "--reason", "try the fine-tune") == (
        f"perennial: error: model {GATED} v3: it never passed the promotion gate (tagged perennial.promoted="
        "false); roll back to it only with --allow-unpromoted")
    assert ws.champion() == 1 and raw_entries(ws) == entries
    code, out = cli(ws, "rollback", "--to", "3", "--reason", "try the fine-tune", "--allow-unpromoted")
    assert code == 0
    assert text(out).startswith(f"Rolled back {GATED}: champion v1 -> v3 (try the fine-tune); v1 will not be "
                                "reinstated automatically. v3: it never passed the promotion gate (tagged "
                                "perennial.promoted=false); served as --allow-unpromoted asked. Restart "
                                "servers")
    assert ws.champion() == 3 and moves(ws)[-1] == (1, 3, "rollback", None)
