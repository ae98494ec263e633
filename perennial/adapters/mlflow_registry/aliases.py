"""Moving the `champion` and `challenger` aliases: promotion by check-and-set, reuse, rollback."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from perennial.adapters.mlflow_registry.connection import (
    CHALLENGER,
    CHAMPION,
    Tag,
    alias_version,
    client,
    outages,
    registered_model,
)
from perennial.adapters.mlflow_registry.history import (
    HISTORY_REASON_CHARS,
    champion_history,
    mark_rollback,
    moves_of,
    record_move,
)
from perennial.adapters.mlflow_registry.loading import load_model
from perennial.core import failpoints
from perennial.core.config import PipelineConfig, Settings
from perennial.core.history import previous_champion, rolled_back_from, settled
from perennial.core.types import (
    ROLLBACK,
    Action,
    AliasMove,
    Promotion,
    RegistryError,
    RollbackError,
    RollbackOutcome,
)


def promote(config: PipelineConfig, settings: Settings, version: int, verdict: tuple[bool, str],
            expected: int | None) -> Promotion:
    """Record the promotion verdict on the version; move `champion` to it when promoted, else make it
    `challenger`. Check-and-set: `expected` is the champion the decision was made against. The
    history entry takes the decision and batch the version was registered with."""
    tags = client(settings).get_model_version(config.name, str(version)).tags
    return _check_and_set(config.name, settings, version, expected, *verdict, new_version=True,
                          move=(tags.get(Tag.DECISION, ""), tags.get(Tag.BATCH)))


def reinstate(config: PipelineConfig, settings: Settings, version: int, reason: str,
              expected: int | None, batch: str | None = None) -> Promotion:
    """Put a former champion back in service (`reuse`) for `batch`, check-and-set like `promote`."""
    return _check_and_set(config.name, settings, version, expected, True, reason, new_version=False,
                          move=(Action.REUSE.value, batch))


def _check_and_set(name: str, settings: Settings, version: int, expected: int | None, promoted: bool,
                   reason: str, new_version: bool, move: tuple[str, str | None]) -> Promotion:
    """Move `champion` to `version` only if it is still on `expected`: if another adaptation moved it
    meanwhile, this one does not overwrite it. Already on `version` while `expected` was another: this
    cycle moved it before a crash, so it is done. Tags first, then the history entry (`move`: the
    decision and batch it records), alias last: a crash in between leaves the alias where it was,
    and the rerun reaches the same verdict (see `_move_champion`)."""
    mlflow_client = client(settings)
    current = alias_version(mlflow_client, name, CHAMPION)
    if current == version and expected != version:
        tags = mlflow_client.get_model_version(name, str(version)).tags
        return Promotion(version, True, tags.get(Tag.PROMOTION, reason), version)
    if current != expected:
        promoted = False
        reason = (f"not {'promoted' if new_version else 'reinstated'}: the champion moved from "
                  f"{f'v{expected}' if expected else 'none'} to v{current} while this cycle ran; it is not "
                  "overwritten")
        if not new_version:  # a former champion keeps the verdict of its own promotion
            return Promotion(version, False, reason, current or 0)
    tags = {Tag.PROMOTION: reason, **({Tag.PROMOTED: str(promoted).lower()} if new_version else {})}
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, str(version), key, value)
    if promoted:
        _move_champion(mlflow_client, name, current, version, *move, reason)
        if alias_version(mlflow_client, name, CHALLENGER) == version:
            mlflow_client.delete_registered_model_alias(name, CHALLENGER)
    else:
        mlflow_client.set_registered_model_alias(name, CHALLENGER, str(version))
    return Promotion(version=version, promoted=promoted, reason=reason,
                     champion_version=version if promoted else (current or 0))


def _move_champion(mlflow_client: Any, name: str, current: int | None, version: int, decision: str,
                   batch: str | None, reason: str) -> None:
    """Move `champion` from `current` to `version`, recorded in the model's alias history.

    Crash-safety: the history entry is written first, the alias moved last. A crash in between
    leaves an entry for a move that did not happen: readers leave it out (`core.history.settled`:
    the alias is still on its `from` version, or the next entry starts from there too), and the rerun
    of the same move writes over it (`record_move`). The other order could lose the record of a
    move that did happen, with nothing left to tell what it was.

    A rollback's tags claim it happened, so they come after the alias move (`mark_rollback`): one
    killed before the move leaves only the entry readers drop; one killed after it has its settled
    entry, which is what keeps the version left out of reuse (`former_champions`), and its retry
    writes the tags. A champion never keeps `perennial.rolled_back`: one found on the version a
    promotion or reuse leaves (written before the move by earlier versions of Perennial) is removed.
    """
    record_move(mlflow_client, name, current, version, decision, batch, reason)
    if current is not None and decision != ROLLBACK \
            and Tag.ROLLED_BACK in mlflow_client.get_model_version(name, str(current)).tags:
        mlflow_client.delete_model_version_tag(name, str(current), Tag.ROLLED_BACK)
    failpoints.reached("history-written")
    mlflow_client.set_registered_model_alias(name, CHAMPION, str(version))
    failpoints.reached("alias-moved")
    if decision == ROLLBACK and current is not None:
        mark_rollback(mlflow_client, name, current, version, reason)
    elif Tag.ROLLED_BACK in mlflow_client.get_model_version(name, str(version)).tags:
        mlflow_client.delete_model_version_tag(name, str(version), Tag.ROLLED_BACK)


def rollback(name: str, settings: Settings, target: int | None, reason: str,
             allow_unpromoted: bool = False, declared: Sequence[str] = ()) -> RollbackOutcome:
    """Move `champion` back to `target`, by default the version before the current one in the history,
    past versions rolled back from; check-and-set against the champion read here. The reason goes into
    the history and the version's `perennial.promotion`; the version left is tagged
    `perennial.rolled_back`, so no cycle reinstates it automatically. A retry of the rollback last
    done (same reason, the champion on its target) moves nothing again. A version that never passed
    the promotion gate is served only with `allow_unpromoted`. RollbackError for a rollback that cannot
    be done as asked, RegistryError for a version Perennial would not load; callers hold the lock."""
    mlflow_client = client(settings)
    with outages(settings):
        model = registered_model(mlflow_client, name)
    current = int(model.aliases[CHAMPION]) if model is not None and CHAMPION in model.aliases else None
    if current is None:
        raise RollbackError(f"model {name}: no champion to roll back")
    moves = settled(moves_of(dict(model.tags)), current)
    if (done := _done_rollback(moves, current, target, reason)) is not None:
        with outages(settings):  # killed after its move, maybe before its tags: finish those only
            mark_rollback(mlflow_client, name, done.from_version, current,
                           _rollback_why(done.from_version, current, reason))
            return RollbackOutcome(done, again=True, ungated=_ungated(mlflow_client, name, current, moves))
    target = _default_target(name, moves, current) if target is None else target
    if target == current:
        raise RollbackError(f"model {name}: v{target} is the champion already")
    with outages(settings):
        _check_rollback_target(mlflow_client, name, target, declared)
        if (ungated := _ungated(mlflow_client, name, target, moves)) and not allow_unpromoted:
            raise RollbackError(f"model {name} v{target}: {ungated}; roll back to it only with "
                                "--allow-unpromoted")
        if (now := alias_version(mlflow_client, name, CHAMPION)) != current:
            raise RollbackError(f"model {name}: the champion moved from v{current} to v{now} meanwhile; "
                                "nothing changed")
        _move_champion(mlflow_client, name, current, target, ROLLBACK, None,
                       _rollback_why(current, target, reason))
    return RollbackOutcome(champion_history(name, settings)[-1], ungated=ungated)


def _rollback_why(left: int, served: int, reason: str) -> str:
    return f"rollback from v{left} to v{served}: {reason}"


def _done_rollback(moves: list[AliasMove], current: int, target: int | None, reason: str) -> AliasMove | None:
    """The latest settled move when it is this very rollback, done already: to the champion, for the
    same reason (and the same target, if one was named)."""
    last = moves[-1] if moves else None
    if last is None or last.decision != ROLLBACK or last.to_version != current \
            or target not in (None, current):
        return None
    why = _rollback_why(last.from_version, current, reason)[:HISTORY_REASON_CHARS]
    return last if last.reason == why else None


def _default_target(name: str, moves: list[AliasMove], current: int) -> int:
    """The version before the current one in the history, past versions rolled back from."""
    target = previous_champion(moves, current)
    if target is None:
        left = sorted(rolled_back_from(moves) - {current})
        other = f" other than those rolled back from ({', '.join(f'v{v}' for v in left)})" if left else ""
        raise RollbackError(f"model {name}: the champion history records no version before "
                            f"v{current}{other}; name one with --to VERSION")
    return target


def _ungated(mlflow_client: Any, name: str, version: int, moves: list[AliasMove]) -> str | None:
    """Why a version never passed the promotion gate (not tagged promoted, or never champion), or None."""
    promoted = mlflow_client.get_model_version(name, str(version)).tags.get(Tag.PROMOTED)
    if promoted != "true":
        tagged = f"tagged {Tag.PROMOTED}={promoted}" if promoted else "no promotion verdict recorded"
        return f"it never passed the promotion gate ({tagged})"
    if moves and not any(version in (m.from_version, m.to_version) for m in moves):
        return "it never passed the promotion gate (it never held champion)"
    return None


def _check_rollback_target(mlflow_client: Any, name: str, target: int, declared: Sequence[str]) -> None:
    """The version exists, Perennial registered it, and it loads as a skops model of our own types
    (and the `declared` ones)."""
    from mlflow.exceptions import MlflowException

    try:
        version = mlflow_client.get_model_version(name, str(target))
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise RollbackError(f"model {name}: there is no version {target}") from None
        raise
    if Tag.HOLDOUT_ACCURACY not in version.tags:
        raise RegistryError(f"model {name} v{target}: not a version Perennial registered (no "
                            f"{Tag.HOLDOUT_ACCURACY} tag); not rolled back to")
    load_model(name, target, declared)
