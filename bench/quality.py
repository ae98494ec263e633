"""Part A: adaptation quality and training cost, Perennial against the strategies users would pick.

Every strategy sees the same batches in the same order and is scored test-then-train: the model in
service predicts a batch before anyone learns from it. Perennial runs through the real
`continuous_training` flow (validation, Evidently drift, policy, MLflow registry); the model it had
in service for a batch is reloaded from the registry to get its predictions.

Every scenario is judged by its own metric (`Scenario.metric`, Perennial's `policy.metric`): accuracy
unless it says otherwise, average precision or MAE for the newer ones. Forgetting is measured on a
matrix R[i, j]: the metric's utility (`Metric.utility`: the value for a share, minus its log for an
error) on batch j's holdout rows (which no strategy trains on) of the model in service after batch i,
for j <= i.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench.common import Section, Target, embedded_settings, fmt, markdown_table
from bench.scenarios import WINDOW_BATCHES, Scenario, all_scenarios
from bench.strategies import Step, baselines, batch_file, holdout, holdout_utilities
from perennial.core.config import PipelineConfig
from perennial.core.evaluation import outputs
from perennial.core.lifelong import backward_transfer, forgetting
from perennial.core.metrics import METRICS, Metric
from perennial.core.schema import infer_schema, infer_task, metric_for, target_values
from perennial.core.types import Schema, Trigger

PERENNIAL = "perennial"
GROWTH = "growth"
ACTIONS = ("retrain", "fine_tune", "noop", "reuse", GROWTH)
PERIOD = 4


def scenario_config(scenario: Scenario) -> PipelineConfig:
    """The config Perennial runs the scenario with (its YAML file holds the same)."""
    return PipelineConfig(name=f"bench-{scenario.name}", **scenario.config())


def schema_and_metric(scenario: Scenario, config: PipelineConfig | None = None) -> tuple[Schema, Metric]:
    """The schema Perennial freezes from the first batch (its task inferred or configured) and the metric
    the scenario's models are judged by, bound to the target as Perennial binds it."""
    config = config or scenario_config(scenario)
    first = scenario.batches[0]
    schema = infer_schema(first, config.data.target, config.data.features, infer_task(first, config))
    return schema, metric_for(config, schema)


@dataclass
class Result:
    """One strategy on one scenario, in the scenario's metric."""

    strategy: str
    values: list[float | None]  # the metric per batch; None where no model was in service yet
    kappa: float | None  # over every scored row, for a metric of labels; else None
    train_cpu: float
    actions: dict[str, int]
    delays: list[int | None] = field(default_factory=list)  # per drift; None = not detected
    false_alarms: int | None = None
    # The holdout matrix (utilities) and its metrics (utility units: fractions of a share); None for
    # learners without one.
    matrix: np.ndarray | None = None
    bwt: float | None = None
    forgetting: float | None = None
    # Forgetting over the windows of the last batch's ground-truth concept only.
    concept_forgetting: float | None = None
    # The same after every batch (over its concept's earlier windows), averaged: it also sees the
    # batches right after a concept returns, not only the end of the stream.
    mean_concept_forgetting: float | None = None
    metric: Metric = field(default_factory=lambda: METRICS["accuracy"])

    @property
    def mean(self) -> float:
        """The metric's mean over batches 2..n (test-then-train)."""
        scored = [a for a in self.values[1:] if a is not None and not math.isnan(a)]
        return float(np.mean(scored)) if scored else float("nan")

    @property
    def utility(self) -> float:
        """The mean on the scale where higher is better (`Metric.utility`)."""
        return self.metric.utility(self.mean)


