"""Wall and CPU seconds of a block: what the cost ledger and the benchmarks record."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class Timer:
    wall: float = 0.0
    cpu: float = 0.0


@contextmanager
def timed() -> Iterator[Timer]:
    """Wall and process CPU seconds (all threads, so OpenMP workers of the estimators count)."""
    timer = Timer()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield timer
    finally:
        timer.wall = time.perf_counter() - wall
        timer.cpu = time.process_time() - cpu
