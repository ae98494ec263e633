"""Registered versions Perennial did not save are never loaded: no code from the registry runs."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pandas as pd
import pytest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from conftest import Workspace, make_batch, new_workspace
from perennial.adapters.mlflow_registry import Tag
from perennial.app.cli import main
from perennial.core import families
from perennial.core.config import load_config
from perennial.core.schema import features_frame, infer_schema, labels
from perennial.core.types import RegistryError

REFUSAL = "Perennial loads only the skops models it saved (refusing to run code from the registry)"


class Payload:
    """What an attacker logs as a model: unpickling it writes `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def _client(ws: Workspace):
    import mlflow

    mlflow.set_tracking_uri(ws.settings.tracking_uri())
    return mlflow.MlflowClient()


def register_elsewhere(ws: Workspace, model, tags: dict[str, str], **log_model) -> str:
    """A version of the workspace's model logged by another registry client, from its own run."""
    import mlflow

    client = _client(ws)
    experiment = client.create_experiment(f"elsewhere-{len(client.search_experiments())}",
                                          artifact_location=(ws.root / "elsewhere").as_uri())
    run = client.create_run(experiment)
    with mlflow.start_run(run_id=run.info.run_id):
        info = mlflow.sklearn.log_model(model, name="model", pip_requirements=[], **log_model)
    if not client.search_registered_models(f"name = '{ws.name}'"):
        client.create_registered_model(ws.name)
    return client.create_model_version(ws.name, info.model_uri, run_id=run.info.run_id,
                                       model_id=info.model_id, tags=tags).version


# Tags that make a version look like one of Perennial's to code that reads only tags.
LOOKS_OURS = {Tag.HOLDOUT_ACCURACY: "0.990000", Tag.HOLDOUT_ROWS: "350",
              Tag.CONCEPT: "1"}


def _runs(ws: Workspace) -> int:
    client = _client(ws)
    return len(client.search_runs([e.experiment_id for e in client.search_experiments()]))


def test_a_pickle_champion_set_by_another_client_fails_the_cycle_before_anything_is_written(
        workspace: Workspace, tmp_path, capfd):
    ws, marker = workspace, tmp_path / "payload-ran"
    ws.add("a.csv", make_batch(seed=21))
    ws.run()
    version = register_elsewhere(ws, Payload(marker), LOOKS_OURS, serialization_format="pickle")
    _client(ws).set_registered_model_alias(ws.name, "champion", version)
    runs = _runs(ws)
    ws.add("b.csv", make_batch(seed=22))

    refusal = f"model {ws.name} v{version}: saved as pickle; {REFUSAL}"
    with pytest.raises(RegistryError, match=re.escape(refusal)):
        ws.run()
    assert not marker.exists()
    assert [r.batch for r in ws.store.records()] == ["a.csv"]
    assert ws.champion() == int(version)
    assert _runs(ws) == runs
    # From the command line: the refusal in one line, no traceback, nothing written.
    capfd.readouterr()
    assert main(["run", "--config", str(ws.config_path)]) == 2
    err = capfd.readouterr().err
    assert err.strip().splitlines()[-1] == f"perennial: error: {refusal}" and "Traceback" not in err
    assert not marker.exists() and [r.batch for r in ws.store.records()] == ["a.csv"] and _runs(ws) == runs


def test_a_pickle_version_tagged_as_former_champion_is_skipped_and_the_cycle_goes_on(
        workspace: Workspace, tmp_path, caplog):
    ws, marker = workspace, tmp_path / "payload-ran"
    ws.add("a.csv", make_batch(seed=21))
    ws.run()
    version = register_elsewhere(ws, Payload(marker), {**LOOKS_OURS, Tag.PROMOTED: "true"},
                                 serialization_format="pickle")
    # The champion is now mostly wrong: former champions are scored for reuse before training.
    ws.add("b.csv", make_batch(seed=22, flip=True))

    with caplog.at_level(logging.WARNING):
        [record] = ws.run()
    assert not marker.exists()
    assert record.decision == "retrain" and record.promoted, record.reason
    assert ws.champion() == record.model_version != int(version)
    assert f"former champion skipped: model {ws.name} v{version}: saved as pickle; {REFUSAL}" in caplog.text


def test_a_skops_model_with_a_type_outside_ours_is_refused_naming_it(tmp_path, monkeypatch):
    from perennial.adapters.mlflow_registry import load_champion

    ws = new_workspace(tmp_path, monkeypatch)
    frame = make_batch(seed=1)
    schema = infer_schema(frame, "label", None)
    # It lists os.system as trusted in its own MLmodel file; MLflow's loader would believe it.
    model = Pipeline([("call", FunctionTransformer(os.system)),
                      ("model", families.family("sgd").build(schema, seed=0))])
    untrusted = f"{os.system.__module__}.{os.system.__name__}"
    version = register_elsewhere(ws, model, LOOKS_OURS, serialization_format="skops",
                                 skops_trusted_types=[untrusted])
    _client(ws).set_registered_model_alias(ws.name, "champion", version)

    with pytest.raises(RegistryError) as refused:
        load_champion(load_config(ws.config_path), ws.settings)
    assert str(refused.value) == (f"model {ws.name} v{version}: holds types Perennial does not trust "
                                  f"({untrusted}); {REFUSAL} (a model of your own: declare its types in "
                                  "model.trusted_types)")


def test_a_version_logged_before_models_took_raw_columns_still_loads(tmp_path, monkeypatch):
    import mlflow

    from perennial.adapters.mlflow_registry import load_champion

    ws = new_workspace(tmp_path, monkeypatch)
    frame = make_batch(seed=1)
    schema = infer_schema(frame, "label", None)
    X = features_frame(frame, schema)
    model = families.family("sgd").build(schema, seed=0).fit(X, labels(frame, "label"))
    # As Perennial logged it then: the bare pipeline, trusting only the family's own types.
    version = register_elsewhere(ws, model, LOOKS_OURS, skops_trusted_types=["numpy.dtype"])
    client = _client(ws)
    client.set_registered_model_alias(ws.name, "champion", version)
    run_id = client.get_model_version(ws.name, version).run_id
    reference = tmp_path / "reference.parquet"
    frame.to_parquet(reference)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_artifact(str(reference), "reference")

    champion = load_champion(load_config(ws.config_path), ws.settings)
    assert champion.version == int(version)
    assert list(champion.model.predict(X)) == list(model.predict(X))
    pd.testing.assert_frame_equal(champion.reference, frame)


@pytest.mark.parametrize(("sklearn_flavor", "wrong"), [
    ({"serialization_format": "cloudpickle", "pickled_model": "model.pkl"}, "saved as cloudpickle"),
    # MLflow loads a flavor that does not say as pickle.
    ({"pickled_model": "model.pkl"}, "saved as pickle"),
    # Claims skops, points at another file: MLflow would hand that file to skops, we do not.
    ({"serialization_format": "skops", "pickled_model": "model.pkl"},
     "model file 'model.pkl' instead of 'model.skops'"),
    (None, "not a scikit-learn model"),
])
def test_an_mlmodel_file_not_as_perennial_writes_it_is_refused_saying_what_is_wrong(tmp_path, sklearn_flavor,
                                                                                     wrong):
    import yaml

    from perennial.core.trusted import check_flavor

    flavors = {"python_function": {"loader_module": "mlflow.sklearn"}}
    if sklearn_flavor is not None:
        flavors["sklearn"] = {**sklearn_flavor, "skops_trusted_types": ["builtins.exec"]}
    mlmodel = tmp_path / "MLmodel"
    mlmodel.write_text(yaml.safe_dump({"flavors": flavors}))
    with pytest.raises(RegistryError) as refused:
        check_flavor(mlmodel, "model m v4")
    assert str(refused.value) == f"model m v4: {wrong}; {REFUSAL}"


def test_a_pickle_named_model_skops_is_refused_without_running(tmp_path):
    import pickle

    from perennial.core.trusted import load_skops

    marker, path = tmp_path / "payload-ran", tmp_path / "model.skops"
    path.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(RegistryError) as refused:
        load_skops(path, "model m v4")
    assert str(refused.value) == f"model m v4: model.skops is not a skops file; {REFUSAL}"
    assert not marker.exists()


def test_a_version_registered_before_the_layers_still_loads(tmp_path):
    """Its skops file names the input conversion `perennial.inputs.ModelInputs`, as models logged
    before perennial/core existed do."""
    import skops.io as sio

    from perennial.core.inputs import ModelInputs, with_inputs
    from perennial.core.trusted import load_skops

    frame = make_batch(200, seed=1)
    schema = infer_schema(frame, "label", None)
    X = features_frame(frame, schema)
    fitted = families.family("sgd").build(schema, seed=0).fit(X, labels(frame, "label"))
    served = with_inputs(fitted, schema.features)
    legacy = type("ModelInputs", (ModelInputs,), {"__module__": "perennial.inputs"})
    served.steps[0][1].__class__ = legacy
    path = tmp_path / "model.skops"
    sio.dump(served, path)
    assert "perennial.inputs.ModelInputs" in sio.get_untrusted_types(file=path)
    model = load_skops(path, "model m v1")
    assert (model.predict(X) == fitted.predict(X)).all()