def run_perennial(scenario: Scenario, root: Path) -> tuple[list[Step], list[Any]]:
    """Feed the batches one by one to the continuous-training flow; return what the models in service did."""
    from perennial.adapters.mlflow_registry import client, load_model
    from perennial.core.state import StateStore
    from perennial.pipeline.flows.continuous_training import continuous_training

    workdir = root / scenario.name
    inbox = workdir / "batches"
    inbox.mkdir(parents=True)
    config_path = workdir / "perennial.yaml"
    config_path.write_text(yaml.safe_dump({"name": f"bench-{scenario.name}", **scenario.config()}))
    config = scenario_config(scenario)
    schema, metric = schema_and_metric(scenario, config)
    holdouts = [holdout(i, frame, config) for i, frame in enumerate(scenario.batches)]
    settings = embedded_settings(workdir / "state")
    for i, frame in enumerate(scenario.batches):
        frame.to_parquet(inbox / batch_file(i))
        continuous_training(str(config_path), settings=settings)
    records = StateStore(settings.state_dir, f"bench-{scenario.name}").records()
    client(settings)
    models: dict[int, Any] = {}

    def model(version: int) -> Any:
        if version not in models:
            # As the flow loads it: the pipeline that takes features_frame(...) output.
            models[version] = load_model(f"bench-{scenario.name}", version, config.model.trusted_types)
        return models[version]

    steps = []
    for i, (frame, record) in enumerate(zip(scenario.batches, records, strict=True)):
        in_service = records[i - 1].champion_version_after if i else None
        out = None
        if in_service is not None:
            out = outputs(model(in_service), frame, schema, metric)
            # The reloaded model must be the one the flow scored this batch with, in the same metric.
            assert record.metric == metric.name, (scenario.name, i, record.metric)
            measured = metric.value(target_values(frame, schema).to_numpy(), out)
            recorded = record.champion_accuracy_before
            assert _same(measured, recorded), (scenario.name, i, measured, recorded)
        after = record.champion_version_after
        row = (
            [float("nan")] * (i + 1)
            if after is None
            else holdout_utilities(model(after), holdouts[: i + 1], schema, metric)
        )
        # A data-growth retrain is not a drift alarm: counted apart, never a detection.
        action = GROWTH if record.trigger == Trigger.DATA_GROWTH else record.decision
        steps.append(Step(out, action, record.train_cpu_seconds or 0.0, row))
    return steps, records


def _same(measured: float, recorded: float | None) -> bool:
    if recorded is None or math.isnan(recorded):
        return math.isnan(measured)
    return abs(measured - recorded) < 1e-9


def score(name: str, scenario: Scenario, steps: list[Step], detects: bool, metric: Metric | None = None
          ) -> Result:
    """The metric per batch (the scenario's, unless `metric` is given), kappa over every scored row (a
    metric of labels only), cost, and detections against the known drifts."""
    from sklearn.metrics import cohen_kappa_score

    if metric is None:
        _, metric = schema_and_metric(scenario)
    task = "regression" if metric.task == "regression" else "classification"
    target = Schema({}, scenario.target, (), task)  # what reading the truth needs of a schema
    truth = [target_values(b, target).to_numpy() for b in scenario.batches]
    values = [
        None if s.outputs is None else metric.value(t, s.outputs)
        for s, t in zip(steps, truth, strict=True)
    ]
    scored = [i for i, s in enumerate(steps) if i > 0 and s.outputs is not None]
    kappa = None
    if metric.output == "label" and scored:
        kappa = float(
            cohen_kappa_score(
                np.concatenate([truth[i] for i in scored]), np.concatenate([steps[i].outputs for i in scored])
            )
        )
    actions: dict[str, int] = {}
    for step in steps[1:]:  # the first batch trains every model; it is not a decision
        actions[step.action] = actions.get(step.action, 0) + 1
    result = Result(name, values, kappa, sum(s.train_cpu for s in steps), actions, metric=metric)
    result.matrix = holdout_matrix(steps)
    if result.matrix is not None:
        result.bwt, result.forgetting = backward_transfer(result.matrix), forgetting(result.matrix)
        scope = same_concept(scenario)
        if len(scope) > 1:  # else no earlier window of the last concept to forget
            result.concept_forgetting = forgetting(result.matrix, scope)
        result.mean_concept_forgetting = mean_concept_forgetting(result.matrix, scenario.concepts)
    if detects:
        # Reinstating a former champion is an answer to a detected drift too.
        detections = [
            i for i, s in enumerate(steps) if i > 0 and s.action in ("retrain", "fine_tune", "reuse")
        ]
        # A detection up to two batches after a drift ends is that drift's; any other is a false alarm.
        spans = [(start, end + 2) for start, end in scenario.drifts]
        result.delays = [
            next((d - start for d in detections if start <= d <= end), None) for start, end in spans
        ]
        result.false_alarms = sum(not any(s <= d <= e for s, e in spans) for d in detections)
    return result


