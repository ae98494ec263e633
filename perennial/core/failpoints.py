"""Named points where a fault test stops this process: `PERENNIAL_FAILPOINT=<name>` kills it there
with SIGKILL (as a power cut or the OOM killer would), `<name>@<n>` the n-th time it is reached,
`<name>:raise` raises instead.

Unset (always, outside tests) a point does nothing. Points: `decided` (the intent is recorded),
`registered`, `history-written` (the champion's alias history has the move, the alias has not moved),
`alias-moved` (the alias moved, a rollback's tags not written yet), `promoted`, `staged` (the commit
is staged), `state-written` (state files in place, ledger line not yet); see tests/test_faults.py
and tests/flow/test_rollback.py.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "PERENNIAL_FAILPOINT"
_hits: Counter[str] = Counter()


class FailpointError(RuntimeError):
    """Raised at a failpoint set to `raise`."""


def reached(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, action = spec.partition(":")
    point, _, nth = point.partition("@")
    if point != name:
        return
    _hits[name] += 1
    if _hits[name] < int(nth or 1):
        return
    if action == "raise":
        raise FailpointError(f"failpoint {name} reached")
    os.kill(os.getpid(), signal.SIGKILL)
