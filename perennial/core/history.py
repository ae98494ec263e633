"""The `champion` alias history: which recorded moves happened, and the version a rollback returns to.

Pure logic; `adapters/mlflow_registry.py` stores the entries with the registered model and reads
them back as `AliasMove`s.
"""

from __future__ import annotations

from collections.abc import Sequence

from perennial.core.types import AliasMove


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


def previous_champion(moves: Sequence[AliasMove], champion: int | None) -> int | None:
    """The version `champion` was on before the current one: where the latest settled move to it came
    from; None when there is none (it was the first champion, or the history does not reach it)."""
    for move in reversed(moves):
        if move.to_version == champion:
            return move.from_version
    return None