def holdout_matrix(steps: list[Step]) -> np.ndarray | None:
    """R[i, j] from each step's holdout utilities, NaN above the diagonal; None if a step has none."""
    rows = [s.holdout_utility for s in steps]
    if any(row is None for row in rows):
        return None
    matrix = np.full((len(rows), len(rows)), np.nan)
    for i, row in enumerate(rows):
        matrix[i, : len(row)] = row
    return matrix


def mean_concept_forgetting(matrix: np.ndarray, concepts: list[int] | None) -> float | None:
    """Forgetting of the model in service after each batch k on the earlier batches of k's concept,
    averaged over the batches that have such earlier batches."""
    values = []
    for k, concept in enumerate(concepts or []):
        scope = [j for j in range(k + 1) if concepts[j] == concept]
        if len(scope) > 1:
            values.append(forgetting(matrix[: k + 1, : k + 1], scope))
    return float(np.mean(values)) if values else None


def same_concept(scenario: Scenario) -> list[int]:
    """The batches whose ground-truth concept is the last batch's."""
    concepts = scenario.concepts or []
    return [j for j, c in enumerate(concepts) if c == concepts[-1]]


def run_scenario(scenario: Scenario, root: Path) -> list[Result]:
    config = scenario_config(scenario)
    schema, metric = schema_and_metric(scenario, config)
    results = []
    steps, _ = run_perennial(scenario, root)
    results.append(score(PERENNIAL, scenario, steps, detects=True, metric=metric))
    for strategy in baselines(schema, config, metric, PERIOD):
        steps = [strategy.step(i, batch) for i, batch in enumerate(scenario.batches)]
        results.append(score(strategy.name, scenario, steps, detects=False, metric=metric))
    return results


# -- The metric for people: shares in percent (gaps in points), R² as it is, errors as values (gaps
# relative to the error).

def shown(metric: Metric, value: float | None, digits: int = 2) -> str:
    """A value of the metric: a share in percent (without the sign), R² with three decimals, an error
    with `digits` + 2 significant digits."""
    if value is None or math.isnan(value):
        return "-"
    if metric.kind == "share":
        return fmt(100 * value, digits)
    if metric.kind == "r2":
        return fmt(value, 3)
    return f"{value:#.{digits + 2}g}"


def shown_gap(metric: Metric, gap: float | None) -> str:
    """A difference of utilities (BWT, forgetting): points of a share, R² units, or the relative
    change of an error in percent."""
    if gap is None or math.isnan(gap):
        return "-"
    if metric.kind == "error":
        return f"{100 * math.expm1(gap):.2f}%"
    return fmt(100 * gap, 2) if metric.kind == "share" else fmt(gap, 3)


def unit(metric: Metric) -> str:
    """What a column of the metric's values is in ("%" for a share)."""
    return f"{metric.name} %" if metric.kind == "share" else metric.name


def gap_unit(metric: Metric) -> str:
    """What a column of utility differences is in."""
    return {"share": "pts", "r2": "R²", "error": "% of error"}[metric.kind]


def around_drifts(result: Result, scenario: Scenario) -> str:
    """The metric on the batch before each drift, on its first batch, and on the batch after it ends."""
    last = len(result.values) - 1
    parts = []
    for start, end in scenario.drifts:
        values = [result.values[start - 1], result.values[start], result.values[min(end + 1, last)]]
        parts.append(" → ".join(shown(result.metric, v, 0 if result.metric.kind == "share" else 1)
                                for v in values))
    return "; ".join(parts) or "-"


