"""MLflow adapter: cycle runs, model versions with lineage, and the champion / challenger aliases."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from perennial.adapters.prefect_logs import run_logger
from perennial.core import failpoints, families, trusted
from perennial.core.config import ConfigError, PipelineConfig, Settings, without_credentials
from perennial.core.history import previous_champion, rolled_back_from, settled
from perennial.core.lifelong import AccuracyMatrix, ReplayMemory
from perennial.core.state import batch_key
from perennial.core.text import shorten
from perennial.core.types import (
    ROLLBACK,
    Action,
    AliasMove,
    Batch,
    Challenger,
    Champion,
    Decision,
    DriftResult,
    OutageError,
    Promotion,
    RegistryError,
    RollbackError,
    RollbackOutcome,
    Schema,
    ValidationResult,
    judged_by,
)

CHAMPION, CHALLENGER = "champion", "challenger"
REFERENCE_ARTIFACT = "reference/reference.parquet"
REPLAY_ARTIFACT = "replay/memory.parquet"
TAG_PREFIX = "perennial."
# The `champion` alias history: one tag of the registered model per move, `<prefix><seq, 6 digits>`,
# holding the move as compact JSON (`AliasMove.to_json`). Kept with the model, so every worker and
# host that uses the registry reads the same history.
HISTORY_TAG = "perennial.champion_history."
HISTORY_REASON_CHARS = 2000  # an entry stays far below any server's limit on a tag's value


class Tag(StrEnum):
    """The MLflow tags Perennial sets on runs and model versions (tests and benchmarks read them too)."""

    ATTEMPT = "perennial.attempt"
    BATCH = "perennial.batch"
    BATCH_KEY = "perennial.batch_key"
    CANDIDATE = "perennial.candidate"
    CONCEPT = "perennial.concept"
    DECISION = "perennial.decision"
    HOLDOUT_ACCURACY = "perennial.holdout_accuracy"
    HOLDOUT_ROWS = "perennial.holdout_rows"
    LEARNED_ROWS = "perennial.learned_rows"
    # The metric of `holdout_accuracy` (absent: accuracy, on versions registered before metrics).
    METRIC = "perennial.metric"
    PARENT_VERSION = "perennial.parent_version"
    PROMOTED = "perennial.promoted"
    PROMOTION = "perennial.promotion"
    REASON = "perennial.reason"
    RELEASE_REASON = "perennial.release_reason"
    REPLAY_MEMORY = "perennial.replay_memory"
    REPLAY_ROWS = "perennial.replay_rows"
    # On the version `perennial rollback` took `champion` from: no cycle reinstates it automatically.
    ROLLED_BACK = "perennial.rolled_back"
    SHIFTED_COLUMNS = "perennial.shifted_columns"
    TRAINED_ON = "perennial.trained_on"
    TRIGGER = "perennial.trigger"


# Values this process put in MLflow's environment variables, to tell them from the user's own.
_HTTP_ENV_SET: dict[str, str] = {}


def client(settings: Settings):
    """An MLflow client on the configured store; also points the fluent API there and bounds its
    HTTP retries and timeouts (unless the user set MLflow's variables for them)."""
    import mlflow

    for key, value in settings.mlflow_http_env().items():
        # MLflow reads these on every request, so they also cover fluent calls and model loading.
        if key not in os.environ or os.environ[key] == _HTTP_ENV_SET.get(key):
            os.environ[key] = _HTTP_ENV_SET[key] = value
    mlflow.set_tracking_uri(settings.tracking_uri())
    return mlflow.MlflowClient(settings.tracking_uri())


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """An exception and everything behind it: causes, contexts, and what urllib3 keeps in `reason`
    and in the arguments of the errors it wraps."""
    seen, todo = set(), [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        nested = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        todo.extend(e for e in nested if isinstance(e, BaseException))


def outage(exc: Exception, settings: Settings) -> OutageError | None:
    """`exc` as an OutageError naming the tracking URI when it is one (unreachable, or credentials
    refused), else None: other errors (a missing model, a bad request) are not outages."""
    import requests
    from mlflow.exceptions import MlflowException

    uri = without_credentials(settings.tracking_uri())
    status = exc.get_http_status_code() if isinstance(exc, MlflowException) else None
    if status in (401, 403):
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        if not user:
            who = "no credentials were sent" if status == 401 else "anonymous access is not allowed"
        elif not os.environ.get("MLFLOW_TRACKING_PASSWORD"):
            who = f"user '{user}' without MLFLOW_TRACKING_PASSWORD"
        else:
            who = f"user '{user}' not accepted" if status == 401 else f"user '{user}' lacks permission"
        todo = "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to a user of that server"
        if status == 403:
            todo += " with access to this model, or grant this user access"
        return OutageError(f"MLflow at {uri}: credentials refused (HTTP {status}, {who}); {todo}")
    # What client() set, or the user's own values of MLflow's variables.
    retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(settings.mlflow_retries))
    timeout = os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", str(settings.mlflow_timeout_seconds))
    chain = list(_chain(exc))
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "Connection refused" in str(exc):
        why = "connection refused"
    elif any(isinstance(e, requests.exceptions.Timeout | TimeoutError) for e in chain):
        why = f"no answer within {timeout} s"
    elif any("NameResolution" in type(e).__name__ for e in chain):
        why = "host name not found"
    elif any(isinstance(e, requests.exceptions.RetryError) for e in chain):
        code = re.search(r"too many (\d{3}) error responses", str(exc))
        return OutageError(f"MLflow at {uri} is unavailable (it kept answering HTTP "
                           f"{code.group(1) if code else '5xx'}, after {retries} retries)")
    elif any(isinstance(e, requests.exceptions.ConnectionError) for e in chain):
        why = "connection failed"
    else:
        return None
    return OutageError(f"MLflow at {uri} is unreachable ({why}, after {retries} retries)")


@contextmanager
def outages(settings: Settings) -> Iterator[None]:
    """MLflow errors that are outages raised as OutageError; others as they are."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        error = outage(exc, settings)
        if error is None:
            raise
        raise error from exc


NOTHING_WRITTEN = "nothing was written — the batches will be processed on the next run"


def check_reachable(settings: Settings, then: str | None = NOTHING_WRITTEN) -> None:
    """One cheap call to an MLflow server before anything is written; raises OutageError (ending in
    `then`) when it cannot be used. A local store (SQLite, files) is not checked."""
    from mlflow.exceptions import MlflowException

    uri = settings.tracking_uri()
    if urlsplit(uri).scheme not in ("http", "https"):
        return
    suffix = f"; {then}" if then else ""
    # The error says how many retries failed: a warning line per retry would only be noise.
    pool_log = logging.getLogger("urllib3.connectionpool")
    level = pool_log.level
    pool_log.setLevel(logging.ERROR)
    try:
        client(settings).search_experiments(max_results=1)
    except MlflowException as exc:
        error = outage(exc, settings)
        if error is None:
            # Answering, but not as an MLflow server we can use (e.g. a wrong URL answering 404).
            first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            error = OutageError(f"MLflow at {without_credentials(uri)} cannot be used ({first})")
        raise OutageError(f"{error}{suffix}") from exc
    finally:
        pool_log.setLevel(level)


def experiment_id(name: str, settings: Settings) -> str:
    """The model's experiment, created on first use beside the SQLite store when there is one."""
    mlflow_client = client(settings)
    with outages(settings):
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        return mlflow_client.create_experiment(name, artifact_location=settings.artifact_location())


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


def not_refused(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a failed load unless the version was refused or MLflow is out (its client already
    retried): a retry would end the same way."""
    try:
        state.result()
    except (RegistryError, OutageError):
        return False
    except Exception:
        pass
    return True


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
    model = _registered(client(settings), config.name)
    # The settled history too: a rollback killed after its move, before its tag, still excludes.
    rolled_back = rolled_back_from(settled(_moves(dict(model.tags)), current)) if model is not None else set()
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


def _metric_key(column: str) -> str:
    return "drift." + "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in column)


def log_cycle(config: PipelineConfig, settings: Settings, batch_id: str, rows: int,
              validation: ValidationResult, drift: DriftResult | None, decision: Decision,
              attempt: int = 0) -> str:
    """One MLflow run per batch and attempt (times the batch was released before): decision, drift
    metrics, validation result and drift report. A rerun after a crash reuses the attempt's run."""
    import mlflow

    exp = experiment_id(config.name, settings)
    key = {Tag.BATCH: batch_id, Tag.BATCH_KEY: batch_key(batch_id),
           Tag.ATTEMPT: str(int(attempt))}
    with outages(settings):
        found = client(settings).search_runs(
            [exp], filter_string=f"tags.`perennial.batch_key` = '{key['perennial.batch_key']}' AND "
            f"tags.`perennial.attempt` = '{key['perennial.attempt']}'", max_results=1)
    name = f"{batch_id} {decision.action.value}"
    # The key tags go in with the new run, so a crash at any later point still finds it.
    start = (mlflow.start_run(run_id=found[0].info.run_id, run_name=name) if found
             else mlflow.start_run(experiment_id=exp, run_name=name, tags=key))
    with start as run:
        mlflow.set_tags({**key, Tag.DECISION: decision.action.value,
                         Tag.TRIGGER: decision.trigger.value,
                         Tag.REASON: decision.reason[:4000],
                         Tag.SHIFTED_COLUMNS: ",".join(validation.shifted_columns)[:4000]})
        if validation.release_reason is not None:
            mlflow.set_tag(Tag.RELEASE_REASON, validation.release_reason[:4000])
        params = {"batch": batch_id, "decision": decision.action.value,
                  "window_batches": decision.window_batches, "family": config.model.family}
        # Params cannot change once logged; a reused run's tags carry the rerun's decision.
        mlflow.log_params({k: v for k, v in params.items() if not found or k not in found[0].data.params})
        metrics: dict[str, float] = {"rows": rows, "validation_success": float(validation.success),
                                     "validation_shifts": len(validation.shifts)}
        if drift is not None:
            metrics["drift_share"] = drift.drift_share
            metrics.update({_metric_key(f.column): f.score for f in drift.features})
            if drift.champion_accuracy is not None:  # named by the metric: champion_rmse_before, rmse_drop
                name = drift.judged_by.name
                metrics[f"champion_{name}_before"] = drift.champion_accuracy
                metrics[f"{name}_drop"] = drift.accuracy_drop or 0.0
            mlflow.log_dict({"drift_share": drift.drift_share, "features": [vars(f) for f in drift.features]},
                            "drift/drift.json")
            if drift.report_html is not None and Path(drift.report_html).exists():
                mlflow.log_artifact(str(drift.report_html), "drift")
        mlflow.log_metrics(metrics)
        mlflow.log_dict({"success": validation.success, "failures": validation.failures,
                         "shifts": validation.shifts, "shifted_columns": validation.shifted_columns,
                         "release_reason": validation.release_reason,
                         "great_expectations": validation.report}, "validation/validation.json")
        return run.info.run_id


def log_champion_score(settings: Settings, run_id: str, accuracy: float | None, reason: str,
                       metric: str = "accuracy") -> None:
    """A rejected batch's run gains the champion's metric on it and the reason that states it."""
    mlflow_client = client(settings)
    if accuracy is not None:
        mlflow_client.log_metric(run_id, f"champion_{metric}_before", accuracy)
    mlflow_client.set_tag(run_id, Tag.REASON, reason[:4000])


def _existing_version(name: str, batch_id: str, settings: Settings) -> Any | None:
    """A version already registered for this batch (by a run that crashed before its ledger line)."""
    mlflow_client = client(settings)
    with outages(settings):
        found = mlflow_client.search_model_versions(
            f"name = '{name}' AND tags.`perennial.batch_key` = '{batch_key(batch_id)}'")
        if not found:
            # Versions registered before the batch_key tag existed: their readable tag, compared here.
            found = [v for v in _versions(mlflow_client, name)
                     if Tag.BATCH_KEY not in v.tags and v.tags.get(Tag.BATCH) == batch_id]
    return max(found, key=lambda v: int(v.version)) if found else None


def _versions(mlflow_client: Any, name: str) -> list[Any]:
    """Every version of a registered model, page after page."""
    # The name may sit in a filter: PipelineConfig.name's pattern allows no quote.
    versions, token = [], None
    while True:
        page = mlflow_client.search_model_versions(f"name = '{name}'", page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            return versions


def register(config: PipelineConfig, settings: Settings, run_id: str, challenger: Challenger, batch: Batch,
             schema: Schema, decision: Decision, parent: Champion | None) -> int:
    """Log the challenger in its cycle run and register it, with lineage, a sample of its training
    rows as the drift reference, and its replay memory (the rows of its concept it remembers, this
    batch's included); once per batch."""
    from mlflow.exceptions import MlflowException

    existing = _existing_version(config.name, batch.id, settings)
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
        # Exactly the types its file holds, all trusted (`check_trusted` refused the model otherwise).
        _, holds = trusted.untrusted_in(served, config.model.trusted_types)
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


def check_trusted(config: PipelineConfig, model: Any, schema: Schema) -> None:
    """A model may be registered only if loading it trusts every type its file holds: Perennial's own
    and `model.trusted_types`; else a ConfigError listing the types to declare. Checked on the model
    as it would be logged, before anything of it is written."""
    from perennial.core.inputs import with_inputs

    where = f"{config.config_file}: " if config.config_file else ""
    try:
        untrusted, _ = trusted.untrusted_in(with_inputs(model, schema.features), config.model.trusted_types)
    except Exception as exc:  # skops raises what the object it cannot save raises
        raise ConfigError(f"{where}key 'model.estimator': the trained model cannot be saved with skops "
                          f"({type(exc).__name__}: {shorten(str(exc), 200)}); keep learnt attributes in "
                          "numpy arrays and scikit-learn objects, not pandas objects (nothing was "
                          "registered)") from None
    if untrusted:
        raise ConfigError(f"{where}key 'model.trusted_types': the trained model holds types loading it would "
                          f"not trust: {', '.join(untrusted)}; if they are your model's own, add them to "
                          "model.trusted_types (nothing was registered)")


def promote(config: PipelineConfig, settings: Settings, version: int, verdict: tuple[bool, str],
            expected: int | None) -> Promotion:
    """Record the promotion verdict on the version; move `champion` to it when promoted, else make it
    `challenger`. Check-and-set: `expected` is the champion the decision was made against. The
    history entry takes the decision and batch the version was registered with."""
    tags = client(settings).get_model_version(config.name, str(version)).tags
    return _check_and_set(config.name, settings, version, expected, *verdict, new_version=True,
                          move=(tags.get(Tag.DECISION, ""), tags.get(Tag.BATCH)))


def reinstate(config: PipelineConfig, settings: Settings, version: int, reason: str,
              expected: int | None, batch: str | None = None) -> Promotion:
    """Put a former champion back in service (`reuse`) for `batch`, check-and-set like `promote`."""
    return _check_and_set(config.name, settings, version, expected, True, reason, new_version=False,
                          move=(Action.REUSE.value, batch))


def _check_and_set(name: str, settings: Settings, version: int, expected: int | None, promoted: bool,
                   reason: str, new_version: bool, move: tuple[str, str | None]) -> Promotion:
    """Move `champion` to `version` only if it is still on `expected`: if another adaptation moved it
    meanwhile, this one does not overwrite it. Already on `version` while `expected` was another: this
    cycle moved it before a crash, so it is done. Tags first, then the history entry (`move`: the
    decision and batch it records), alias last: a crash in between leaves the alias where it was,
    and the rerun reaches the same verdict (see `_move_champion`)."""
    mlflow_client = client(settings)
    current = _alias_version(mlflow_client, name, CHAMPION)
    if current == version and expected != version:
        tags = mlflow_client.get_model_version(name, str(version)).tags
        return Promotion(version, True, tags.get(Tag.PROMOTION, reason), version)
    if current != expected:
        promoted = False
        reason = (f"not {'promoted' if new_version else 'reinstated'}: the champion moved from "
                  f"{f'v{expected}' if expected else 'none'} to v{current} while this cycle ran; it is not "
                  "overwritten")
        if not new_version:  # a former champion keeps the verdict of its own promotion
            return Promotion(version, False, reason, current or 0)
    tags = {Tag.PROMOTION: reason, **({Tag.PROMOTED: str(promoted).lower()} if new_version else {})}
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, str(version), key, value)
    if promoted:
        _move_champion(mlflow_client, name, current, version, *move, reason)
        if _alias_version(mlflow_client, name, CHALLENGER) == version:
            mlflow_client.delete_registered_model_alias(name, CHALLENGER)
    else:
        mlflow_client.set_registered_model_alias(name, CHALLENGER, str(version))
    return Promotion(version=version, promoted=promoted, reason=reason,
                     champion_version=version if promoted else (current or 0))


def _move_champion(mlflow_client: Any, name: str, current: int | None, version: int, decision: str,
                   batch: str | None, reason: str) -> None:
    """Move `champion` from `current` to `version`, recorded in the model's alias history.

    Crash-safety: the history entry is written first, the alias moved last. A crash in between
    leaves an entry for a move that did not happen: readers leave it out (`core.history.settled`:
    the alias is still on its `from` version, or the next entry starts from there too), and the rerun
    of the same move writes over it (`_record_move`). The other order could lose the record of a
    move that did happen, with nothing left to tell what it was.

    A rollback's tags claim it happened, so they come after the alias move (`_mark_rollback`): one
    killed before the move leaves only the entry readers drop; one killed after it has its settled
    entry, which is what keeps the version left out of reuse (`former_champions`), and its retry
    writes the tags. A champion never keeps `perennial.rolled_back`: one found on the version a
    promotion or reuse leaves (written before the move by earlier versions of Perennial) is removed.
    """
    _record_move(mlflow_client, name, current, version, decision, batch, reason)
    if current is not None and decision != ROLLBACK \
            and Tag.ROLLED_BACK in mlflow_client.get_model_version(name, str(current)).tags:
        mlflow_client.delete_model_version_tag(name, str(current), Tag.ROLLED_BACK)
    failpoints.reached("history-written")
    mlflow_client.set_registered_model_alias(name, CHAMPION, str(version))
    failpoints.reached("alias-moved")
    if decision == ROLLBACK and current is not None:
        _mark_rollback(mlflow_client, name, current, version, reason)
    elif Tag.ROLLED_BACK in mlflow_client.get_model_version(name, str(version)).tags:
        mlflow_client.delete_model_version_tag(name, str(version), Tag.ROLLED_BACK)


def _mark_rollback(mlflow_client: Any, name: str, left: int, served: int, why: str) -> None:
    """Tag a rollback whose alias move happened (idempotent): the version left `perennial.rolled_back`,
    the one served says why in `perennial.promotion` and loses a rolled-back mark of its own."""
    mlflow_client.set_model_version_tag(name, str(left), Tag.ROLLED_BACK, why[:4000])
    mlflow_client.set_model_version_tag(name, str(served), Tag.PROMOTION, why)
    if Tag.ROLLED_BACK in mlflow_client.get_model_version(name, str(served)).tags:
        mlflow_client.delete_model_version_tag(name, str(served), Tag.ROLLED_BACK)


def _record_move(mlflow_client: Any, name: str, current: int | None, version: int, decision: str,
                 batch: str | None, reason: str) -> AliasMove:
    """Append a move to the model's alias history (writers hold the model's lock, so `seq` is theirs).
    The same move as the last entry (a rerun after a crash before its alias move) writes over it."""
    from datetime import UTC, datetime

    model = _registered(mlflow_client, name)
    moves = _moves(dict(model.tags) if model is not None else {})
    last = moves[-1] if moves else None
    rerun = last is not None and (last.from_version, last.to_version, last.decision, last.batch) == (
        current, version, decision, batch)
    seq = last.seq if rerun else (last.seq + 1 if last else 1)
    move = AliasMove(seq, datetime.now(UTC).isoformat(timespec="seconds"), current, version, decision, batch,
                     reason[:HISTORY_REASON_CHARS])
    mlflow_client.set_registered_model_tag(name, f"{HISTORY_TAG}{seq:06d}", move.to_json())
    return move


def _moves(tags: dict[str, str]) -> list[AliasMove]:
    """Every alias history entry among a registered model's tags, oldest first (settled or not)."""
    moves = []
    for key, value in tags.items():
        if key.startswith(HISTORY_TAG):
            try:
                moves.append(AliasMove.from_json(int(key.removeprefix(HISTORY_TAG)), value))
            except (ValueError, KeyError, TypeError) as exc:
                run_logger().warning("alias history entry %s unreadable, skipped (%s: %s)", key,
                                     type(exc).__name__, exc)
    return sorted(moves, key=lambda m: m.seq)


def champion_history(name: str, settings: Settings) -> list[AliasMove]:
    """The moves of `champion` recorded with the model, oldest first; an entry for a move a crash
    stopped before the alias moved is left out. None when the model is not registered yet; an outage
    raises."""
    mlflow_client = client(settings)
    with outages(settings):
        model = _registered(mlflow_client, name)
    if model is None:
        return []
    champion = model.aliases.get(CHAMPION)
    return settled(_moves(dict(model.tags)), int(champion) if champion is not None else None)


def rollback(name: str, settings: Settings, target: int | None, reason: str,
             allow_unpromoted: bool = False, declared: Sequence[str] = ()) -> RollbackOutcome:
    """Move `champion` back to `target`, by default the version before the current one in the history,
    past versions rolled back from; check-and-set against the champion read here. The reason goes into
    the history and the version's `perennial.promotion`; the version left is tagged
    `perennial.rolled_back`, so no cycle reinstates it automatically. A retry of the rollback last
    done (same reason, the champion on its target) moves nothing again. A version that never passed
    the promotion gate is served only with `allow_unpromoted`. RollbackError for a rollback that cannot
    be done as asked, RegistryError for a version Perennial would not load; callers hold the lock."""
    mlflow_client = client(settings)
    with outages(settings):
        model = _registered(mlflow_client, name)
    current = int(model.aliases[CHAMPION]) if model is not None and CHAMPION in model.aliases else None
    if current is None:
        raise RollbackError(f"model {name}: no champion to roll back")
    moves = settled(_moves(dict(model.tags)), current)
    if (done := _done_rollback(moves, current, target, reason)) is not None:
        with outages(settings):  # killed after its move, maybe before its tags: finish those only
            _mark_rollback(mlflow_client, name, done.from_version, current,
                           _rollback_why(done.from_version, current, reason))
            return RollbackOutcome(done, again=True, ungated=_ungated(mlflow_client, name, current, moves))
    target = _default_target(name, moves, current) if target is None else target
    if target == current:
        raise RollbackError(f"model {name}: v{target} is the champion already")
    with outages(settings):
        _check_rollback_target(mlflow_client, name, target, declared)
        if (ungated := _ungated(mlflow_client, name, target, moves)) and not allow_unpromoted:
            raise RollbackError(f"model {name} v{target}: {ungated}; roll back to it only with "
                                "--allow-unpromoted")
        if (now := _alias_version(mlflow_client, name, CHAMPION)) != current:
            raise RollbackError(f"model {name}: the champion moved from v{current} to v{now} meanwhile; "
                                "nothing changed")
        _move_champion(mlflow_client, name, current, target, ROLLBACK, None,
                       _rollback_why(current, target, reason))
    return RollbackOutcome(champion_history(name, settings)[-1], ungated=ungated)


def _rollback_why(left: int, served: int, reason: str) -> str:
    return f"rollback from v{left} to v{served}: {reason}"


def _done_rollback(moves: list[AliasMove], current: int, target: int | None, reason: str) -> AliasMove | None:
    """The latest settled move when it is this very rollback, done already: to the champion, for the
    same reason (and the same target, if one was named)."""
    last = moves[-1] if moves else None
    if last is None or last.decision != ROLLBACK or last.to_version != current \
            or target not in (None, current):
        return None
    why = _rollback_why(last.from_version, current, reason)[:HISTORY_REASON_CHARS]
    return last if last.reason == why else None


def _default_target(name: str, moves: list[AliasMove], current: int) -> int:
    """The version before the current one in the history, past versions rolled back from."""
    target = previous_champion(moves, current)
    if target is None:
        left = sorted(rolled_back_from(moves) - {current})
        other = f" other than those rolled back from ({', '.join(f'v{v}' for v in left)})" if left else ""
        raise RollbackError(f"model {name}: the champion history records no version before "
                            f"v{current}{other}; name one with --to VERSION")
    return target


def _ungated(mlflow_client: Any, name: str, version: int, moves: list[AliasMove]) -> str | None:
    """Why a version never passed the promotion gate (not tagged promoted, or never champion), or None."""
    promoted = mlflow_client.get_model_version(name, str(version)).tags.get(Tag.PROMOTED)
    if promoted != "true":
        tagged = f"tagged {Tag.PROMOTED}={promoted}" if promoted else "no promotion verdict recorded"
        return f"it never passed the promotion gate ({tagged})"
    if moves and not any(version in (m.from_version, m.to_version) for m in moves):
        return "it never passed the promotion gate (it never held champion)"
    return None


def _check_rollback_target(mlflow_client: Any, name: str, target: int, declared: Sequence[str]) -> None:
    """The version exists, Perennial registered it, and it loads as a skops model of our own types
    (and the `declared` ones)."""
    from mlflow.exceptions import MlflowException

    try:
        version = mlflow_client.get_model_version(name, str(target))
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise RollbackError(f"model {name}: there is no version {target}") from None
        raise
    if Tag.HOLDOUT_ACCURACY not in version.tags:
        raise RegistryError(f"model {name} v{target}: not a version Perennial registered (no "
                            f"{Tag.HOLDOUT_ACCURACY} tag); not rolled back to")
    load_model(name, target, declared)


def log_lifelong(settings: Settings, run_id: str, metrics: dict[str, float], matrix: AccuracyMatrix | None,
                 heatmap: Path | None, tags: dict[str, str] | None = None) -> None:
    """Cost and lifelong metrics of a cycle in its run, with `tags`; after a training, the accuracy
    matrix too."""
    import mlflow

    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({k: v for k, v in metrics.items() if v is not None})
        mlflow.set_tags(tags or {})
        if matrix is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "accuracy_matrix.csv"
                matrix.table().to_csv(path, float_format="%.4f")
                mlflow.log_artifact(str(path), "lifelong")
            if heatmap is not None:
                mlflow.log_artifact(str(heatmap), "lifelong")


def _registered(mlflow_client: Any, name: str) -> Any | None:
    """The registered model (aliases, tags); None when it is not registered yet. Any other error
    raises: an outage must not read as "no champion" (a challenger would become champion by default)."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _aliases(mlflow_client: Any, name: str) -> dict[str, str]:
    """The model's aliases; none when it is not registered yet (see `_registered`)."""
    model = _registered(mlflow_client, name)
    return dict(model.aliases) if model is not None else {}


def _alias_version(mlflow_client: Any, name: str, alias: str) -> int | None:
    aliases = _aliases(mlflow_client, name)
    return int(aliases[alias]) if alias in aliases else None


def registered_versions(name: str, settings: Settings) -> list[dict[str, Any]]:
    """Every version of the model with its aliases and Perennial tags, newest first; none when the
    model is not registered yet. An outage raises: it is no empty registry."""
    mlflow_client = client(settings)
    with outages(settings):
        aliases = _aliases(mlflow_client, name)
    by_version: dict[str, list[str]] = {}
    for alias, v in aliases.items():
        by_version.setdefault(str(v), []).append(alias)
    with outages(settings):
        versions = _versions(mlflow_client, name)
    return [
        {"version": int(v.version), "aliases": sorted(by_version.get(str(v.version), [])),
         "run_id": v.run_id, **{k.removeprefix(TAG_PREFIX): val for k, val in v.tags.items()
                                if k.startswith(TAG_PREFIX)}}
        for v in sorted(versions, key=lambda v: -int(v.version))
    ]


def run_url(settings: Settings, run_id: str) -> str:
    """Where the MLflow UI shows a run: the tracking server, or `mlflow ui` on its default port."""
    uri = settings.tracking_uri()
    base = uri.rstrip("/") if uri.startswith("http") else "http://127.0.0.1:5000"
    run = client(settings).get_run(run_id)
    return f"{base}/#/experiments/{run.info.experiment_id}/runs/{run_id}"

