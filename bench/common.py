"""What every benchmark part returns, and the measuring helpers they share."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perennial.core.timing import timed  # noqa: F401  (re-exported for the parts)

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Target:
    """A target of the issue, and whether this run met it (None: not measured in this mode)."""

    name: str
    met: bool | None
    detail: str


@dataclass
class Section:
    """One part of the report: a markdown body, the plots it refers to, its targets."""

    title: str
    markdown: str
    targets: list[Target] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    # Numbers the README's headline table and the tests read.
    data: dict[str, Any] = field(default_factory=dict)


if TYPE_CHECKING:
    from perennial.core.config import Settings


def embedded_settings(state: Path) -> Settings:
    """Perennial's settings with the state folder and a SQLite MLflow store in `state`, passed to the
    flows (nothing is steered through the environment)."""
    from perennial.core.config import Settings

    return Settings(state_dir=state, state_url=None, mlflow_tracking_uri=f"sqlite:///{state / 'mlflow.db'}")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB.

    Linux's VmHWM, not getrusage: ru_maxrss survives exec, so a child started by a large parent
    would report the parent's peak (measured: 1.58 GB for a 0.3 GB child).
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_measured(module: str, *args: str, timeout: float = 3600) -> dict[str, Any]:
    """Run `python -m module args` in a fresh process that prints one JSON line last; return it.

    A fresh process gives each memory measurement its own peak RSS.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """The fastest of `repeat` wall-clock runs of fn, and its last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result
