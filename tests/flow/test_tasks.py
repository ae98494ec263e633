"""Issue 21 end to end: a regression stream judged by MAE, a binary stream judged by average precision,
and a model of the user's that cannot fine-tune: decisions, reasons, ledger, MLflow and status speak
the metric by name."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest

from conftest import make_batch


def priced(seed: int, *, rows: int = 800, slope: float = 3.0, shift: float = 0.0) -> pd.DataFrame:
    """Rows of `make_batch` whose target is a price: `slope` per unit of `x one`, 2 per unit of `x-two`,
    a premium for members, noise. A new `slope` is a concept change."""
    frame = make_batch(rows, seed=seed, shift=shift)
    rng = np.random.default_rng(seed + 100)
    price = 50 + slope * frame["x one"] + 2 * frame["x-two"] + 5 * frame["is member"] + rng.normal(0, 1, rows)
    return frame.assign(label=price.round(2))


def test_a_regression_stream_is_judged_by_mae_from_its_first_model_to_a_concept_change(workspace):
    ws = workspace
    ws.configure(model__family="hgb", model__params={"max_iter": 60})
    for i in (1, 2):
        ws.add(f"b{i}.csv", priced(seed=i))
    ws.add("b3.csv", priced(seed=3, slope=-3.0))  # the price now falls with `x one`
    first, stable, changed = ws.run()

    assert ws.store.schema().task == "regression" and ws.store.schema().classes == ()
    assert [r.metric for r in (first, stable, changed)] == ["mae"] * 3
    assert first.decision == "retrain" and first.promoted
    assert first.challenger_accuracy < 3.0  # MAE of a price with noise sd 1 and a range of ~80
    assert stable.decision == "noop", stable.reason
    assert stable.reason.startswith("stable: ") and ", mae " in stable.reason
    assert changed.decision == "retrain", changed.reason
    assert changed.reason.startswith("concept change: mae ")
    assert changed.champion_accuracy_before > 5 * first.challenger_accuracy  # the error rose, a drop
    assert changed.promoted and changed.promotion.startswith("challenger mae ")
    assert " <= champion v1 " in changed.promotion

    client = mlflow.MlflowClient(ws.settings.tracking_uri())
    run = client.get_run(changed.run_id).data.metrics
    assert run["champion_mae_before"] == changed.champion_accuracy_before
    assert run["mae_drop"] > 0.15 and "challenger_mae" in run and "avg_mae" in run
    version = client.get_model_version(ws.name, str(changed.model_version))
    assert version.tags["perennial.metric"] == "mae"
    holdout = float(version.tags["perennial.holdout_accuracy"])
    assert holdout == pytest.approx(changed.challenger_accuracy, rel=1e-5)


def test_a_rare_positive_class_is_judged_by_average_precision(workspace):
    """3% positives: a model that never says "fraud" has 97% accuracy; average precision sees it."""
    ws = workspace
    ws.configure(model__family="lgbm", model__params={"n_estimators": 40},
                 policy__metric="average_precision", policy__positive_class="fraud")

    def transactions(seed: int, rule: float) -> pd.DataFrame:
        frame = make_batch(3000, seed=seed)
        fraud = (frame["x one"] > rule) & (frame["x-two"] > 9.0)
        return frame.assign(label=np.where(fraud, "fraud", "legit"))

    ws.add("t1.csv", transactions(1, rule=7.0))
    ws.add("t2.csv", transactions(2, rule=7.0))
    ws.add("t3.csv", transactions(3, rule=2.0))  # fraud moves: many more rows of a new pattern
    first, stable, changed = ws.run()
    assert 0.02 < (transactions(1, 7.0)["label"] == "fraud").mean() < 0.05
    assert first.metric == "average_precision" and first.promoted
    assert first.challenger_accuracy > 0.8
    assert stable.decision == "noop" and ", average_precision " in stable.reason
    assert changed.decision in ("fine_tune", "retrain"), changed.reason
    assert "average_precision " in changed.reason and "drop " in changed.reason


def test_a_model_that_cannot_fine_tune_retrains_and_says_why(workspace, tmp_path):
    """A random forest has no partial_fit and no booster: the fine-tune the policy would make becomes a
    retrain on the window, with the reason."""
    ws = workspace
    (ws.root / "forest.py").write_text(
        "from sklearn.compose import ColumnTransformer\n"
        "from sklearn.ensemble import RandomForestClassifier\n"
        "from sklearn.pipeline import Pipeline\n"
        "from sklearn.preprocessing import OrdinalEncoder\n\n\n"
        "def build(schema, seed):\n"
        "    encode = ColumnTransformer([('cat', OrdinalEncoder(handle_unknown='use_encoded_value',\n"
        "                                unknown_value=-1), schema.columns('categorical'))],\n"
        "                               remainder='passthrough')\n"
        "    return Pipeline([('encode', encode), ('forest', RandomForestClassifier(\n"
        "        n_estimators=30, random_state=seed, n_jobs=1))])\n")
    # Trees of scikit-learn's forests are a type skops does not trust by default: declared here.
    ws.configure(model__estimator="forest:build", model__trusted_types=["sklearn.tree._tree.Tree"],
                 policy__drop_moderate=0.3, policy__drop_severe=0.5)
    ws.add("b1.csv", make_batch(seed=1).fillna({"noise": 0.0}))
    ws.add("b2.csv", make_batch(seed=2, theta=8.0).fillna({"noise": 0.0}))  # the boundary moves a little
    first, moved = ws.run()
    assert first.promoted
    assert moved.decision == "retrain", moved.reason
    assert moved.reason.endswith(f"champion v{first.model_version} (RandomForestClassifier) cannot fine-tune "
                                 "(no partial_fit, no booster to continue from): retraining instead")
    assert [c["kind"] for c in moved.candidates] in (["retrain_window"], [])


def test_a_model_skops_cannot_save_stops_the_run_in_one_line_before_anything_is_registered(workspace):
    """A transformer of the user's that keeps a pandas Series: skops cannot save it, so no version could
    ever load; the run says so, and the batch waits (it is not the batch's fault)."""
    from perennial.core.config import ConfigError

    ws = workspace
    (ws.root / "series_model.py").write_text(
        "from sklearn.base import BaseEstimator, TransformerMixin\n"
        "from sklearn.linear_model import SGDClassifier\n"
        "from sklearn.pipeline import Pipeline\n\n\n"
        "class Centre(TransformerMixin, BaseEstimator):\n"
        "    def fit(self, X, y=None):\n"
        "        self.means_ = X[['x one', 'x-two']].mean()  # a pandas Series\n"
        "        return self\n\n"
        "    def transform(self, X):\n"
        "        return (X[['x one', 'x-two']] - self.means_).to_numpy()\n\n\n"
        "def build(schema, seed):\n"
        "    return Pipeline([('centre', Centre()), ('model', SGDClassifier(random_state=seed))])\n")
    ws.configure(model__estimator="series_model:build")
    ws.add("b1.csv", make_batch(seed=1))
    with pytest.raises(ConfigError) as refused:
        ws.run()
    message = str(refused.value)
    assert message.startswith(f"{ws.config_path}: key 'model.estimator': the trained model cannot be saved "
                              "with skops (TypeError: ")
    assert message.endswith("keep learnt attributes in numpy arrays and scikit-learn objects, not pandas "
                            "objects (nothing was registered)")
    assert ws.versions() == [] and ws.store.processed() == set()


def test_a_batchs_subflow_sends_no_heartbeat_its_parent_does(workspace):
    """Issue 22: every flow run's end waited up to a second for its heartbeat thread; a batch's
    `training-cycle` subflow lives in its parent run's process, whose heartbeat covers it."""
    import time
    from datetime import UTC, datetime, timedelta

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

    started = datetime.now(UTC) - timedelta(seconds=1)
    workspace.add("b1.csv", make_batch(seed=1))
    workspace.add("b2.csv", make_batch(seed=2))
    assert len(workspace.run()) == 2
    wanted = EventFilter(event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
                         occurred=EventOccurredFilter(since=started))
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 30
        while True:
            flows = [r["prefect.resource.name"] for e in client.read_events(filter=wanted, limit=50).events
                     for r in e.related if r["prefect.resource.role"] == "flow"]
            if "continuous-training" in flows or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert "continuous-training" in flows  # the parent run still beats (a crashed run is found)
    assert "training-cycle" not in flows
