"""The one way Perennial puts a file in place: whole or not at all."""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def place_atomically(target: Path, write: Callable[[BinaryIO], object], *, replace: bool = True,
                     staging: Path | None = None) -> None:
    """Write `target` through a private temporary file beside it, synced, then put in place whole:
    readers see the old content or the new, never half of it. With `replace=False` a file already
    at `target` is never replaced (FileExistsError). The temporary file never outlives the call.
    With `staging` (a folder on the same file system), the temporary file is made there: for a
    folder another program watches, which should see the file arrive under its own name only."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = (staging or target.parent) / f".{target.name}.{secrets.token_hex(4)}.partial"
    try:
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
    except OSError as exc:
        if exc.errno in DISK_ERRNOS and exc.filename is None:  # a write's error names no file
            raise OSError(exc.errno, exc.strerror, str(target)) from exc
        raise


# Errors of the disk itself (full, over quota, read-only, failing): never the fault of the batch a
# cycle was writing for.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})


def disk_error(exc: BaseException) -> OSError | None:
    """The disk error behind `exc` (in its causes and contexts), or None; SQLite's "database or disk
    is full" counts, raised as it is by MLflow's store."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            return exc
        if "database or disk is full" in str(exc):
            return OSError(errno.ENOSPC, "database or disk is full")
        exc = exc.__cause__ or exc.__context__
    return None


def write_atomically(path: Path, data: bytes, staging: Path | None = None) -> None:
    """`data` as the content of `path`, placed atomically (`staging`: see `place_atomically`)."""
    place_atomically(path, lambda out: out.write(data), staging=staging)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, hex. Computed once per version of the file in a process: the
    candidates of one adaptation re-read the same earlier batches, and a batch just loaded is checked
    again by later retrains. A version is its inode, size and modification and change times (any
    write changes the change time, which no user can set back)."""
    stat = os.stat(path)
    return _sha256(str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


@functools.lru_cache(maxsize=4096)
def _sha256(path: str, *version: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