ALWAYS_RETRAIN = ("retrain-last-", "retrain-all")

# Perennial against the best always-retrain: a share (accuracy, average precision, ...) at most 0.3
# points below it, an error (MAE, RMSE, log loss) at most 1% above it; at most 30% of its training CPU.
GAP_POINTS, ERROR_RATIO, CPU_SHARE = 0.3, 1.01, 0.30


def quality_met(metric: Metric, ours: float, best: float) -> tuple[bool, str]:
    """Whether Perennial's mean `ours` reaches the best always-retrain's `best` within the target, and
    the gap for people: points for a share (and R², in hundredths), the relative error otherwise."""
    if metric.kind == "error":
        ratio = ours / best
        return ratio <= ERROR_RATIO, f"{ratio - 1:+.1%}"
    gap = 100 * (best - ours)
    return gap <= GAP_POINTS + 1e-9, f"gap {gap:+.2f} points"


def best_always_retrain(results: list[Result]) -> Result:
    """The always-retrain strategy with the best mean (highest utility)."""
    return max((r for r in results if r.strategy.startswith(ALWAYS_RETRAIN)), key=lambda r: r.utility)


def quality_target_name(scenario_name: str, metric: Metric) -> str:
    if metric.kind == "error":
        return (f"{scenario_name}: {metric.name} at most {ERROR_RATIO - 1:.0%} above the best "
                f"always-retrain's, at <= {CPU_SHARE:.0%} of its training CPU")
    return (f"{scenario_name}: at least the best always-retrain's {metric.name} minus {GAP_POINTS} points, "
            f"at <= {CPU_SHARE:.0%} of its training CPU")


def targets(scenario: Scenario, results: list[Result]) -> list[Target]:
    by_name = {r.strategy: r for r in results}
    ours = by_name[PERENNIAL]
    metric = ours.metric
    best = best_always_retrain(results)
    met, gap = quality_met(metric, ours.mean, best.mean)
    cpu = ours.train_cpu / best.train_cpu if best.train_cpu else float("nan")
    suffix = "%" if metric.kind == "share" else ""
    out = [
        Target(
            quality_target_name(scenario.name, metric),
            met and cpu <= CPU_SHARE,
            f"{shown(metric, ours.mean)}{suffix} vs {best.strategy} {shown(metric, best.mean)}{suffix} "
            f"({gap}; {metric.name} {'met' if met else 'missed'}), training CPU "
            f"{cpu:.0%} of it ({'met' if cpu <= CPU_SHARE else 'missed'})",
        )
    ]
    if scenario.no_drift:
        alarms = ours.actions.get("retrain", 0) + ours.actions.get("fine_tune", 0)
        out.append(
            Target(
                f"{scenario.name}: no drift-triggered retrain or fine-tune "
                "(data-growth retrains counted apart)",
                alarms == 0,
                f"{ours.actions.get('retrain', 0)} retrain(s), {ours.actions.get('fine_tune', 0)} "
                f"fine-tune(s) on an alarm; {ours.actions.get(GROWTH, 0)} data-growth retrain(s)",
            )
        )
    return out


def points(value: float | None) -> str:
    """A lifelong metric in accuracy points."""
    return fmt(None if value is None else 100 * value, 2)


