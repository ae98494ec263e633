"""Part B: how fast a batch is validated and checked for drift, against a numpy/scipy floor.

Each measurement runs in a fresh process (its own peak RSS; imports excluded from the timings):
- floor: read the Parquet batch, then a two-sample KS test per column against the reference;
- perennial: read the batch, Great Expectations suite, Evidently drift report (HTML written), as
  the `validate_batch` and `measure_drift` tasks do it (they sample large batches);
- every row: Evidently on the whole batch, as before sampling, for the per-column verdicts.

    python -m bench.monitoring --measure perennial BATCH.parquet REFERENCE.parquet
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import Section, Target, fmt, markdown_table, peak_rss_mb, run_measured

TARGET = "label"
# Shifts of the current batch against the reference, in standard deviations: none, around
# Evidently's threshold (normed Wasserstein 0.1) and well past it.
SHIFTS = {"n1": 0.05, "n2": 0.08, "n3": 0.13, "n4": 0.3, "n5": 1.0}


def wide_frame(rows: int, seed: int, drifted: bool) -> pd.DataFrame:
    """20 features: 14 numeric, 5 categorical, 1 boolean; a label from three of them."""
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {}
    for i in range(14):
        shift = SHIFTS.get(f"n{i}", 0.0) if drifted else 0.0
        data[f"n{i}"] = rng.normal(10 * i + shift * (1 + i), 1 + i, rows)
    levels = [f"v{k}" for k in range(8)]
    for i in range(5):
        p = np.linspace(1, 2, 8) if (drifted and i == 0) else np.ones(8)
        data[f"c{i}"] = rng.choice(levels, rows, p=p / p.sum())
    data["b0"] = rng.random(rows) < (0.45 if drifted else 0.3)
    score = (data["n0"] - 0) / 1 + (data["n1"] - 10) / 2 + (data["c0"] == "v1")
    data[TARGET] = np.where(score + rng.normal(0, 0.5, rows) > 0.5, "yes", "no")
    return pd.DataFrame(data)


def measure(kind: str, batch_path: Path, reference_path: Path) -> dict[str, Any]:
    """One measurement; returns seconds per stage, drift verdicts and scores per column."""
    import evidently  # noqa: F401  (imports are a one-time cost of a process; not timed)
    import great_expectations  # noqa: F401
    from scipy.stats import ks_2samp

    from perennial.adapters.batch_files import read_batch
    from perennial.adapters.evidently import batch_drift, evidently_drift
    from perennial.adapters.great_expectations import run_suite
    from perennial.core.config import DriftConfig, ValidationConfig
    from perennial.core.schema import features_frame, infer_schema

    reference = pd.read_parquet(reference_path)
    schema = infer_schema(reference, TARGET, None)
    out: dict[str, Any] = {"kind": kind}
    start = time.perf_counter()
    batch = read_batch(batch_path, "parquet", TARGET)
    out["read_s"] = time.perf_counter() - start
    if kind == "floor":
        t = time.perf_counter()
        for column in schema.features:
            a, b = batch.frame[column], reference[column]
            if a.dtype == object:
                codes = {v: k for k, v in enumerate(pd.unique(b))}
                a, b = a.map(codes).fillna(-1), b.map(codes)
            ks_2samp(np.asarray(a, float), np.asarray(b, float))
        out["drift_s"] = time.perf_counter() - t
    else:
        if kind == "perennial":
            t = time.perf_counter()
            run_suite(batch, schema, reference, ValidationConfig())
            out["validation_s"] = time.perf_counter() - t
        t = time.perf_counter()
        cfg, ref = DriftConfig(), features_frame(reference, schema)
        with tempfile.TemporaryDirectory() as tmp:
            html = Path(tmp) / "report.html"
            drift = (
                batch_drift(batch, ref, schema, cfg, html)
                if kind == "perennial"
                else evidently_drift(features_frame(batch.frame, schema), ref, schema, cfg, html)
            )
        out["drift_s"] = time.perf_counter() - t
        out["rechecked"] = [f.column for f in drift.features if f.method.endswith("(every row)")]
        out["verdicts"] = {f.column: f.drifted for f in drift.features}
        out["scores"] = {f.column: f.score for f in drift.features}
        out["threshold"] = {f.column: f.threshold for f in drift.features}
    out["total_s"] = time.perf_counter() - start
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def verdict_check(full: dict[str, Any], sampled: dict[str, Any]) -> tuple[int, int, float]:
    """Columns with the same verdict, columns compared, and the largest score difference."""
    same = sum(full["verdicts"][c] == sampled["verdicts"][c] for c in full["verdicts"])
    gap = max(abs(full["scores"][c] - sampled["scores"][c]) for c in full["scores"])
    return same, len(full["verdicts"]), gap


def stream_verdicts(rows: int, batches: int | None = None) -> list[list[Any]]:
    """The demo's loan stream (its covariate shift moves `age` step by step), at `rows` per batch:
    Evidently's verdicts on every row against those on the sample the drift task takes."""
    from perennial.adapters.evidently import batch_drift, evidently_drift
    from perennial.app import demo
    from perennial.core.config import DriftConfig
    from perennial.core.schema import features_frame, infer_schema
    from perennial.core.types import Batch

    rng = np.random.default_rng(3)
    phases = [p for p in demo.PHASES if not p.corrupt]
    frames = [demo.demo_batch(p, rows, rng) for p in phases for _ in range(p.batches)][:batches]
    schema = infer_schema(frames[0], "approved", None)
    reference = features_frame(frames[0].sample(5000, random_state=0), schema)
    cfg = DriftConfig()
    table = []
    for i, frame in enumerate(frames[1:], 2):
        full = evidently_drift(features_frame(frame, schema), reference, schema, cfg, None)
        sampled = batch_drift(Batch(f"batch-{i:03d}.csv", Path("."), frame), reference, schema, cfg, None)
        pairs = list(zip(full.features, sampled.features, strict=True))
        table.append(
            [
                f"loan batch {i}",
                ", ".join(f.column for f in full.features if f.drifted) or "none",
                f"{sum(a.drifted == b.drifted for a, b in pairs)}/{len(pairs)}",
                fmt(max(abs(a.score - b.score) for a, b in pairs), 4),
            ]
        )
    return table


