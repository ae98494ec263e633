"""Two models adapting at once on the production topology's two workers, against one alone.

Each measurement starts a fresh topology (`python -m deployments.topology up`), lets both models
train their first champion on batch 1, then ingests batch 4 (a concept change for each model) and
times from the ingest to the settled ledger line: one model alone, then the other alone, then, on a
second fresh topology, both at once. Target: both within 1.3x of one alone.

    uv run python -m bench.topology_parallel [--rows 1000] [--repeat 1]

Writes bench/results/topology_parallel.md.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deployments.topology.topology import ROOT, Topology
from perennial.app.local_server import BIN, quiet_env

MODELS = ("loan-approval", "sensor-alarm")
CHANGE = "batch-004.csv"  # both streams change here (docs/topology.md)


class Bench:
    """One fresh topology, fed through `perennial ingest` as a user feeds it."""

    def __init__(self, rows: int) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="perennial-bench-topology-"))
        self.folder.chmod(0o755)  # PostgreSQL runs as `postgres` when this runs as root
        self.home, self.rows = self.folder / "home", rows
        self.env = {**quiet_env(), "OMP_NUM_THREADS": "1", **{
            name: secrets.token_urlsafe(18)
            for name in ("PGPASSWORD", "PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_PASSWORD")}}

    def __enter__(self) -> Bench:
        self._topology("up")
        self.env.update(Topology(self.home).client_env())
        if self.rows:  # batches of another size than the topology's example streams
            from deployments.topology.streams import write_streams

            shutil.rmtree(self.home / "streams")
            write_streams(self.home / "streams", self.rows)
        self.feed(MODELS, "batch-001.csv")
        return self

    def __exit__(self, *exc: object) -> None:
        self._topology("down")
        shutil.rmtree(self.folder, ignore_errors=True)

    def _topology(self, command: str) -> None:
        subprocess.run([sys.executable, "-m", "deployments.topology", command, "--home", str(self.home)],
                       env=self.env, cwd=ROOT, check=True, capture_output=True, timeout=600)

    def feed(self, models: tuple[str, ...], batch: str) -> tuple[float, float]:
        """Seconds from the ingest of `batch` for each model (at once) until every ledger settled it,
        and the cores the machine kept busy meanwhile (on average)."""
        started, cpu = time.perf_counter(), busy_seconds()
        ingests = [subprocess.Popen(
            [str(BIN / "perennial"), "ingest", str(self.home / "streams" / m / batch), "--config",
             str(self.home / "models" / f"{m}.yaml")], env=self.env, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for m in models]
        for proc in ingests:
            if proc.wait(120):
                raise RuntimeError(f"perennial ingest of {batch} failed")
        deadline = time.monotonic() + 900
        while not all(self.settled(m, batch) for m in models):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{batch} not settled for {models} after 900 s")
            time.sleep(0.2)
        wall = time.perf_counter() - started
        return wall, (busy_seconds() - cpu) / wall

    def settled(self, model: str, batch: str) -> bool:
        import psycopg

        url = Topology(self.home).cluster(self.env["PGPASSWORD"]).url("perennial", with_password=True)
        with psycopg.connect(url) as conn:
            return bool(conn.execute(
                "SELECT 1 FROM perennial_ledger WHERE model = %s AND line::json->>'batch' = %s "
                "AND line::json->>'status' = 'done'", (model, batch)).fetchone())


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (every process: flow runs, servers)."""
    aggregate = Path("/proc/stat").read_text().splitlines()[0].split()[1:]  # "cpu  user nice system ..."
    user, nice, system, _idle, _iowait, irq, softirq, *_ = map(int, aggregate)
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def measure(rows: int) -> dict[str, tuple[float, float]]:
    """(seconds, cores busy) of each model alone, then of both at once on a fresh topology."""
    with Bench(rows) as bench:
        alone = {f"{m} alone": bench.feed((m,), CHANGE) for m in MODELS}
    with Bench(rows) as bench:
        return {**alone, "both at once": bench.feed(MODELS, CHANGE)}


def report(runs: list[dict[str, tuple[float, float]]], rows: int) -> str:
    lines = ["# Two models adapting at once on two workers", "",
             f"`uv run python -m bench.topology_parallel --rows {rows} --repeat {len(runs)}`; "
             f"{os.cpu_count()} cores. Seconds from `perennial ingest` of batch 4 (a concept change) "
             "to the settled ledger line: the monitor run, then the adapt run (training, registry, "
             "promotion), each a flow run a worker starts in a process of its own. In brackets: the "
             "cores the machine kept busy meanwhile, on average (every process: flow runs, servers, "
             "workers). Two runs at once cannot take less than (2 x cores busy alone / cores) x the "
             "time alone.", "",
             "| run | " + " | ".join(runs[0]) + " | both / slower alone | both / mean alone |",
             "|---" * (len(runs[0]) + 3) + "|"]
    for i, run in enumerate(runs, 1):
        alone = [run[f"{m} alone"][0] for m in MODELS]
        both = run["both at once"][0]
        lines.append(f"| {i} | " + " | ".join(f"{wall:.1f} s ({cores:.2f})" for wall, cores in run.values())
                     + f" | {both / max(alone):.2f}x | {both / statistics.mean(alone):.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=0, help="rows per batch (default: the topology's 1000)")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    runs = [measure(args.rows) for _ in range(args.repeat)]
    text = report(runs, args.rows or 1000)
    out = ROOT / "bench" / "results" / "topology_parallel.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
