"""Plotly adapter: a model's life on one self-contained HTML page (opens with no network).

Built from the ledger and the accuracy matrix only (no MLflow call), so it renders in moments for a
long stream: the metric per batch of the champion in service and of each challenger, the decisions as
markers with their reasons on hover, the champion version in service as bands, drift share and the
drifted columns, rejected batches, training cost per decision, and the forgetting matrix.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from perennial.core.files import place_atomically
from perennial.core.lifelong import AccuracyMatrix
from perennial.core.metrics import Metric, metric_named_or_accuracy
from perennial.core.types import Action, CycleRecord, Trigger

# One colour and marker per kind of decision (a data-growth retrain is told apart from an alarm's).
DECISION_STYLE = {
    "retrain": ("#1f77b4", "triangle-up"), "growth": ("#17becf", "triangle-up-open"),
    "fine_tune": ("#ff7f0e", "diamond"), "reuse": ("#2ca02c", "star"), "noop": ("#7f7f7f", "circle-open"),
    "reject": ("#d62728", "x"), "await_labels": ("#9467bd", "hourglass"),
}
# plotly.js's cartesian bundle (npm plotly.js-cartesian-dist-min, MIT licence beside it), of the
# version plotly.py writes figures for: scatter, bar and heatmap in 1.4 MB, where the full bundle
# plotly.py inlines is 4.6 MB (in every page, and in every version's MLflow run).
PLOTLY_JS = Path(__file__).parent / "static" / "plotly-cartesian.min.js"

# Of a reason shown on hover (the whole reason is on the ledger line and the batch's MLflow run): the
# page of a 1,000-batch ledger stays small.
REASON_CHARS = 200


@dataclass(frozen=True)
class Summary:
    """What the page says in words on top."""

    batches: int
    decisions: dict[str, int]
    champion: int | None
    champion_since: str | None
    now: float | None
    best: float | None
    best_batch: str | None


def kind_of(record: CycleRecord) -> str:
    """The decision as the page shows it."""
    return "growth" if record.trigger == Trigger.DATA_GROWTH else str(record.decision)


def summary(records: list[CycleRecord], metric: Metric) -> Summary:
    """Batches, decisions, the champion now and the batch after which it took service, and the champion's
    metric on the latest batch it was measured on against the best it reached."""
    champion = next((r.champion_version_after for r in reversed(records) if r.champion_version_after), None)
    since = None
    for before, record in zip([None, *records], records, strict=False):
        if record.champion_version_after == champion and (before is None or before.champion_version_after
                                                           != champion):
            since = record.batch
    measured = [r for r in records if r.champion_accuracy_before is not None]
    best = max(measured, key=lambda r: metric.utility(r.champion_accuracy_before), default=None)
    return Summary(len(records), dict(Counter(kind_of(r) for r in records)), champion, since,
                   measured[-1].champion_accuracy_before if measured else None,
                   best.champion_accuracy_before if best else None, best.batch if best else None)


def _hover(record: CycleRecord, m: Metric) -> str:
    reason = record.reason if len(record.reason) <= REASON_CHARS else record.reason[:REASON_CHARS] + "..."
    lines = [f"<b>{html.escape(record.batch)}</b>: {kind_of(record)}",
             f"champion before: {m.format(record.champion_accuracy_before, 1)}"]
    if record.challenger_accuracy is not None:
        lines.append(f"challenger v{record.model_version}: {m.format(record.challenger_accuracy, 1)}"
                     + (" (promoted)" if record.promoted else ""))
    if record.estimate:
        lines.append(f"estimated when served: {m.format(record.estimate['value'], 1)}")
    wrapped = [reason[i:i + 90] for i in range(0, len(reason), 90)]
    return "<br>".join(lines + [html.escape(w) for w in wrapped])


def figure(records: list[CycleRecord], metric: Metric):
    """The page's main figure: metric, drift and training cost per batch, sharing the batch axis."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    x = list(range(1, len(records) + 1))
    names = [r.batch for r in records]
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        row_heights=[0.55, 0.25, 0.2],
                        subplot_titles=(f"{metric.name}: champion in service and challengers",
                                        "drift share (validation shifts included)", "training CPU seconds"))
    scale = 100 if metric.kind == "share" else 1

    def value(v: float | None) -> float | None:
        return None if v is None or math.isnan(v) else round(v * scale, 4)

    fig.add_trace(go.Scatter(x=x, y=[value(r.champion_accuracy_before) for r in records],
                             mode="lines+markers", name="champion on the batch", line={"color": "black"},
                             customdata=names,
                             hovertemplate="%{customdata}: %{y:.2f}<extra>champion</extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=[value(r.challenger_accuracy) for r in records], mode="markers",
                             name="challenger (holdout)", marker={"color": "#1f77b4", "size": 7},
                             customdata=names,
                             hovertemplate="%{customdata}: %{y:.2f}<extra>challenger</extra>"), row=1, col=1)
    _decisions(fig, records, metric, value)
    _service_bands(fig, service_bands(records))
    moved = [f"{r.batch}: {', '.join(r.drifted_columns + r.shifted_columns) or 'no column'}" for r in records]
    fig.add_trace(go.Bar(x=x, y=[None if r.drift_share is None else round(r.drift_share, 4) for r in records],
                         name="drift share", marker_color="#9467bd",
                         hovertext=moved, hoverinfo="text+y"), row=2, col=1)
    fig.add_trace(go.Bar(x=x, y=[round(r.train_cpu_seconds or 0, 3) for r in records], name="training CPU s",
                         marker_color=[DECISION_STYLE.get(kind_of(r), ("#999", ""))[0] for r in records],
                         hovertext=[f"{r.batch}: {kind_of(r)}" for r in records], hoverinfo="text+y"),
                  row=3, col=1)
    fig.update_xaxes(title_text="batch (in processing order)", row=3, col=1)
    fig.update_yaxes(range=[0, 1.02], row=2, col=1)  # a share: an all-zero drift keeps its scale
    if len(records) <= 40:
        fig.update_xaxes(dtick=1)  # whole batches only
    fig.update_layout(height=850, template="plotly_white", hovermode="closest",
                      legend={"orientation": "h", "y": -0.08}, margin={"t": 40, "l": 60, "r": 20})
    return fig