def scenario_table(scenario: Scenario, results: list[Result]) -> str:
    metric = results[0].metric
    rows = []
    for r in results:
        counts = "/".join(str(r.actions.get(a, 0)) for a in ACTIONS)
        delays = "-"
        if r.delays:
            delays = ", ".join("missed" if d is None else str(d) for d in r.delays)
        rows.append(
            [
                r.strategy,
                shown(metric, r.mean),
                fmt(r.kappa, 3),
                around_drifts(r, scenario),
                fmt(r.train_cpu, 2),
                counts if r.actions.get("online") is None else "online",
                delays,
                "-" if r.false_alarms is None else r.false_alarms,
                shown_gap(metric, r.bwt),
                shown_gap(metric, r.forgetting),
                shown_gap(metric, r.concept_forgetting),
            ]
        )
    units = gap_unit(metric)
    return markdown_table(
        [
            "strategy",
            f"mean {unit(metric)}",
            "kappa",
            f"{unit(metric)} before → at → after drift",
            "train CPU s",
            "retrain/fine-tune/noop/reuse/growth",
            "detection delay (batches)",
            "false alarms",
            f"BWT ({units})",
            f"forgetting ({units})",
            f"forgetting, same concept ({units})",
        ],
        rows,
    )


RECURRING = "recurring"
# The synthetic scenarios the stretch target against river's ARF counts (those of issue 4).
ARF_SCENARIOS = ("sea-abrupt", "agrawal-gradual", "hyperplane-incremental", RECURRING, "no-drift")
REPLAY, NAIVE = "fine-tune-replay", "fine-tune-every"
# The recurring scenario's comparison: naive fine-tuning, replay, and the retrains that cannot forget.
COMPARED = (PERENNIAL, NAIVE, REPLAY, f"retrain-last-{WINDOW_BATCHES}", "retrain-all")


def forgetting_table(results: list[Result]) -> str:
    """The metric, cost and forgetting of the strategies that learn incrementally or retrain."""
    by_name = {r.strategy: r for r in results}
    metric = results[0].metric
    rows = [
        [
            f"{name} (naive)" if name == NAIVE else name,
            shown(metric, by_name[name].mean),
            fmt(by_name[name].train_cpu, 2),
            shown_gap(metric, by_name[name].bwt),
            shown_gap(metric, by_name[name].forgetting),
            shown_gap(metric, by_name[name].concept_forgetting),
            shown_gap(metric, by_name[name].mean_concept_forgetting),
            by_name[name].actions.get("reuse", 0) if name == PERENNIAL else "-",
        ]
        for name in COMPARED
    ]
    units = gap_unit(metric)
    return markdown_table(
        [
            "strategy",
            f"mean {unit(metric)}",
            "train CPU s",
            f"BWT ({units})",
            f"forgetting ({units})",
            f"forgetting, same concept ({units})",
            f"same concept, mean over batches ({units})",
            "reuses",
        ],
        rows,
    )


def replay_target(results: dict[str, list[Result]]) -> Target:
    """When a concept returns Perennial reuses its former champion, and what was learnt of the concept
    in service is kept: forgetting on its earlier windows, Perennial's and replay's."""
    name = (f"{RECURRING}: a former champion reused; forgetting <= 1 point on same-concept windows "
            "(Perennial and fine-tuning with replay)")
    if RECURRING not in results:
        return Target(name, None, f"{RECURRING} scenario not run")
    by_name = {r.strategy: r for r in results[RECURRING]}
    forgets = [by_name[n].concept_forgetting for n in (PERENNIAL, REPLAY)]
    reuses = by_name[PERENNIAL].actions.get("reuse", 0)
    detail = ", ".join(f"{n} {points(by_name[n].concept_forgetting)}" for n in (PERENNIAL, REPLAY, NAIVE))
    mean = ", ".join(f"{n} {points(by_name[n].mean_concept_forgetting)}" for n in (PERENNIAL, REPLAY, NAIVE))
    met = None if None in forgets else reuses > 0 and all(100 * f <= 1 for f in forgets)
    return Target(name, met, f"{reuses} reuse(s); {detail} points at the end; mean over batches {mean}")


