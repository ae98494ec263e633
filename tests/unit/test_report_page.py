"""`perennial report`'s page, from a ledger with every kind of decision (issue 24's first part)."""

from __future__ import annotations

import re

from perennial.adapters.report_page import page, service_bands, summary
from perennial.core.lifelong import AccuracyMatrix, Step, Window
from perennial.core.metrics import metric_named_or_accuracy
from perennial.core.types import CycleRecord

ACCURACY = metric_named_or_accuracy("accuracy")


def line(batch: str, decision: str, before: int | None, after: int | None, accuracy: float | None,
         **fields) -> CycleRecord:
    given = {"rows": 100, "validation": "passed", "drift_share": 0.1, **fields}
    return CycleRecord(batch=batch, champion_accuracy_before=accuracy, decision=decision,
                       reason=f"why {batch}",
                       champion_version_before=before, champion_version_after=after, **given)


LEDGER = [
    line("b1.csv", "retrain", None, 1, None, trigger="first_model", model_version=1, promoted=True,
         challenger_accuracy=0.9, train_cpu_seconds=1.0),
    line("b2.csv", "noop", 1, 1, 0.91),
    line("b3.csv", "fine_tune", 1, 2, 0.80, model_version=2, promoted=True, challenger_accuracy=0.88,
         train_cpu_seconds=0.4, drifted_columns=["age"]),
    line("<b4>.csv", "reject", 2, 2, 0.5, validation="failed"),
    line("b5.csv", "reject", None, 2, None, validation="unreadable", rows=0),
    line("b6.csv", "retrain", 2, 3, 0.86, trigger="data_growth", model_version=3, promoted=True,
         challenger_accuracy=0.9),
    line("b7.csv", "reuse", 3, 1, 0.55, promoted=True),
    line("b8.csv", "await_labels", 1, 1, None, status="awaiting labels",
         estimate={"metric": "accuracy", "value": 0.9, "low": 0.88, "high": 0.92}),
]


def test_the_summary_counts_decisions_and_names_the_champion_and_its_best():
    told = summary(LEDGER, ACCURACY)
    assert told.batches == 8
    assert told.decisions == {"retrain": 1, "noop": 1, "fine_tune": 1, "reject": 2, "growth": 1, "reuse": 1,
                              "await_labels": 1}
    assert (told.champion, told.champion_since) == (1, "b7.csv")  # v1 back in service by the reuse
    assert (told.now, told.best, told.best_batch) == (0.55, 0.91, "b2.csv")


def test_each_champion_version_is_a_band_over_the_batches_it_served():
    # b5 could not be read (its line names no champion before it): v2 served it all the same.
    assert service_bands(LEDGER) == [(2, 3, 1), (4, 6, 2), (7, 7, 3), (8, 8, 1)]


def test_the_page_is_self_contained_with_every_decision_and_the_matrix():
    matrix = AccuracyMatrix([Window("b1.csv", 1), Window("b2.csv", 1)],
                            [Step("b1.csv", 1, 1, {"b1.csv": 0.9}),
                             Step("b2.csv", 1, 1, {"b1.csv": 0.9, "b2.csv": 0.91})])
    html = page("credit <risk>", LEDGER, matrix)
    assert "<h1>credit &lt;risk&gt;</h1>" in html and "&lt;b4&gt;.csv" in html and "<b4>" not in html
    assert "<b>8</b> batches: reject 2," in html
    assert "Champion now: <b>v1</b> (in service after b7.csv)" in html
    assert re.search(r"<script[^>]*\ssrc=", html) is None  # plotly.js inlined: opens with no network
    # plotly.js once; two charts: the batches and the matrix
    assert html.count("* plotly.js (cartesian - minified) v") == 1  # inlined once for both figures
    assert html.count('class="plotly-graph-div"') == 2
    names = set(re.findall(r'"name":"([a-z_]+)"', html))
    assert {"retrain", "growth", "fine_tune", "reuse", "noop", "reject", "await_labels"} <= names
    assert "why b7.csv" in html and "Rejected: " in html and "why b5.csv" in html


def test_a_thousand_batches_stay_under_five_megabytes():
    many = [line(f"batch-{i:04d}.csv", "noop" if i % 10 else "retrain", 1, 1, 0.9,
                 drifted_columns=["a", "b"]) for i in range(1000)]
    for record in many:
        record.reason = "stable: 10% of features drifted (< 20%), accuracy 90.0% (v1 on 3 batches) " * 3
    size = len(page("m", many, AccuracyMatrix.empty()).encode())
    assert size <= 5 * 1024 * 1024, size


def test_the_inlined_plotly_js_is_the_version_plotly_py_writes_figures_for():
    """An upgrade of plotly (the Python package) must come with its bundle: a figure written for
    another plotly.js may not draw."""
    from plotly.offline import get_plotlyjs_version

    from perennial.adapters.report_page import PLOTLY_JS

    header = PLOTLY_JS.read_text(encoding="utf-8")[:200]
    assert f"plotly.js (cartesian - minified) v{get_plotlyjs_version()}\n" in header
