"""Quoting values from outside (a config, a batch, the registry) in messages, never at unbounded length."""

from __future__ import annotations

import re
import reprlib
from collections.abc import Iterable
from itertools import islice
from typing import Any

ELLIPSIS = "..."


class _BoundedRepr(reprlib.Repr):
    """`reprlib.Repr` that also never sorts a whole dict or set, nor converts a huge int to digits:
    each value is looked at only as far as the limits show it."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.maxstring = self.maxother = self.maxlong = limit
        self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = self.maxdeque = self.maxarray = 8
        self.maxdict = 6
        self.maxlevel = 3

    def repr_int(self, x: int, level: int) -> str:
        # repr() of an int with more than 4,300 digits raises, and a long one is slow to make.
        if x.bit_length() > 4 * self.maxlong:
            return f"<int of about {int(x.bit_length() * 0.30103) + 1:,} digits>"
        return super().repr_int(x, level)

    def repr_bytes(self, x: bytes, level: int) -> str:
        return self.repr_str(x, level)  # slices before it quotes, like a str

    def repr_dict(self, x: dict, level: int) -> str:
        # reprlib sorts every key first; insertion order needs only the keys shown.
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        keys = islice(x, self.maxdict)
        shown = [f"{self.repr1(k, level - 1)}: {self.repr1(x[k], level - 1)}" for k in keys]
        return "{" + ", ".join(shown + ([ELLIPSIS] if len(x) > self.maxdict else [])) + "}"

    def repr_set(self, x: set, level: int) -> str:
        return self._first_items(x, level, "{", "}") if x else "set()"

    def repr_frozenset(self, x: frozenset, level: int) -> str:
        return self._first_items(x, level, "frozenset({", "})") if x else "frozenset()"

    def _first_items(self, items: Iterable[Any], level: int, left: str, right: str) -> str:
        if level <= 0:
            return f"{left}{ELLIPSIS}{right}"
        shown = [self.repr1(item, level - 1) for item in islice(items, self.maxset + 1)]
        cut = shown[: self.maxset] + ([ELLIPSIS] if len(shown) > self.maxset else [])
        return left + ", ".join(cut) + right


def bounded(value: object, limit: int = 80) -> str:
    """`value`'s repr for a message, at most `limit` characters (cut with '...'), made without
    walking or printing more of a huge value than is shown."""
    text = _BoundedRepr(limit).repr(value)
    return text if len(text) <= limit else text[: max(limit - len(ELLIPSIS), 0)] + ELLIPSIS


def shorten(text: str, limit: int = 200) -> str:
    """The first line of a message `text`, at most `limit` characters (cut with '...'), without copying
    more of a huge text than is shown."""
    found = re.search(r"\S", text)
    start = found.start() if found else len(text)
    line = text[start: start + limit + 1].partition("\n")[0].rstrip()
    return line if len(line) <= limit else line[: max(limit - len(ELLIPSIS), 0)] + ELLIPSIS
