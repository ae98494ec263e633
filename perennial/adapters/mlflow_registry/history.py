"""The `champion` alias history: one tag of the registered model per move, read back as `AliasMove`s."""

from __future__ import annotations

from typing import Any

from perennial.adapters.mlflow_registry.connection import CHAMPION, Tag, client, outages, registered_model
from perennial.adapters.prefect_logs import run_logger
from perennial.core.config import Settings
from perennial.core.history import settled
from perennial.core.types import AliasMove

# The `champion` alias history: one tag of the registered model per move, `<prefix><seq, 6 digits>`,
# holding the move as compact JSON (`AliasMove.to_json`). Kept with the model, so every worker and
# host that uses the registry reads the same history.
HISTORY_TAG = "perennial.champion_history."


HISTORY_REASON_CHARS = 2000  # an entry stays far below any server's limit on a tag's value


def mark_rollback(mlflow_client: Any, name: str, left: int, served: int, why: str) -> None:
    """Tag a rollback whose alias move happened (idempotent): the version left `perennial.rolled_back`,
    the one served says why in `perennial.promotion` and loses a rolled-back mark of its own."""
    mlflow_client.set_model_version_tag(name, str(left), Tag.ROLLED_BACK, why[:4000])
    mlflow_client.set_model_version_tag(name, str(served), Tag.PROMOTION, why)
    if Tag.ROLLED_BACK in mlflow_client.get_model_version(name, str(served)).tags:
        mlflow_client.delete_model_version_tag(name, str(served), Tag.ROLLED_BACK)


def record_move(mlflow_client: Any, name: str, current: int | None, version: int, decision: str,
                 batch: str | None, reason: str) -> AliasMove:
    """Append a move to the model's alias history (writers hold the model's lock, so `seq` is theirs).
    The same move as the last entry (a rerun after a crash before its alias move) writes over it."""
    from datetime import UTC, datetime

    model = registered_model(mlflow_client, name)
    moves = moves_of(dict(model.tags) if model is not None else {})
    last = moves[-1] if moves else None
    rerun = last is not None and (last.from_version, last.to_version, last.decision, last.batch) == (
        current, version, decision, batch)
    seq = last.seq if rerun else (last.seq + 1 if last else 1)
    move = AliasMove(seq, datetime.now(UTC).isoformat(timespec="seconds"), current, version, decision, batch,
                     reason[:HISTORY_REASON_CHARS])
    mlflow_client.set_registered_model_tag(name, f"{HISTORY_TAG}{seq:06d}", move.to_json())
    return move


def moves_of(tags: dict[str, str]) -> list[AliasMove]:
    """Every alias history entry among a registered model's tags, oldest first (settled or not)."""
    moves = []
    for key, value in tags.items():
        if key.startswith(HISTORY_TAG):
            try:
                moves.append(AliasMove.from_json(int(key.removeprefix(HISTORY_TAG)), value))
            except (ValueError, KeyError, TypeError) as exc:
                run_logger().warning("alias history entry %s unreadable, skipped (%s: %s)", key,
                                     type(exc).__name__, exc)
    return sorted(moves, key=lambda m: m.seq)


def champion_history(name: str, settings: Settings) -> list[AliasMove]:
    """The moves of `champion` recorded with the model, oldest first; an entry for a move a crash
    stopped before the alias moved is left out. None when the model is not registered yet; an outage
    raises."""
    mlflow_client = client(settings)
    with outages(settings):
        model = registered_model(mlflow_client, name)
    if model is None:
        return []
    champion = model.aliases.get(CHAMPION)
    return settled(moves_of(dict(model.tags)), int(champion) if champion is not None else None)
