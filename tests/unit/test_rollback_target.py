"""The default target of `perennial rollback` (audit issue 20, case 5): the version before the current one
in the champion history, walking back past versions rolled back from, so rollbacks never toggle."""

from __future__ import annotations

from perennial.core.history import previous_champion, rolled_back_from
from perennial.core.types import AliasMove


def move(seq: int, from_version: int | None, to_version: int, decision: str = "retrain") -> AliasMove:
    return AliasMove(seq, "2026-01-01T00:00:00+00:00", from_version, to_version, decision, None, "why")


PROMOTIONS = [move(1, None, 1), move(2, 1, 2), move(3, 2, 3)]


def test_a_second_default_rollback_goes_further_back_not_to_the_version_just_left():
    first = [*PROMOTIONS, move(4, 3, 2, "rollback")]
    assert previous_champion(PROMOTIONS, 3) == 2
    assert rolled_back_from(first) == {3}
    assert previous_champion(first, 2) == 1  # not v3, the version the first rollback left
    second = [*first, move(5, 2, 1, "rollback")]
    assert previous_champion(second, 1) is None  # v3 and v2 were both rolled back from: nothing left


def test_a_version_put_back_since_its_rollback_is_a_target_again():
    # v2 rolled back from, then a user put it back with --to 2: it is no longer excluded.
    history = [*PROMOTIONS, move(4, 3, 2, "rollback"), move(5, 2, 1, "rollback"), move(6, 1, 2, "rollback")]
    assert rolled_back_from(history) == {3, 1}
    assert previous_champion(history, 2) is None  # v1 and v3 left by rollbacks, nothing older
    assert previous_champion([*history, move(7, 2, 4)], 4) == 2


def test_a_reuse_or_promotion_does_not_mark_the_version_it_leaves():
    history = [move(1, None, 1), move(2, 1, 2), move(3, 2, 1, "reuse")]
    assert rolled_back_from(history) == set()
    assert previous_champion(history, 1) == 2