def _decisions(fig, records: list[CycleRecord], metric: Metric, value) -> None:
    """One marker trace per kind of decision, on the champion's metric line, its reason on hover."""
    import plotly.graph_objects as go

    low = [value(r.champion_accuracy_before) for r in records if r.champion_accuracy_before is not None]
    base = min(low) if low else 0
    for kind, (colour, symbol) in DECISION_STYLE.items():
        shown = [(i, r) for i, r in enumerate(records, start=1) if kind_of(r) == kind]
        if shown:
            fig.add_trace(go.Scatter(
                x=[i for i, _ in shown], y=[_at(r, value, base) for _, r in shown],
                mode="markers", name=kind, marker={"color": colour, "symbol": symbol, "size": 13,
                                                   "line": {"width": 1, "color": colour}},
                hovertext=[_hover(r, metric) for _, r in shown], hoverinfo="text"), row=1, col=1)


def _at(record: CycleRecord, value, base: float) -> float:
    """Where a decision's marker sits: the champion's metric on the batch; without one (the first
    model, an unreadable batch), the challenger's, else the lowest value shown."""
    for v in (record.champion_accuracy_before, record.challenger_accuracy):
        if value(v) is not None:
            return value(v)
    return base


def _service_bands(fig, bands: list[tuple[int, int, int]]) -> None:
    """The versions in service as bands behind the metric, set in one layout update (plotly's add_vrect
    re-validates the layout at each call: 17 s for 100 bands)."""
    fig.update_layout(
        shapes=[{"type": "rect", "xref": "x", "yref": "y domain", "x0": start - 0.5, "x1": end + 0.5,
                 "y0": 0, "y1": 1, "fillcolor": "#1f77b4" if version % 2 else "#2ca02c", "opacity": 0.07,
                 "line_width": 0, "layer": "below"} for start, end, version in bands],
        annotations=[*fig.layout.annotations, *(
            {"xref": "x", "yref": "y domain", "x": start - 0.5, "y": 1, "text": f"v{version}",
             "showarrow": False, "xanchor": "left", "yanchor": "top", "font": {"size": 10}}
            for start, _, version in bands)])


