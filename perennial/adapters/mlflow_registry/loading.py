"""Loading registered versions as our own types (skops only, trusted types only), and listing them."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from perennial.adapters.mlflow_registry.connection import (
    CHAMPION,
    REFERENCE_ARTIFACT,
    REPLAY_ARTIFACT,
    TAG_PREFIX,
    Tag,
    aliases_of,
    client,
    outages,
    registered_model,
    versions_of,
)
from perennial.adapters.mlflow_registry.history import moves_of
from perennial.adapters.prefect_logs import run_logger
from perennial.core import trusted
from perennial.core.config import PipelineConfig, Settings
from perennial.core.history import rolled_back_from, settled
from perennial.core.lifelong import ReplayMemory
from perennial.core.types import Champion, RegistryError


def champion_version(name: str, settings: Settings) -> Any | None:
    """The registry's champion version, or None when there is none yet; an outage raises."""
    from mlflow.exceptions import MlflowException

    try:
        with outages(settings):
            return client(settings).get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        # No model yet, or (the SQL store's way of saying it) no such alias yet.
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def load_champion(config: PipelineConfig, settings: Settings) -> Champion | None:
    """The champion model with its holdout accuracy and reference data."""
    version = champion_version(config.name, settings)
    return None if version is None else _loaded(config, version)


def load_version(config: PipelineConfig, settings: Settings, version: int | None) -> Champion | None:
    """A registered version as the champion a cycle decided against (None: there was none)."""
    if version is None:
        return None
    return _loaded(config, client(settings).get_model_version(config.name, str(version)))


def _loaded(config: PipelineConfig, version: Any, with_reference: bool = True) -> Champion:
    """A registered version as our own type: model, holdout accuracy, reference rows, concept;
    without `with_reference` the reference is left empty (not downloaded)."""
    import mlflow

    model = load_model(config.name, version.version, config.model.trusted_types)
    reference = pd.DataFrame()
    if with_reference:
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(
                run_id=version.run_id, artifact_path=REFERENCE_ARTIFACT, dst_path=tmp)
            reference = pd.read_parquet(path)
    return Champion(version=int(version.version), model=model, reference=reference,
                    holdout_accuracy=float(version.tags[Tag.HOLDOUT_ACCURACY]),
                    holdout_rows=int(version.tags.get(Tag.HOLDOUT_ROWS, 0)) or None,
                    concept=int(version.tags.get(Tag.CONCEPT, 1)),
                    metric=version.tags.get(Tag.METRIC, "accuracy"),
                    learned_rows=int(version.tags.get(Tag.LEARNED_ROWS, 0)) or None)


def load_model(name: str, version: str | int, declared: Sequence[str] = ()) -> Any:
    """A registered version's pipeline, if it is a skops model of our own types (else RegistryError);
    never through MLflow's loader, which trusts what the version's MLmodel file says."""
    import mlflow

    where = f"model {name} v{version}"
    # Where the version's files are (a logged model's folder in MLflow 3), resolved once for both.
    uri = mlflow.MlflowClient().get_model_version_download_uri(name, str(version)).rstrip("/")
    with tempfile.TemporaryDirectory() as tmp:
        mlmodel = mlflow.artifacts.download_artifacts(f"{uri}/MLmodel", dst_path=tmp)
        trusted.check_flavor(Path(mlmodel), where)
        path = mlflow.artifacts.download_artifacts(f"{uri}/{trusted.MODEL_FILE}", dst_path=tmp)
        return trusted.load_skops(Path(path), where, declared)


def former_champions(config: PipelineConfig, settings: Settings, current: int | None,
                     limit: int) -> list[Champion]:
    """Versions that were champion once (newest first, at most `limit`), the current one and those a
    user rolled back from (`Tag.ROLLED_BACK`, or the settled alias history) excluded; for scoring, so
    without their reference data (the next cycle loads it if one is reinstated)."""
    # The name may sit in a filter: PipelineConfig.name's pattern allows no quote.
    found = client(settings).search_model_versions(
        f"name = '{config.name}' AND tags.`perennial.promoted` = 'true'")
    model = registered_model(client(settings), config.name)
    # The settled history too: a rollback killed after its move, before its tag, still excludes.
    history = moves_of(dict(model.tags)) if model is not None else []
    rolled_back = rolled_back_from(settled(history, current))
    former = sorted((v for v in found if int(v.version) != current and Tag.ROLLED_BACK not in v.tags
                     and int(v.version) not in rolled_back), key=lambda v: -int(v.version))
    loaded = []
    for v in former[:limit]:
        try:
            loaded.append(_loaded(config, v, with_reference=False))
        except RegistryError as exc:
            run_logger().warning(f"former champion skipped: {exc}")
    return loaded


def replay_memory(config: PipelineConfig, settings: Settings, version: int,
                  quantiles: int = 0) -> ReplayMemory:
    """The replay memory logged with a version (empty for a version that has none)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    run_id = client(settings).get_model_version(config.name, str(version)).run_id
    capacity, target = config.lifelong.replay_rows, config.data.target
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=REPLAY_ARTIFACT,
                                                       dst_path=tmp)
        except MlflowException:
            return ReplayMemory.empty(capacity, target, quantiles)
        return ReplayMemory.load(Path(path), capacity, target, quantiles)


def registered_versions(name: str, settings: Settings) -> list[dict[str, Any]]:
    """Every version of the model with its aliases and Perennial tags, newest first; none when the
    model is not registered yet. An outage raises: it is no empty registry."""
    mlflow_client = client(settings)
    with outages(settings):
        aliases = aliases_of(mlflow_client, name)
    by_version: dict[str, list[str]] = {}
    for alias, v in aliases.items():
        by_version.setdefault(str(v), []).append(alias)
    with outages(settings):
        versions = versions_of(mlflow_client, name)
    return [
        {"version": int(v.version), "aliases": sorted(by_version.get(str(v.version), [])),
         "run_id": v.run_id, **{k.removeprefix(TAG_PREFIX): val for k, val in v.tags.items()
                                if k.startswith(TAG_PREFIX)}}
        for v in sorted(versions, key=lambda v: -int(v.version))
    ]
