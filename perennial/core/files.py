"""The one way Perennial puts a file in place: whole or not at all."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def place_atomically(target: Path, write: Callable[[BinaryIO], object], *, replace: bool = True) -> None:
    """Write `target` through a private temporary file beside it, synced, then put in place whole:
    readers see the old content or the new, never half of it. With `replace=False` a file already
    at `target` is never replaced (FileExistsError). The temporary file never outlives the call."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
    # Its own (no two writers share a partial file), with the permissions the umask gives.
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(partial, target)
        else:
            os.link(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes) -> None:
    """`data` as the content of `path`, placed atomically."""
    place_atomically(path, lambda out: out.write(data))
