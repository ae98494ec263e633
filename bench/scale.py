"""Part D, scale: a full retrain of the `sgd` family on 10M rows x 20 columns read from Parquet in chunks.

Targets: peak RSS <= 1 GB whatever the row count, and throughput >= 50% of the in-memory fit on
1M rows. Each fit runs in a fresh process (its own peak RSS):

    uv run python -m bench.scale --variant out-of-core --train big.parquet --test test.parquet

prints one JSON line; `run()` generates the data and calls it once per variant.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.common import Section, Target, fmt, markdown_table, peak_rss_mb, run_measured, timed
from perennial.core.config import TrainingConfig

TARGET = "label"
NUMERIC = [f"num_{i:02d}" for i in range(14)]
CATEGORICAL = {"region": 8, "channel": 5, "product": 30, "segment": 4, "device": 6}
BOOLEAN = "member"
GROUP_ROWS = 250_000  # rows per generated row group: generation never holds more
RSS_LIMIT_MB = 1024


def _features() -> dict[str, str]:
    return ({c: "numeric" for c in NUMERIC} | {c: "categorical" for c in CATEGORICAL}
            | {BOOLEAN: "boolean"})


def _group(rows: int, rng: np.random.Generator, weights: dict[str, np.ndarray]) -> pa.Table:
    """One row group: 14 numbers (one with 2% nulls), 5 categories, 1 boolean, a noisy binary label."""
    numbers = rng.normal(size=(rows, len(NUMERIC)))
    logit = numbers[:, :8] @ weights["numeric"]
    columns: dict[str, pa.Array] = {}
    for i, name in enumerate(NUMERIC):
        mask = rng.random(rows) < 0.02 if i == 5 else None
        columns[name] = pa.array(numbers[:, i], mask=mask)
    for name, levels in CATEGORICAL.items():
        codes = rng.integers(0, levels, rows)
        logit += weights[name][codes]
        dictionary = pa.array([f"{name}-{k}" for k in range(levels)])
        encoded = pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), dictionary)
        columns[name] = encoded.cast(pa.string())  # plain strings, as batch files usually hold
    member = rng.random(rows) < 0.3
    logit += 0.8 * member
    columns[BOOLEAN] = pa.array(member)
    label = (logit > 0) ^ (rng.random(rows) < 0.05)  # 5% label noise
    columns[TARGET] = pa.array(label.astype(np.int64))
    return pa.table(columns)


def generate(path: Path, rows: int, seed: int) -> Path:
    """A Parquet file of `rows` rows written row group by row group (one concept for every file)."""
    concept = np.random.default_rng(1234)
    weights = {"numeric": concept.normal(0, 1, 8)}
    weights |= {name: concept.normal(0, 1, levels) for name, levels in CATEGORICAL.items()}
    rng = np.random.default_rng(seed)
    writer = None
    try:
        for start in range(0, rows, GROUP_ROWS):
            table = _group(min(GROUP_ROWS, rows - start), rng, weights)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    return path


def _first_rows(path: Path, rows: int, chunk_rows: int) -> Iterator:
    """The first `rows` rows of a Parquet file, chunk by chunk."""
    from perennial.adapters.batch_files import iter_chunks

    seen = 0
    for chunk in iter_chunks(path, "parquet", chunk_rows):
        if seen >= rows:
            return
        yield chunk.iloc[: rows - seen]
        seen += len(chunk)


def measure(variant: str, train: Path, test: Path, rows: int, chunk_rows: int) -> dict:
    """Fit one variant in this process: wall s of reading + fitting, rows/s, peak RSS, test accuracy."""
    import pandas as pd

    from perennial.core import families
    from perennial.core.evaluation import score
    from perennial.core.metrics import metric_named
    from perennial.core.schema import features_frame, labels
    from perennial.core.types import Schema

    schema = Schema(_features(), TARGET, ("0", "1"))
    baseline = peak_rss_mb()
    with timed() as timer:
        if variant == "in-memory":
            frame = pd.read_parquet(train)
            model = families.family("sgd").build(schema, 0).fit(features_frame(frame, schema),
                                                                labels(frame, TARGET))
            rows = len(frame)
            del frame
        else:
            model = families.family("sgd").fit_out_of_core(
                schema, 0, lambda: _first_rows(train, rows, chunk_rows), TrainingConfig())
    peak = peak_rss_mb()
    return {"variant": variant, "rows": rows, "wall_s": timer.wall, "cpu_s": timer.cpu,
            "rows_per_s": rows / timer.wall, "peak_rss_mb": peak, "import_rss_mb": baseline,
            "accuracy": score(model, pd.read_parquet(test), schema,
                              metric_named("accuracy", "classification", schema.classes))}


def _plot(results: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"{r['variant']}\n{r['rows'] / 1e6:g}M rows" for r in results]
    fig, (rss, speed) = plt.subplots(1, 2, figsize=(10, 4))
    rss.bar_label(rss.bar(names, [r["peak_rss_mb"] for r in results], color="tab:blue"), fmt="%.0f")
    rss.axhline(RSS_LIMIT_MB, color="tab:red", linestyle="--")
    rss.set_title("peak RSS, MB (dashed: target 1 GB)")
    speed.bar_label(speed.bar(names, [r["rows_per_s"] / 1e3 for r in results], color="tab:green"),
                    fmt="%.0f")
    speed.axhline(results[0]["rows_per_s"] / 2e3, color="tab:red", linestyle="--")
    speed.set_title("k rows/s, read + fit (dashed: 50% of in memory)")
    for ax in (rss, speed):
        ax.margins(y=0.12)  # room for the bar labels
    fig.suptitle("sgd retrain: in memory vs out of core (Parquet in chunks)")
    fig.tight_layout()
    path = out / "scale.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run(quick: bool, out: Path) -> Section:
    """Generate the data, fit each variant in a fresh process, compare with the targets."""
    big, middle, base, test_rows = ((200_000, None, 50_000, 20_000) if quick
                                    else (10_000_000, 3_000_000, 1_000_000, 200_000))
    chunk_rows = 100_000 if not quick else 20_000
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="perennial-scale-") as tmp:
        started = time.perf_counter()
        test = generate(Path(tmp) / "test.parquet", test_rows, seed=1)
        baseline = generate(Path(tmp) / "base.parquet", base, seed=2)
        large = generate(Path(tmp) / "large.parquet", big, seed=3)
        generation_s = time.perf_counter() - started
        file_mb = large.stat().st_size / 2**20

        def one(variant: str, train: Path, rows: int) -> dict:
            return run_measured("bench.scale", "--variant", variant, "--train", str(train),
                                "--test", str(test), "--rows", str(rows), "--chunk-rows", str(chunk_rows))

        fits = [("in-memory", baseline, base), ("out-of-core", large, middle), ("out-of-core", large, big)]
        fits = [fit for fit in fits if fit[2]]
        # Quick mode runs the fits side by side (each process mostly imports); full mode one at a time.
        with ThreadPoolExecutor(max_workers=len(fits) if quick else 1) as pool:
            results = list(pool.map(lambda fit: one(*fit), fits))
    plot = _plot(results, out)
    defaults = TrainingConfig()
    memory, chunked = results[0], results[-1]
    ratio = chunked["rows_per_s"] / memory["rows_per_s"]
    targets = [
        Target(f"peak RSS <= 1 GB at {big / 1e6:g}M rows",
               None if quick else chunked["peak_rss_mb"] <= RSS_LIMIT_MB,
               f"{chunked['peak_rss_mb']:.0f} MB (in memory on {base / 1e6:g}M rows: "
               f"{memory['peak_rss_mb']:.0f} MB)"),
        Target(f"throughput >= 50% of in-memory fit on {base / 1e6:g}M rows", None if quick else ratio >= 0.5,
               f"{ratio:.0%}: {chunked['rows_per_s']:,.0f} vs {memory['rows_per_s']:,.0f} rows/s"),
    ]
    table = markdown_table(
        ["variant", "training rows", "wall s", "CPU s", "rows/s", "peak RSS MB", "RSS after imports MB",
         "test accuracy"],
        [[r["variant"], f"{r['rows']:,}", fmt(r["wall_s"]), fmt(r["cpu_s"]), f"{r['rows_per_s']:,.0f}",
          f"{r['peak_rss_mb']:.0f}", f"{r['import_rss_mb']:.0f}", fmt(r["accuracy"], 4)] for r in results])
    markdown = "\n".join([
        f"Synthetic data: 14 numeric (one with 2% nulls), 5 categorical and 1 boolean column, a binary "
        f"label linear in 13 of them with 5% noise; {big:,} rows in Parquet ({file_mb:.0f} MB, "
        f"generated in {generation_s:.0f} s), {test_rows:,} separate test rows.",
        f"Each fit runs in a fresh process. In memory: `pd.read_parquet` of a {base:,}-row file, then "
        f"`family('sgd').build().fit` (epochs until converged). Out of core: `family('sgd').fit_out_of_core` "
        f"over {chunk_rows:,}-row chunks (`perennial.adapters.batch_files.iter_chunks`): a pass to sample "
        f"{defaults.preprocess_sample_rows:,} rows for the preprocessing, then "
        f"{defaults.out_of_core_epochs} `partial_fit` passes.",
        "Throughput = training rows / wall seconds of reading + fitting; peak RSS includes the "
        "interpreter and imports (shown apart). Other processes may share the 2 cores: timings are "
        "indicative." + (" Quick mode: smaller sizes, fits run side by side, targets not judged."
                         if quick else ""),
        "",
        table,
    ])
    return Section(title="D. Scale: out-of-core retrain", markdown=markdown, targets=targets, plots=[plot],
                   data={"results": results, "throughput_ratio": ratio, "generation_s": generation_s})


def main() -> None:
    parser = argparse.ArgumentParser(description="One fit of part D in this process; prints one JSON line.")
    parser.add_argument("--variant", choices=["in-memory", "out-of-core"], required=True)
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--rows", type=int, required=True, help="out of core: the first ROWS rows of --train")
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    args = parser.parse_args()
    print(json.dumps(measure(args.variant, args.train, args.test, args.rows, args.chunk_rows)))


if __name__ == "__main__":
    main()