def run(quick: bool, out: Path) -> Section:
    from perennial.core.config import DriftConfig, ValidationConfig
    from perennial.core.sampling import sampling_error

    sizes = [20_000] if quick else [100_000, 1_000_000]
    rows, results = [], {}
    with tempfile.TemporaryDirectory(prefix="perennial-monitor-") as tmp:
        reference_path = Path(tmp) / "reference.parquet"
        wide_frame(5000, 1, drifted=False).to_parquet(reference_path)
        for n in sizes:
            batch_path = Path(tmp) / f"batch-{n}.parquet"
            wide_frame(n, 2, drifted=True).to_parquet(batch_path)
            for kind in ("floor", "perennial", "every-row"):
                if quick:
                    results[n, kind] = measure(kind, batch_path, reference_path)
                else:
                    results[n, kind] = run_measured(
                        "bench.monitoring", "--measure", kind, str(batch_path), str(reference_path)
                    )
    targets, data = [], {}
    for n in sizes:
        floor, ours, full = results[n, "floor"], results[n, "perennial"], results[n, "every-row"]
        same, total, gap = verdict_check(full, ours)
        ratio = ours["total_s"] / floor["total_s"]
        data[f"ratio_{n}"] = ratio
        for name, r in (
            ("floor: read + KS per column", floor),
            ("Perennial: read + GX + Evidently (sampled)", ours),
            ("Evidently on every row: read + drift", full),
        ):
            rows.append(
                [
                    f"{n:,}",
                    name,
                    fmt(r["read_s"], 2),
                    fmt(r.get("validation_s"), 2),
                    fmt(r["drift_s"], 2),
                    fmt(r["total_s"], 2),
                    f"{r['total_s'] / floor['total_s']:.1f}x",
                    "-" if quick else fmt(r["peak_rss_mb"], 0),
                ]
            )
        targets.append(
            Target(
                f"validation + drift <= 2x the floor on {n:,} rows",
                None if quick else ratio <= 2,
                f"{ours['total_s']:.2f} s vs floor {floor['total_s']:.2f} s ({ratio:.1f}x)",
            )
        )
        targets.append(
            Target(
                f"same per-column drift verdicts as every row, {n:,} rows",
                same == total,
                f"{same}/{total} columns agree; largest score difference {gap:.4f}; confirmed "
                f"on every row: {', '.join(ours['rechecked']) or 'none'}",
            )
        )
    # Quick: the first batches of the covariate shift only, just above the drift sample's size.
    stream = stream_verdicts(25_000, batches=3) if quick else stream_verdicts(200_000)
    agree = all(r[2].split("/")[0] == r[2].split("/")[1] for r in stream)
    targets.append(
        Target(
            "same verdicts on the loan stream's batches",
            agree,
            f"{sum(r[2].split('/')[0] == r[2].split('/')[1] for r in stream)}/{len(stream)} batches",
        )
    )
    v, d = ValidationConfig().sample_rows, DriftConfig().sample_rows
    body = (
        "20 feature columns (14 numeric, 5 categorical, 1 boolean) + label; reference 5,000 rows; the "
        f"batch shifts n1-n5 by {', '.join(f'{s}' for s in SHIFTS.values())} standard deviations and "
        "changes c0 and b0. Great Expectations checks a uniform sample of "
        f"{v:,} rows plus every row breaking a no-tolerance rule; Evidently compares a uniform sample of "
        f"{d:,} rows and recomputes on every row any column whose sampled score is within "
        f"{DriftConfig().recheck_margin} of its threshold. With 99.9% confidence a sampled rate is within "
        f"±{100 * sampling_error(v):.2f} points of the batch's and the sample's CDF within "
        f"{sampling_error(d):.4f} of the batch's at every value (Hoeffding / DKW). Timings exclude imports; "
        f"peak RSS is each measurement's own process"
        f"{' (quick mode measures in-process: no RSS)' if quick else ''}.\n\n"
        + markdown_table(
            ["rows", "path", "read s", "GX s", "drift s", "total s", "vs floor", "peak RSS MB"], rows
        )
        + "\n\nPer-column verdicts, Evidently on every row against on the sample (the loan stream's "
        "covariate shift, batch 1 as reference):\n\n"
        + markdown_table(
            ["batch", "drifted columns (every row)", "same verdicts", "largest score difference"], stream
        )
    )
    return Section("B. Monitoring speed", body, targets, [], data)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--measure", choices=["floor", "perennial", "every-row"], required=True)
    parser.add_argument("batch", type=Path)
    parser.add_argument("reference", type=Path)
    args = parser.parse_args()
    print(json.dumps(measure(args.measure, args.batch, args.reference)))


if __name__ == "__main__":
    main()
