"""The MLflow client on the configured store, its outages, and what the other modules read: the
tags Perennial sets, the registered model, its versions and aliases."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from perennial.core.config import Settings, without_credentials
from perennial.core.types import OutageError, RegistryError

CHAMPION, CHALLENGER = "champion", "challenger"


REFERENCE_ARTIFACT = "reference/reference.parquet"


REPLAY_ARTIFACT = "replay/memory.parquet"


TAG_PREFIX = "perennial."


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
    # On the latest version: where the model's report page is (an artifact of its run, see `log_report`).
    REPORT = "perennial.report"
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


def versions_of(mlflow_client: Any, name: str) -> list[Any]:
    """Every version of a registered model, page after page."""
    # The name may sit in a filter: PipelineConfig.name's pattern allows no quote.
    versions, token = [], None
    while True:
        page = mlflow_client.search_model_versions(f"name = '{name}'", page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            return versions


def registered_model(mlflow_client: Any, name: str) -> Any | None:
    """The registered model (aliases, tags); None when it is not registered yet. Any other error
    raises: an outage must not read as "no champion" (a challenger would become champion by default)."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def aliases_of(mlflow_client: Any, name: str) -> dict[str, str]:
    """The model's aliases; none when it is not registered yet (see `registered_model`)."""
    model = registered_model(mlflow_client, name)
    return dict(model.aliases) if model is not None else {}


def alias_version(mlflow_client: Any, name: str, alias: str) -> int | None:
    aliases = aliases_of(mlflow_client, name)
    return int(aliases[alias]) if alias in aliases else None


def run_url(settings: Settings, run_id: str) -> str:
    """Where the MLflow UI shows a run: the tracking server, or `mlflow ui` on its default port."""
    uri = settings.tracking_uri()
    base = uri.rstrip("/") if uri.startswith("http") else "http://127.0.0.1:5000"
    run = client(settings).get_run(run_id)
    return f"{base}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