def service_bands(records: list[CycleRecord]) -> list[tuple[int, int, int]]:
    """(first, last, version): the batches (1-based) each champion version served in a row."""
    bands: list[tuple[int, int, int]] = []
    after = None  # the version in service after the batch before (an unreadable batch's line lacks it)
    for i, record in enumerate(records, start=1):
        version, after = record.champion_version_before or after, record.champion_version_after or after
        if version is None:
            continue
        if bands and bands[-1][2] == version and bands[-1][1] == i - 1:
            bands[-1] = (bands[-1][0], i, version)
        else:
            bands.append((i, i, version))
    return bands


def matrix_figure(matrix: AccuracyMatrix, metric: Metric):
    """The forgetting matrix: each model in service (rows) on the kept holdout windows (columns)."""
    import plotly.graph_objects as go

    values = matrix.array() * (100 if metric.kind == "share" else 1)
    fig = go.Figure(go.Heatmap(z=values, x=[w.batch for w in matrix.windows], y=[
        f"{s.batch} (v{s.version})" if s.version else s.batch for s in matrix.steps],
        colorscale="Viridis", colorbar={"title": metric.name},
        hovertemplate="model after %{y}<br>on window %{x}: %{z:.2f}<extra></extra>"))
    fig.update_layout(title="Accuracy matrix: the model in service after each batch, on every kept window",
                      height=max(300, 24 * len(matrix.steps) + 160), template="plotly_white",
                      yaxis={"autorange": "reversed"})
    return fig


def page(model: str, records: list[CycleRecord], matrix: AccuracyMatrix) -> str:
    """The whole page, plotly.js inlined once (`PLOTLY_JS`)."""
    metric = metric_named_or_accuracy(records[-1].metric if records else "accuracy")
    told = summary(records, metric)
    decisions = ", ".join(f"{kind} {n}" for kind, n in sorted(told.decisions.items(), key=lambda kv: -kv[1]))
    rejected = [r for r in records if r.decision is Action.REJECT]
    parts = [f"<h1>{html.escape(model)}</h1>", "<p>",
             f"<b>{told.batches}</b> batches: {html.escape(decisions) or 'none yet'}.<br>",
             f"Champion now: <b>v{told.champion}</b> (in service after "
             f"{html.escape(told.champion_since or '-')})." if told.champion else "No champion yet.", "<br>",
             f"The champion's {metric.name} on the latest batch: <b>{metric.format(told.now, 1)}</b>; at "
             f"its best {metric.format(told.best, 1)} (batch {html.escape(told.best_batch or '-')}).", "</p>"]
    if rejected:
        parts.append("<p>Rejected: " + ", ".join(
            f"<span title=\"{html.escape(r.reason[:REASON_CHARS])}\">{html.escape(r.batch)}</span>"
            for r in rejected) + "</p>")
    parts.append("<script>" + PLOTLY_JS.read_text(encoding="utf-8") + "</script>")
    parts.append(figure(records, metric).to_html(full_html=False, include_plotlyjs=False))
    if matrix.steps:
        parts.append(matrix_figure(matrix, metric).to_html(full_html=False, include_plotlyjs=False))
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>" + html.escape(model)
            + " - Perennial</title><style>body{font-family:sans-serif;margin:24px;max-width:1400px}</style>"
            "</head><body>" + "".join(parts) + "</body></html>")


def write_page(path: Path, model: str, records: list[CycleRecord], matrix: AccuracyMatrix) -> Path:
    """Write the page whole (a reader never sees half of it)."""
    data = page(model, records, matrix).encode()
    place_atomically(path, lambda out: out.write(data))
    return path
