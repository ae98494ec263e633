"""`python -m bench`: the benchmark, run from a source checkout (it is not part of the installed package).

uv run python -m bench            # full run, writes bench/results/ (about half an hour here)
uv run python -m bench --quick    # small sizes, checks the harness works (CI)
uv run python -m bench --only quality --scenario recurring   # part A on one scenario, full size
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench.suite import PARTS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmark adaptation quality and cost, monitoring speed, "
        "orchestration overhead, scale, speed and metric estimates with delayed labels; writes a report with "
        "plots.")
    parser.add_argument("--quick", action="store_true",
                        help="Small sizes, about 2 minutes: checks the harness.")
    parser.add_argument("--out", type=Path, default=None,
                        help="Report folder (default: bench/results, or bench/results-quick with --quick).")
    parser.add_argument("--only", nargs="+", choices=PARTS, help="Run only these parts.")
    parser.add_argument("--scenario", nargs="+", metavar="NAME",
                        help="Part A (quality) on these scenarios only, e.g. recurring (default: all; "
                        "sea-abrupt with --quick).")
    return parser


if __name__ == "__main__":
    args = _parser().parse_args()
    from perennial.app.cli import QUIET_ENV

    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    from bench.suite import main

    sys.exit(main(args.quick, args.out, args.only, args.scenario))
