"""The benchmark's parts A-F in one go, one markdown report with its plots (`python -m bench`)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from importlib.metadata import version
from pathlib import Path

from bench.common import ROOT, Section, markdown_table

PARTS = ("quality", "monitoring", "overhead", "scale", "speed", "delayed_labels")


def _part(name: str, scenarios: list[str] | None = None) -> Callable[[bool, Path], Section]:
    """Part `name`'s run(quick, out); part A limited to `scenarios` when given."""
    if name == "quality":
        from bench.quality import run

        return partial(run, only=scenarios)
    if name == "monitoring":
        from bench.monitoring import run
    elif name == "overhead":
        from bench.overhead import run
    elif name == "speed":
        from bench.speed import run
    elif name == "delayed_labels":
        from bench.delayed_labels import run
    else:
        from bench.scale import run
    return run


def machine() -> str:
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else ""
    )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    libs = ", ".join(
        f"{p} {version(p)}"
        for p in ("prefect", "mlflow", "great-expectations", "evidently", "scikit-learn", "lightgbm", "river",
                  "pandas")
    )
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GB RAM, Python {platform.python_version()}, "
        f"{platform.system()}; {libs}"
    )


def run_bench(
    quick: bool, out: Path, parts: tuple[str, ...] = PARTS, scenarios: list[str] | None = None
) -> Path:
    """Run the parts (part A on `scenarios` only, if given), write `out/report.md` (plots beside it)
    and return its path."""
    out.mkdir(parents=True, exist_ok=True)
    started, sections, timings = time.perf_counter(), [], {}
    for name in parts:
        t = time.perf_counter()
        sections.append(_part(name, scenarios)(quick, out))
        timings[name] = time.perf_counter() - t
        print(f"bench: {name} done in {timings[name]:.0f} s", flush=True)
    command = (
        "uv run python -m bench"
        + (" --quick" if quick else "")
        + (f" --only {' '.join(parts)}" if parts != PARTS else "")
        + (f" --scenario {' '.join(scenarios)}" if scenarios else "")
    )
    targets = [
        [
            s.title.split(".")[0],
            t.name,
            {True: "met", False: "**missed**", None: "n/a (quick)"}[t.met],
            t.detail,
        ]
        for s in sections
        for t in s.targets
    ]
    lines = [
        f"# Perennial benchmark{' (quick mode: small sizes, not for reading)' if quick else ''}",
        "",
        f"- Command: `{command}`",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; total {time.perf_counter() - started:.0f} s "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in timings.items())})",
        f"- Machine: {machine()}",
        "",
        "## Targets",
        "",
        markdown_table(["part", "target", "result", "measured"], targets),
        "",
    ]
    for section in sections:
        lines += [f"## {section.title}", "", section.markdown, ""]
        lines += [f"![{p.stem}]({p.name})" for p in section.plots] + [""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report


def main(quick: bool, out: Path | None, parts: list[str] | None, scenarios: list[str] | None = None) -> int:
    from perennial.app.demo import quiet_console

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    quiet_console()
    out = out or ROOT / "bench" / ("results-quick" if quick else "results")
    report = run_bench(quick, out.resolve(), tuple(parts or PARTS), scenarios)
    print(f"bench: report written to {report}")
    return 0
