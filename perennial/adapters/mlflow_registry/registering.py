"""Logging a challenger with its lineage, reference rows, replay memory and model (its types checked
first), and registering it as a version once per batch."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from perennial.adapters.mlflow_registry.connection import REPLAY_ARTIFACT, Tag, client, outages, versions_of
from perennial.core import families, trusted
from perennial.core.config import ConfigError, PipelineConfig, Settings
from perennial.core.state import batch_key
from perennial.core.text import shorten
from perennial.core.types import Batch, Challenger, Champion, Decision, Schema, judged_by


def existing_version(name: str, batch_id: str, settings: Settings) -> Any | None:
    """A version already registered for this batch (by a run that crashed before its ledger line)."""
    mlflow_client = client(settings)
    with outages(settings):
        found = mlflow_client.search_model_versions(
            f"name = '{name}' AND tags.`perennial.batch_key` = '{batch_key(batch_id)}'")
        if not found:
            # Versions registered before the batch_key tag existed: their readable tag, compared here.
            found = [v for v in versions_of(mlflow_client, name)
                     if Tag.BATCH_KEY not in v.tags and v.tags.get(Tag.BATCH) == batch_id]
    return max(found, key=lambda v: int(v.version)) if found else None


def register(config: PipelineConfig, settings: Settings, run_id: str, challenger: Challenger, batch: Batch,
             schema: Schema, decision: Decision, parent: Champion | None) -> int:
    """Log the challenger in its cycle run and register it, with lineage, a sample of its training
    rows as the drift reference, and its replay memory (the rows of its concept it remembers, this
    batch's included); once per batch."""
    from mlflow.exceptions import MlflowException

    existing = existing_version(config.name, batch.id, settings)
    if existing is not None:
        return int(existing.version)
    info = _log_challenger(config, run_id, challenger, batch, schema, decision, parent)
    mlflow_client = client(settings)
    try:
        mlflow_client.create_registered_model(config.name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    evaluation = challenger.evaluation
    tags = {
        Tag.BATCH: batch.id,
        Tag.BATCH_KEY: batch_key(batch.id),
        Tag.DECISION: decision.action.value,
        Tag.CANDIDATE: challenger.kind.value,
        Tag.REASON: decision.reason[:4000],
        Tag.TRAINED_ON: ",".join(challenger.trained_on)[:4000],
        Tag.PARENT_VERSION: str(parent.version) if parent else "",
        Tag.HOLDOUT_ACCURACY: f"{evaluation.challenger_accuracy:.6g}",
        Tag.METRIC: judged_by(evaluation.metric).name,
        Tag.HOLDOUT_ROWS: str(evaluation.holdout_rows),
        Tag.CONCEPT: str(challenger.concept),
        Tag.LEARNED_ROWS: str(challenger.learned_rows),
        Tag.REPLAY_ROWS: str(len(challenger.memory)),
        Tag.REPLAY_MEMORY: f"runs:/{run_id}/{REPLAY_ARTIFACT}",
    }
    version = mlflow_client.create_model_version(
        config.name, source=info.model_uri, run_id=run_id, model_id=info.model_id, tags=tags)
    return int(version.version)


def _log_challenger(config: PipelineConfig, run_id: str, challenger: Challenger, batch: Batch, schema: Schema,
                    decision: Decision, parent: Champion | None) -> Any:
    """The challenger's metrics, lineage, drift reference, replay memory and model in its cycle run."""
    import mlflow

    model, evaluation, memory = challenger.model, challenger.evaluation, challenger.memory
    reference = challenger.rows.sample(config.drift.reference_rows, seed=0)
    # Logged taking the user's columns as a batch file has them (served with `mlflow models serve`).
    from perennial.core.inputs import with_inputs

    served, raw = with_inputs(model, schema.features), batch.frame[list(schema.features)]
    holds = check_trusted(config, served)  # exactly the types its file holds, all trusted
    example = raw.head(5)
    with mlflow.start_run(run_id=run_id):
        name = judged_by(evaluation.metric).name
        mlflow.log_metrics({f"challenger_{name}": evaluation.challenger_accuracy,
                            "holdout_rows": evaluation.holdout_rows,
                            "reference_rows": len(reference), "replay_rows": len(memory),
                            "challenger_forgetting": evaluation.forgetting})
        if evaluation.champion_accuracy is not None:
            mlflow.log_metric(f"champion_{name}", evaluation.champion_accuracy)
        mlflow.log_params({f"model.{k}": v for k, v in config.model.params.items()})
        mlflow.log_dict({"trained_on": challenger.trained_on, "candidate": challenger.kind.value,
                         "parent_version": parent.version if parent else None,
                         "decision": decision.action.value, "reason": decision.reason,
                         "schema": schema.to_dict()}, "lineage.json")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "reference.parquet"
            reference.to_parquet(path, index=False)
            mlflow.log_artifact(str(path), "reference")
            path = Path(tmp) / "memory.parquet"
            memory.frame.to_parquet(path, index=False)
            mlflow.log_artifact(str(path), "replay")
        user_code = families.factory_code_path(config.model, config.base_dir)
        with tempfile.TemporaryDirectory() as code:
            return mlflow.sklearn.log_model(
                served, name="model", signature=_signature(raw, served.predict(example)),
                input_example=example, pip_requirements=_requirements(holds),
                skops_trusted_types=holds,
                # The user's own module travels with the version: it loads where their project is not.
                code_paths=[_inputs_code(Path(code)), *([str(user_code)] if user_code else [])])


def _signature(raw: pd.DataFrame, predictions: Any) -> Any:
    """Raw feature columns as MLflow types (inferred on a sample: on 1M rows it takes 9 s), optional
    where the batch has nulls."""
    import warnings

    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, DataType
    from mlflow.types.schema import Schema as ColumnSchema

    with warnings.catch_warnings():  # its hint on integer columns, which may have nulls one day
        warnings.simplefilter("ignore", UserWarning)
        inferred = infer_signature(raw.sample(min(len(raw), 1000), random_state=0), predictions)
    columns = []
    for spec in inferred.inputs.inputs:
        nulls = bool(raw[spec.name].isna().any())
        # MLflow's scoring server casts a request to the declared types first: a boolean column's
        # nulls would become False (astype(bool)); declared `any`, they stay missing (mlflow#25593).
        kind = AnyType() if nulls and spec.type == DataType.boolean else spec.type
        columns.append(ColSpec(kind, spec.name, required=not nulls))
    return ModelSignature(ColumnSchema(columns), inferred.outputs)


def _inputs_code(folder: Path) -> str:
    """A `perennial` package holding only perennial.core.inputs, for `code_paths`: a served model imports
    its conversion from there (MLflow puts the folder first on sys.path) with no Perennial installed."""
    from perennial.core import inputs

    package = folder / "perennial"
    (package / "core").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "core" / "__init__.py").write_text("")
    shutil.copyfile(inputs.__file__, package / "core" / "inputs.py")
    return str(package)


def _requirements(types: Sequence[str] = ()) -> list[str]:
    """Pinned serving requirements (with LightGBM or XGBoost when the model holds their types); listing
    them skips MLflow's slow inference of them."""
    from importlib.metadata import PackageNotFoundError, version

    pinned = [f"scikit-learn=={version('scikit-learn')}", f"skops=={version('skops')}",
              f"pandas=={version('pandas')}", f"numpy=={version('numpy')}"]
    for package, dists in (("lightgbm", ("lightgbm",)), ("xgboost", ("xgboost", "xgboost-cpu"))):
        if any(t.startswith(f"{package}.") for t in types):
            for dist in dists:
                try:
                    pinned.append(f"{dist}=={version(dist)}")
                    break
                except PackageNotFoundError:
                    continue
    return pinned


def check_trusted(config: PipelineConfig, served: Any) -> list[str]:
    """The types the model's file holds (as logged, `served`), if loading it trusts every one:
    Perennial's own and `model.trusted_types`; else a ConfigError listing the types to declare.
    Checked before anything of the model is written."""
    where = f"{config.config_file}: " if config.config_file else ""
    try:
        untrusted, holds = trusted.untrusted_in(served, config.model.trusted_types)
    except Exception as exc:  # skops raises what the object it cannot save raises
        raise ConfigError(f"{where}key 'model.estimator': the trained model cannot be saved with skops "
                          f"({type(exc).__name__}: {shorten(str(exc), 200)}); keep learnt attributes in "
                          "numpy arrays and scikit-learn objects, not pandas objects (nothing was "
                          "registered)") from None
    if untrusted:
        raise ConfigError(f"{where}key 'model.trusted_types': the trained model holds types loading it would "
                          f"not trust: {', '.join(untrusted)}; if they are your model's own, add them to "
                          "model.trusted_types (nothing was registered)")
    return holds