def plot(scenarios: list[Scenario], results: dict[str, list[Result]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    cols = 2
    fig, axes = plt.subplots(
        (len(scenarios) + 1) // cols, cols, figsize=(13, 3.3 * ((len(scenarios) + 1) // cols)), squeeze=False
    )
    for ax, scenario in zip(axes.flat, scenarios, strict=False):
        metric = results[scenario.name][0].metric
        scale = 100 if metric.kind == "share" else 1
        for r in results[scenario.name]:
            if r.strategy in ("no-change",):
                continue
            x = [i for i, a in enumerate(r.values) if a is not None and i > 0]
            ax.plot(
                x,
                [scale * r.values[i] for i in x],
                label=r.strategy,
                linewidth=2.5 if r.strategy == PERENNIAL else 1,
                color="black" if r.strategy == PERENNIAL else None,
            )
        for start, end in scenario.drifts:
            ax.axvspan(start - 0.5, end + 0.5, color="orange", alpha=0.15)
        ax.set_title(scenario.name)
        ax.set_xlabel("batch")
        ax.set_ylabel(unit(metric) + ("" if metric.greater_is_better else " (lower is better)"))
    axes.flat[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    paths.append(out / "quality_accuracy.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)

    # Scenarios judged by a share only (accuracy, average precision): one axis of percentages.
    fig, ax = plt.subplots(figsize=(7, 4.5))
    shares = [s for s in scenarios if results[s.name][0].metric.kind == "share"]
    for scenario in shares:
        for r in results[scenario.name]:
            if r.strategy == PERENNIAL or r.strategy.startswith(ALWAYS_RETRAIN):
                marker = "o" if r.strategy == PERENNIAL else ("s" if r.strategy == "retrain-all" else "^")
                ax.scatter(max(r.train_cpu, 1e-2), 100 * r.mean, marker=marker)
                ax.annotate(
                    f"{scenario.name}\n{r.strategy}",
                    (max(r.train_cpu, 1e-2), 100 * r.mean),
                    fontsize=5,
                )
    ax.set_xscale("log")
    ax.set_xlabel("training CPU seconds (log)")
    names = sorted({results[s.name][0].metric.name for s in shares})
    ax.set_ylabel(f"mean prequential {' or '.join(names) or 'score'} %")
    ax.set_title("Perennial (o) against always-retrain (^ last window, s all data)")
    fig.tight_layout()
    paths.append(out / "quality_cost.png")
    fig.savefig(paths[-1], dpi=90)
    plt.close(fig)
    return paths


def run(quick: bool, out: Path, only: list[str] | None = None) -> Section:
    from threadpoolctl import threadpool_limits

    rows, batches = (300, 4) if quick else (2000, 16)
    scenarios = all_scenarios(rows, batches)
    unknown = sorted(set(only or []) - {s.name for s in scenarios})
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; expected some of "
                         f"{', '.join(s.name for s in scenarios)}")
    if quick or only:
        scenarios = [s for s in scenarios if s.name in (only or ["sea-abrupt"])]
    results: dict[str, list[Result]] = {}
    # One thread for every estimator: CPU seconds then compare like with like, and OpenMP's
    # spinning threads cannot inflate them when the machine is busy.
    with threadpool_limits(1), tempfile.TemporaryDirectory(prefix="perennial-bench-") as tmp:
        for scenario in scenarios:
            results[scenario.name] = run_scenario(scenario, Path(tmp))

    all_targets: list[Target] = []
    body = [
        f"{len(scenarios)} scenarios, {rows} rows per synthetic batch, {batches} batches; each scenario's "
        "model (model family `hgb` unless its section names another, or the user's own) for Perennial "
        "and every scikit-learn baseline, which learn from the same rows Perennial "
        "trains on (each batch less its 25% holdout; an earlier batch's holdout rows too once they "
        "serve no forgetting window, as in Perennial's retrains); river's learners (classifiers or "
        "regressors, as the task) learn from every row. "
        "Every estimator runs on one thread. Each scenario is judged by its metric (accuracy unless "
        "its section says otherwise; Perennial's `policy.metric`), the mean over batches 2..n of the "
        "model in service (test-then-train); kappa over the same rows (metrics of labels only). "
        "Shares are in percent, their gaps in points; errors (MAE) as values, their gaps relative. "
        "River learners predict then learn "
        "row by row (`predict_proba_one` for average precision); their CPU includes predicting. "
        "Decision counts exclude the first batch; Perennial's "
        "data-growth retrains are counted apart (growth), never as detections or false alarms. "
        "BWT and forgetting (Lopez-Paz & Ranzato 2017, Chaudhry et al. 2018) are measured on the "
        "matrix of the models in service after each batch on every earlier batch's holdout "
        "rows, in points of a share (relative error for an error metric); the same-concept forgetting "
        "only over the batches of the last "
        "batch's ground-truth concept. `fine-tune-replay` fine-tunes like `fine-tune-every` with "
        "Perennial's replay mix, from one memory of the whole stream (blind to concepts).\n"
    ]
    for scenario in scenarios:
        metric = results[scenario.name][0].metric
        model = (f"the user's own model `{scenario.estimator}`" if scenario.estimator
                 else f"model family `{scenario.family}`")
        body.append(
            f"### {scenario.name}\n{scenario.description}; drifts at batch(es) "
            f"{', '.join(f'{s}' if s == e else f'{s}-{e}' for s, e in scenario.drifts) or 'none'}. "
            f"Metric: {metric.name} ({metric.direction}); {model}.\n"
        )
        body.append(scenario_table(scenario, results[scenario.name]) + "\n")
        if scenario.name == RECURRING:
            body.append(
                "Forgetting when a concept returns: naive fine-tuning, fine-tuning with replay, Perennial "
                "(per-concept replay, reinstating a former champion), and full retrains.\n"
            )
            body.append(forgetting_table(results[scenario.name]) + "\n")
        all_targets += targets(scenario, results[scenario.name])
    all_targets.append(replay_target(results))
    synthetic = [s for s in scenarios if s.name in ARF_SCENARIOS]
    ahead = [s.name for s in synthetic if _ahead(results[s.name], PERENNIAL, "river-ARF")]
    others = [s.name for s in scenarios if s.name not in ARF_SCENARIOS
              and _ahead(results[s.name], PERENNIAL, "river-ARF")]
    all_targets.append(
        Target(
            f"ahead of river's ARF on at least 3 of the {len(ARF_SCENARIOS)} original synthetic scenarios "
            "(stretch)",
            len(ahead) >= 3 if len(synthetic) == len(ARF_SCENARIOS) else None,
            f"ahead on {len(ahead)} of {len(synthetic)}: {', '.join(ahead) or 'none'}"
            + (f"; also ahead on {', '.join(others)}" if others else ""),
        )
    )
    headline = [
        [
            s.name,
            unit(results[s.name][0].metric),
            _shown(results[s.name], PERENNIAL),
            shown(results[s.name][0].metric, best_always_retrain(results[s.name]).mean, 1),
            _cpu_share(results[s.name]),
            _shown(results[s.name], "river-ARF"),
            _shown(results[s.name], "static"),
        ]
        for s in scenarios
    ]
    return Section(
        "A. Adaptation quality and cost",
        "\n".join(body),
        all_targets,
        plot(scenarios, results, out),
        data={
            "headline": markdown_table(
                [
                    "scenario",
                    "metric",
                    "Perennial",
                    "best always-retrain",
                    "Perennial training CPU vs it",
                    "river ARF",
                    "static",
                ],
                headline,
            )
        },
    )


def _result(results: list[Result], name: str) -> Result:
    return next(r for r in results if r.strategy == name)


def _shown(results: list[Result], name: str) -> str:
    r = _result(results, name)
    return shown(r.metric, r.mean, 1)


def _ahead(results: list[Result], name: str, other: str) -> bool:
    """`name`'s mean is better than `other`'s in the scenario's metric."""
    return _result(results, name).utility > _result(results, other).utility


def _cpu_share(results: list[Result]) -> str:
    ours = _result(results, PERENNIAL)
    best = best_always_retrain(results)
    return f"{ours.train_cpu / best.train_cpu:.0%}" if best.train_cpu else "-"
