"""A user's own Pipeline (a custom transformer, a function of theirs, LightGBM) through `perennial run`:
refused until its types are trusted, then registered, promoted, and served where their project is not."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from test_serving import _env, _free_port, _stop, _wait_healthy

from conftest import make_batch, new_workspace

NAME = "own-model"

# The user's project: a module-level function in a FunctionTransformer, their own transformer class,
# and LightGBM; `build(schema, seed)` is the factory `model.estimator` names.
USER_MODULE = '''
import numpy as np
import pandas as pd
from lightgbm import LGBMClassifier
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder


def add_total(X: pd.DataFrame) -> pd.DataFrame:
    """A feature of ours: the sum of the two measurements."""
    return X.assign(total=X["x one"] + X["x-two"])


class ClipOutliers(TransformerMixin, BaseEstimator):
    """Numbers clipped to the 1st-99th percentiles seen in training."""

    def __init__(self, columns=None):
        self.columns = columns

    def fit(self, X, y=None):
        # numpy, not pandas: skops saves numpy arrays and scikit-learn objects
        self.low_ = X[self.columns].quantile(0.01).to_numpy()
        self.high_ = X[self.columns].quantile(0.99).to_numpy()
        return self

    def transform(self, X):
        return X.assign(**{c: X[c].clip(lo, hi) for c, lo, hi in zip(self.columns, self.low_, self.high_)})


def build(schema, seed):
    numbers = schema.columns("numeric") + schema.columns("boolean")
    categories = schema.columns("categorical")
    encode = ColumnTransformer(
        [("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan,
                                encoded_missing_value=np.nan), categories)],
        remainder="passthrough", verbose_feature_names_out=False)
    return Pipeline([
        ("total", FunctionTransformer(add_total)),
        ("clip", ClipOutliers(numbers)),
        ("encode", encode),
        ("model", LGBMClassifier(n_estimators=40, learning_rate=0.2, random_state=seed, n_jobs=1,
                                 verbose=-1)),
    ])
'''

TYPES = ["churn_model.features.ClipOutliers", "churn_model.features.add_total"]


@pytest.fixture(scope="module")
def own(tmp_path_factory, prefect_server):
    """A workspace whose config names the user's factory; their package beside the config file."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        ws = new_workspace(tmp_path_factory.mktemp("own"), mp, name=NAME,
                           model={"estimator": "churn_model.features:build"})
        package = ws.root / "churn_model"
        package.mkdir()
        (package / "__init__.py").write_text("")
        (package / "features.py").write_text(textwrap.dedent(USER_MODULE))
        yield ws


def test_a_model_holding_types_not_declared_is_refused_before_anything_is_registered(own):
    from perennial.core.config import ConfigError

    ws = own
    ws.add("b01.csv", make_batch(seed=1))
    with pytest.raises(ConfigError) as refused:
        ws.run()
    message = str(refused.value)
    assert "\n" not in message
    assert message.endswith(f"key 'model.trusted_types': the trained model holds types loading it would not "
                            f"trust: {', '.join(TYPES)}; if they are your model's own, add them to "
                            "model.trusted_types (nothing was registered)")
    assert ws.versions() == []


def test_the_users_pipeline_is_registered_promoted_and_learns_three_batches(own):
    ws = own
    ws.configure(model__trusted_types=TYPES)
    ws.add("b02.csv", make_batch(seed=2))
    ws.add("b03.csv", make_batch(seed=3, shift=1.0))
    records = ws.run()
    assert [r.batch for r in records] == ["b01.csv", "b02.csv", "b03.csv"]  # b01 resumed, not lost
    assert records[0].promoted and ws.champion() == records[0].model_version
    assert all(r.decision != "reject" for r in records), [r.reason for r in records]
    [first] = [v for v in ws.versions() if v["version"] == records[0].model_version]
    assert float(first["holdout_accuracy"]) > 0.9


def test_mlflow_models_serve_answers_raw_rows_without_the_users_project_on_sys_path(own, tmp_path):
    """The server runs in a folder of its own with no PYTHONPATH: `churn_model` comes from the version's
    code_paths, not from the user's project."""
    from perennial.adapters.mlflow_registry import load_champion
    from perennial.core.config import load_config
    from perennial.core.schema import features_frame

    ws = own
    rows = make_batch(seed=9).drop(columns=["label"])
    served_from = tmp_path / "elsewhere"
    served_from.mkdir()
    find = "import importlib.util as u; print(u.find_spec('churn_model'))"
    probe = subprocess.run([sys.executable, "-c", find],
                           cwd=served_from, env=_env(ws), capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "None"  # the user's project is not importable there
    port, log = _free_port(), tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "models", "serve",
             "-m", f"models:/{NAME}@champion", "--env-manager", "local", "--host", "127.0.0.1",
             "-p", str(port)],
            cwd=served_from, env=_env(ws), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_healthy(url, server, log)
        split = json.loads(rows.to_json(orient="split"))
        body = json.dumps({"dataframe_split": {"columns": split["columns"], "data": split["data"]}})
        request = urllib.request.Request(f"{url}/invocations", data=body.encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            predictions = json.load(answer)["predictions"]
    finally:
        _stop(server)
    champion = load_champion(load_config(ws.config_path), ws.settings)
    expected = [str(p) for p in champion.model.predict(features_frame(rows, ws.store.schema()))]
    assert [str(p) for p in predictions] == expected
    assert set(expected) == {"low", "high"}
    assert pd.Series(expected).eq(pd.Series(["low"] * len(expected))).mean() < 0.9
