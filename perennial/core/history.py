"""The `champion` alias history: which recorded moves happened, and the version a rollback returns to.

Pure logic; `adapters/mlflow_registry/history.py` stores the entries with the registered model and reads
them back as `AliasMove`s.
"""

from __future__ import annotations

from collections.abc import Sequence

from perennial.core.types import ROLLBACK, AliasMove


def settled(moves: Sequence[AliasMove], champion: int | None) -> list[AliasMove]:
    """The recorded moves that happened, oldest first, given where `champion` is now.

    An entry is written just before its alias move, so a crash in between leaves an entry for a
    move that never happened. It shows: it is the last entry while the alias is still on its `from`
    version, or the next entry starts from the same `from` version (the alias never left it). Such
    entries are left out. (A rerun of the crashed cycle writes over its own entry, not beside it.)
    Moves made by hand outside Perennial are not recorded at all.
    """
    kept = []
    for i, move in enumerate(moves):
        stayed = moves[i + 1].from_version if i + 1 < len(moves) else champion
        if stayed != move.from_version:
            kept.append(move)
    return kept


def rolled_back_from(moves: Sequence[AliasMove]) -> set[int]:
    """Versions a settled rollback took `champion` from and no later move put back."""
    left: set[int] = set()
    for move in moves:
        left.discard(move.to_version)
        if move.decision == ROLLBACK and move.from_version is not None:
            left.add(move.from_version)
    return left


def previous_champion(moves: Sequence[AliasMove], champion: int | None) -> int | None:
    """The version `champion` was on before the current one, from the settled moves: where the latest
    move to it came from, walking further back past the current version and the versions rolled back
    from (so a second rollback never puts back the one the first left); None when there is none (the
    first champion, or a history that does not reach further)."""
    skip, version, before = rolled_back_from(moves) | {champion}, champion, len(moves)
    while True:
        index = next((i for i in reversed(range(before)) if moves[i].to_version == version), None)
        if index is None or moves[index].from_version is None:
            return None
        version, before = moves[index].from_version, index
        if version not in skip:
            return version
