"""One configuration model: a YAML file per monitored model, plus infrastructure from the environment."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from perennial.core.text import bounded, shorten

FeatureKind = Literal["numeric", "categorical", "boolean"]
CandidateKind = Literal["fine_tune", "retrain_window", "retrain_batch", "retrain_all"]


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or does not match the model."""


# The error type of a check across fields: its context's `key` names the key at fault, below the
# section the check runs on (the error's own place is the section).
NAMED_KEY = "named_key"


class _Strict(BaseModel):
    # A misspelt key is an error, never silently ignored.
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    source: str = Field(description="Folder or glob of batch files; relative to the config file.")
    format: Literal["auto", "csv", "parquet"] = Field(
        "auto", description="Batch file format; auto: by the file's suffix (.csv, .parquet).")
    target: str = Field(description="Label column.")
    features: dict[str, FeatureKind] | None = Field(
        default=None,
        description="Feature columns and kinds; inferred from the first batch and frozen if unset.",
    )
    # Limits on a new batch file, checked before pandas parses it: a hostile or broken file is
    # rejected with a clear error instead of holding the monitor for minutes (docs/guarantees.md).
    max_file_mb: float = Field(2048, gt=0, description="Largest batch file accepted, in MB (2^20 bytes).")
    max_columns: int = Field(
        2000, ge=1, description="Most columns a batch file may have (counted in its header or schema)."
    )
    max_parse_seconds: float = Field(
        600, gt=0, description="Longest a batch file may take to parse; checked between chunks."
    )
    min_rows: int = Field(
        10, ge=2, description="Fewest rows a batch may have: fewer cannot be split into training and "
        "holdout rows; such a batch is rejected, not released (merge it into a larger one)."
    )
    id: str | None = Field(
        None, description="Row id column: the key that joins labels arriving later to the rows of a batch; "
        "required for batches without labels (`labels.source`)."
    )

    @model_validator(mode="after")
    def _id_is_no_feature(self) -> DataConfig:
        # The row id keys the join: as the target it would be its own label, as a feature the model
        # would learn from a row number.
        if self.id is not None and self.id == self.target:
            raise PydanticCustomError(NAMED_KEY, "must differ from data.target ('{target}'): a row id is not "
                                      "a label", {"key": "id", "target": self.target})
        if self.id is not None and self.features and self.id in self.features:
            raise PydanticCustomError(NAMED_KEY, "'{id}' is also in data.features: a row id is not a feature",
                                      {"key": "id", "id": self.id})
        return self


class ModelConfig(_Strict):
    family: str = Field("sgd", description="Preset model family: a name in perennial.core.families.FAMILIES "
                        "(ignored when `estimator` is set).")
    params: dict[str, Any] = Field(default_factory=dict, description="Parameters of the preset's estimator.")
    task: Literal["classification", "binary", "multiclass", "regression"] | None = Field(
        None, description="What the model predicts; unset: regression when the target is a plainly "
        "continuous number (see the notes below), else classification (binary with two classes)."
    )
    estimator: str | None = Field(
        None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="Your own model: 'package.module:function', a function of (schema, seed) returning an "
        "unfitted scikit-learn estimator or Pipeline (docs/own-model.md)."
    )
    trusted_types: list[str] = Field(
        default_factory=list, description="Types your model's saved file holds beyond Perennial's own, "
        "which loading it must trust (skops); a model holding others is refused before it is registered."
    )

    @field_validator("family")
    @classmethod
    def _known_family(cls, name: str) -> str:
        # The family registry is the one list of names. Imported here, not at the top: this module is
        # the bottom layer (families names its classes), and only a validated config needs the list.
        from perennial.core.families import FAMILIES

        if name not in FAMILIES:
            *others, last = (repr(known) for known in FAMILIES)
            expected = f"{', '.join(others)} or {last}" if others else last
            # Worded as pydantic words a Literal: "Input should be 'sgd' or 'hgb'".
            raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
        return name

    @model_validator(mode="after")
    def _params_the_family_takes(self, info: ValidationInfo) -> ModelConfig:
        # Checked by the estimator now, not at the first training: there a mistake failed a cycle, and
        # the cycle's batch was blamed for it. Only configured params cost the import of scikit-learn,
        # and commands that never train (`status`, `ingest`, ...) skip it (load_config(training=False)).
        # After the fields: the estimator checked is the task's (either task's while it is not known
        # yet); the user's own estimator (`estimator`) takes its parameters from their code.
        from perennial.core.families import FAMILIES, ParamError

        family = FAMILIES.get(self.family)
        if family is None or not self.params or self.estimator is not None or not _training(info):
            return self
        try:
            family.check_params(self.params, self.task)
        except ParamError as exc:
            param = f"params.{exc.key}" if exc.key else "params"  # the error's place is `model`
            raise PydanticCustomError("model_param", "{problem}", {"param": param, "problem": str(exc)}) \
                from None
        return self


class PolicyConfig(_Strict):
    metric: str | None = Field(
        None, description="The metric models are judged by (perennial.core.metrics.METRICS); unset: "
        "accuracy for classification, mae for regression."
    )
    positive_class: str | None = Field(
        None, description="The positive class of a binary target, for f1 and average_precision; unset: "
        "the class named 1, true or yes."
    )
    drift_share_moderate: float = Field(
        0.25, ge=0, le=1, description="Share of drifted (or shifted) features above which a batch whose "
        "metric held is reported as 'features drifted but accuracy held'.")
    drift_share_severe: float = Field(
        0.6, ge=0, le=1, description="Share of drifted features that, with a moderate drop, calls for a "
        "retrain on the window.")
    # Drops of the metric's utility: points for shares, R² units, or ~relative rise for errors.
    drop_moderate: float = Field(0.05, ge=0, validation_alias=AliasChoices("drop_moderate",
                                                                           "accuracy_drop_moderate"),
                                 description="A drop of the metric that calls for a fine-tune "
                                 "(points of a share; an error ~5% higher for 0.05).")
    drop_severe: float = Field(0.15, ge=0,
                               validation_alias=AliasChoices("drop_severe", "accuracy_drop_severe"),
                               description="A drop of the metric judged a concept change.")
    max_fine_tunes: int = Field(3, ge=0, description="Fine-tunes in a row before a full retrain.")
    cooldown_batches: int = Field(
        0, ge=0, description="Batches after an adaptation during which a moderate drift is only watched "
        "(severe drift, a concept change and new labels still act)."
    )
    promotion_margin: float = Field(
        0.0, description="Challenger accuracy must reach champion accuracy + margin to be promoted."
    )
    reference_batches: int = Field(
        6, ge=1, description="Recent accepted batches whose models in service set the reference accuracy "
        "a batch is judged against: the best of them, each pooled over the batches it served."
    )
    growth_ratio: float | None = Field(
        1.0, gt=0, description="Retrain on every batch of the concept in service when the labelled rows "
        "that arrived since its model was trained reach this multiple of the rows it learnt from "
        "(1.0: when they double); null: never."
    )
    candidates: list[CandidateKind] = Field(
        default_factory=lambda: ["fine_tune", "retrain_window", "retrain_batch", "retrain_all"], min_length=1,
        description="Ways to train a challenger when an alarm calls for an adaptation (`retrain_all`: "
        "every accepted batch of the concept in service, within `training.history_rows`, trained at "
        "every alarm outside `candidate_budget`: the evidence whether the history still holds)."
    )
    candidate_budget: float = Field(
        0.5, ge=0, description="Training an adaptation may spend on candidates besides the policy's own "
        "choice, as a multiple of that choice's cost estimated from the cost ledger (0: its choice only)."
    )

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, name: str | None) -> str | None:
        from perennial.core.metrics import METRICS  # the one list of names (numpy only)

        if name is not None and name not in METRICS:
            raise PydanticCustomError("literal_error", "Input should be one of {expected}",
                                      {"expected": ", ".join(METRICS)})
        return name

    @model_validator(mode="after")
    def _ordered(self) -> PolicyConfig:
        if self.drift_share_moderate > self.drift_share_severe:
            raise ValueError("drift_share_moderate must not exceed drift_share_severe")
        if self.drop_moderate > self.drop_severe:
            raise ValueError("drop_moderate must not exceed drop_severe")

        return self


class ColumnRule(_Strict):
    """Bounds a user declares for one feature column: always enforced, on every value."""

    min: float | None = Field(None, description="Smallest allowed value (numeric columns).")
    max: float | None = Field(None, description="Largest allowed value (numeric columns).")
    max_null_rate: float | None = Field(
        None, ge=0, le=1, description="Largest allowed share of missing values."
    )
    categories: list[str] | None = Field(
        None, min_length=1, description="The only allowed values (categorical columns)."
    )
    strict: bool | None = Field(
        None, description="Inferred checks of this column reject (true) or are shifts (false); "
        "unset: `validation.strict`."
    )

    @field_validator("categories", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        # Categories are compared as text (a CSV's 1 and a Parquet's "1" are one category).
        return [str(v) for v in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _ordered(self) -> ColumnRule:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) must not exceed max ({self.max:g})")
        return self


class ValidationConfig(_Strict):
    strict: bool = Field(
        False, description="Inferred checks (null rate, range, categories) reject the batch instead of "
        "being recorded as shifts."
    )
    columns: dict[str, ColumnRule] = Field(
        default_factory=dict, description="Declared bounds per feature column; a broken one rejects."
    )
    null_rate_tolerance: float = Field(
        0.05, ge=0, le=1, description="Allowed rise of a column's null rate over the reference."
    )
    range_tolerance: float = Field(
        0.5, ge=0, description="Numeric range widened by this fraction of the reference span."
    )
    range_mostly: float = Field(0.95, ge=0, le=1, description="Share of values that must be in range.")
    category_mostly: float = Field(
        0.95, ge=0, le=1, description="Share of values that must be known categories."
    )
    allow_new_classes: bool = Field(False, description="Accept unseen labels (forces a retrain).")
    sample_rows: int = Field(
        50_000, ge=1000, description="Rows Great Expectations checks in a larger batch: a uniform sample "
        "plus every row breaking a rule with no tolerance (docs/large-batches.md)."
    )


class DriftConfig(_Strict):
    method: str | None = Field(
        None, description="Evidently drift method for every column (e.g. 'ks', 'psi', "
        "'wasserstein'); unset: Evidently's default per column type and size."
    )
    threshold: float | None = Field(
        None, gt=0, description="Threshold of that method; unset: the method's default."
    )
    reference_rows: int = Field(5000, gt=0, description="Rows of the champion's data kept as reference.")
    sample_rows: int = Field(
        20_000, ge=1000, description="Rows of a larger batch compared with the reference: a uniform sample "
        "(docs/large-batches.md)."
    )
    recheck_margin: float = Field(
        0.03, ge=0, description="A sampled column whose score is this close to its threshold is recomputed "
        "on every row."
    )
    workspace: bool | str = Field(
        True, description="The Evidently workspace each accepted batch's drift run is added to, with a "
        "dashboard of drift share and drifted columns over batches (`evidently ui`): true, "
        "`<state folder>/evidently`; a folder (relative to the config file); the http(s) URL of an "
        "`evidently ui` server; false, none."
    )

    @field_validator("workspace")
    @classmethod
    def _workspace_without_credentials(cls, value: bool | str) -> bool | str:
        host = value.split("://", 1)[1].split("/", 1)[0] if isinstance(value, str) and "://" in value else ""
        if isinstance(value, str) and (not value.strip() or "@" in host):
            # Named without the value: it may hold a secret.
            raise PydanticCustomError(NAMED_KEY, "expected true, false, a folder or an http(s) URL without "
                                      "credentials", {"key": ""})
        return value


class TrainingConfig(_Strict):
    window_batches: int = Field(3, ge=1, description="Accepted batches a full retrain learns from.")
    holdout_fraction: float = Field(
        0.25, gt=0, lt=1, description="Rows of each batch held out for the champion/challenger comparison.")
    fine_tune_passes: int = Field(
        5, ge=1, description="Most passes of a fine-tune (sgd: one epoch each; hgb: `fine_tune_trees` "
        "trees each); it stops at the first pass that does not improve accuracy on its validation rows."
    )
    fine_tune_trees: int = Field(10, ge=1, description="Trees an hgb fine-tune adds per pass.")
    fine_tune_validation: float = Field(
        0.2, gt=0, lt=1, description="Share of a fine-tune's rows (new and replayed) kept for early stopping."
    )
    fine_tune_l2: float = Field(1.0, ge=0, description="L2 regularisation of the trees a fine-tune adds.")
    max_rows_in_memory: int = Field(
        2_000_000, ge=1, description="Rows of a retrain's window (all rows of its batch files) above "
        "which it is trained out of core, reading the files in chunks."
    )
    chunk_rows: int = Field(100_000, ge=1, description="Rows per chunk when training out of core.")
    history_rows: int = Field(
        200_000, ge=1, description="Most rows a retrain on the concept's whole history learns from "
        "(`retrain_all`, data growth): beyond it, the newest batches in full up to half of it and a "
        "uniform sample of the older ones for the rest."
    )
    preprocess_sample_rows: int = Field(
        100_000, ge=1, description="Out of core: rows sampled uniformly to fit the preprocessing on."
    )
    out_of_core_epochs: int = Field(2, ge=1, description="sgd out of core: partial_fit passes over the rows.")
    seed: int = Field(0, description="Seed of splits and estimators.")


class LifelongConfig(_Strict):
    replay_rows: int = Field(
        5000, ge=0, description="Rows the replay memory keeps of the concept in service, class-balanced."
    )
    replay_ratio: float = Field(
        1.0, ge=0, description="Replayed rows a fine-tune mixes in per new training row (0: naive fine-tune)."
    )
    window_rows: int = Field(
        1000, ge=1, description="Holdout rows kept from every accepted batch to measure forgetting on."
    )
    max_windows: int = Field(20, ge=2, description="Windows (accepted batches) the accuracy matrix keeps.")
    reuse_candidates: int = Field(
        10, ge=0, description="Former champions, newest first, scored on a batch before any training."
    )
    forgetting_budget: float = Field(
        0.05, ge=0, le=1, description="Most forgetting on earlier windows of the concept in service a "
        "challenger may show and still be promoted."
    )


class LabelsConfig(_Strict):
    """Labels that arrive later than the rows they label, joined by `data.id`."""

    source: str | None = Field(
        None, description="Folder or glob of label files (CSV or Parquet: the `data.id` column and the "
        "`data.target` column), relative to the config file; unset: labels come with the batches."
    )
    min_coverage: float = Field(
        0.8, gt=0, le=1, description="Share of a pending batch's rows that must have a label before it is "
        "learnt from."
    )
    max_wait_batches: int = Field(
        10, ge=1, description="Newer batches a pending batch waits for its labels through; then its rows "
        "without a label are dropped and counted. Labels of no pending batch are kept as long, then "
        "dropped and counted."
    )


class DeployConfig(_Strict):
    cron: str = Field("0 * * * *", description="When the monitor deployment runs (besides on arrivals).")
    timezone: str = Field("UTC", description="Time zone of `cron`.")


class ReportConfig(_Strict):
    every_cycle: bool = Field(
        True, description="Rewrite the model's report page after every cycle (in the state folder, on the "
        "latest version's MLflow run, linked from a Prefect artifact): 0.2-0.5 s a cycle; false: only "
        "`perennial report` writes it."
    )


class PipelineConfig(_Strict):
    """Everything Perennial needs to know about one monitored model."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Registered model name.")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    lifelong: LifelongConfig = Field(default_factory=LifelongConfig)
    deploy: DeployConfig = Field(default_factory=DeployConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    base_dir: Path = Field(default=Path("."), exclude=True, description="Folder of the config file.")
    config_file: Path | None = Field(default=None, exclude=True, description="The config file, for errors.")

    @model_validator(mode="after")
    def _labels_join_by_id(self) -> PipelineConfig:
        if self.labels.source is not None and self.data.id is None:
            raise PydanticCustomError(NAMED_KEY, "needs data.id, the column that joins labels to the rows of "
                                      "a batch", {"key": "labels.source"})
        return self

    def source_pattern(self) -> str:
        """The batch source as an absolute folder or glob."""
        return self._absolute(self.data.source)

    def labels_pattern(self) -> str | None:
        """The label source as an absolute folder or glob; None when labels come with the batches."""
        return None if self.labels.source is None else self._absolute(self.labels.source)

    def _absolute(self, source: str) -> str:
        path = Path(source).expanduser()
        return str(path if path.is_absolute() else (self.base_dir / path).resolve())


CREDENTIALS_IN_URI = "credentials_in_tracking_uri"  # the error type of a tracking URI refused for them


def without_credentials(uri: str) -> str:
    """The URI without the user info a network URI may carry, for messages."""
    # All from `//` to the last @: a password may hold / ? # or @, which end a URL parser's user info.
    scheme, sep, rest = uri.partition("://")
    if not sep or "@" not in rest or scheme.lower() in ("file", "sqlite"):
        return uri
    return f"{scheme}://{rest.rpartition('@')[2]}"


def settings_error(error: ValidationError) -> str:
    """A Settings error on one line, never with the values given (the environment may hold secrets)."""
    parts = []
    for err in error.errors():
        key = "_".join(str(p) for p in err["loc"]).upper()  # a field's name, or its variable's
        key = key if key.startswith("PERENNIAL_") else f"PERENNIAL_{key}"
        parts.append(err["msg"] if err["type"] == CREDENTIALS_IN_URI else f"{key}: {err['msg']}")
    return "; ".join(parts)


class Settings(BaseSettings):
    """Infrastructure, from the environment, with defaults that run on a laptop."""

    # Errors never quote a value: the environment holds URLs and may hold passwords.
    model_config = SettingsConfigDict(env_prefix="PERENNIAL_", extra="ignore", hide_input_in_errors=True)

    state_dir: Path = Field(default=Path(".perennial"), description="Ledgers, quarantine, reference.")
    # Secret: it may hold a password; pydantic (and Prefect's record of a flow's parameters) show ***.
    state_url: SecretStr | None = Field(
        default=None, description="PostgreSQL URL of the state every worker shares "
        "(postgresql://USER:PASSWORD@HOST:PORT/DATABASE); unset, the state stays in state_dir.")
    # Secret too: a database store's URI (postgresql://USER:PASSWORD@...) holds a password.
    mlflow_tracking_uri: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("PERENNIAL_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking URI (also read from MLFLOW_TRACKING_URI); unset: SQLite in state_dir.",
    )
    # MLflow's own defaults (7 retries with backoff up to 2 min, 120 s timeout) made a run against a
    # server that is down retry for 12 minutes; these bound each request to an HTTP server.
    mlflow_retries: int = Field(
        default=2, ge=0, le=10, description="Retries of a failed MLflow HTTP request (after 0, 2, 4, ... s)."
    )
    mlflow_timeout_seconds: int = Field(
        default=10, ge=1, description="Seconds an MLflow HTTP request waits to connect, and for each answer."
    )

    lock_wait_seconds: float = Field(
        default=600.0, ge=0, description="How long a deployed monitor or adapt run waits for another "
        "cycle of its model to finish (`perennial run` does not wait: it says who holds the lock)."
    )

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _no_credentials(cls, secret: SecretStr | None) -> SecretStr | None:
        """An HTTP tracking URI without user info: MLflow prints the URI in its "View run" lines, so a
        password in it would show there."""
        uri = secret.get_secret_value() if secret else ""
        scheme, sep, rest = uri.strip().partition("://")
        if sep and scheme.lower() in ("http", "https") and "@" in rest:
            raise PydanticCustomError(CREDENTIALS_IN_URI, (
                "MLFLOW_TRACKING_URI (or PERENNIAL_MLFLOW_TRACKING_URI) holds credentials, which MLflow and "
                "Prefect would show: set it to {uri} and put them in MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD"), {"uri": without_credentials(uri.strip())})
        return secret

    def tracking_uri(self) -> str:
        """The configured MLflow URI, or a SQLite file under the state folder."""
        if self.mlflow_tracking_uri and self.mlflow_tracking_uri.get_secret_value():
            return self.mlflow_tracking_uri.get_secret_value()
        return f"sqlite:///{self.state_dir.resolve() / 'mlflow.db'}"

    def mlflow_http_env(self) -> dict[str, str]:
        """MLflow's own environment variables for the retry and timeout limits above."""
        return {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.mlflow_retries),
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": str(self.mlflow_timeout_seconds)}

    def artifact_location(self) -> str | None:
        """Where a new experiment stores artifacts: beside a SQLite store, or the server's default."""
        if not self.tracking_uri().startswith("sqlite:"):
            return None
        return (self.state_dir.resolve() / "mlartifacts").as_uri()


# A config is a page of YAML: a larger file is a mistake (or an attack), refused before it is read whole.
MAX_CONFIG_BYTES = 2**20
# Values YAML aliases may add to a document: ten lines of nested anchors ("billion laughs") expand to
# billions, which loading, validating or printing in an error would try to build.
MAX_ALIAS_VALUES = 10_000
# Problems a config error lists; the rest are counted.
MAX_PROBLEMS = 5
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _describe(error: ValidationError) -> str:
    """Pydantic's errors in one line, each value quoted at bounded length."""
    errors = error.errors()
    parts = []
    for err in errors[:MAX_PROBLEMS]:
        key = shorten(".".join(str(p) for p in err["loc"]), 120) or "(top level)"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key '{key}'")
        elif err["type"] == "missing":
            parts.append(f"missing key '{key}'")
        elif err["type"] == "model_param":  # names the parameter; the message quotes its value
            param = shorten(err.get("ctx", {}).get("param", ""), 120)
            parts.append(f"key '{key}.{param}': {err['msg']}" if param else f"key '{key}': {err['msg']}")
        elif err["type"] == NAMED_KEY:  # a check across fields, at the key it names
            named = ".".join(str(p) for p in (*err["loc"], err.get("ctx", {}).get("key", "")) if p != "")
            parts.append(f"key '{shorten(named, 120)}': {err['msg']}")
        else:
            parts.append(f"key '{key}': {err['msg']} (got {bounded(err.get('input'))})")
    more = len(errors) - MAX_PROBLEMS
    return "; ".join(parts) + (f"; and {more} more problem(s)" if more > 0 else "")


def _read(path: Path) -> bytes:
    """The file's bytes, read no further than the size limit."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: config file larger than the limit of 1 MB ({MAX_CONFIG_BYTES:,} bytes)")
    return data


def _expanded(node: yaml.Node, sizes: dict[int, float], open_nodes: set[int]) -> float:
    """Values `node` stands for with every alias expanded: an alias is the very node it names, so each
    node is counted once (memoised by id); a node inside itself stands for infinitely many."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        return math.inf
    open_nodes.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    else:
        children = []
    size = 1 + sum(_expanded(child, sizes, open_nodes) for child in children)
    open_nodes.discard(id(node))
    sizes[id(node)] = size
    return size


def _parse(path: Path, data: bytes) -> Any:
    """The YAML document in `data`: composed (cheap: an alias is not copied), its alias expansion
    checked, then built."""
    try:
        loader = _YAML_LOADER(data)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
        if node is None:
            return None
        sizes: dict[int, float] = {}
        if _expanded(node, sizes, set()) - len(sizes) > MAX_ALIAS_VALUES:
            raise ConfigError(f"{path}: uses YAML aliases that expand to more than {MAX_ALIAS_VALUES:,} "
                              "values")
        return yaml.constructor.SafeConstructor().construct_document(node)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise ConfigError(f"{path}: not valid YAML{line}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML (nested too deeply)") from None
    except ConfigError:
        raise
    except ValueError as exc:  # built values: e.g. an integer of more than 4,300 digits
        raise ConfigError(f"{path}: not valid YAML ({shorten(str(exc), 120)})") from None


def _training(info: ValidationInfo) -> bool:
    return not isinstance(info.context, dict) or info.context.get("training", True)


def load_config(path: str | Path, training: bool = True) -> PipelineConfig:
    """Read and check a model's YAML config; every problem names the file and the key.

    `training=False`, for commands that never train: the model's parameters are not checked against
    its estimator, which imports scikit-learn (1.5 s of a 3 s `perennial status`).
    """
    path = Path(path)
    raw = _parse(path, _read(path))
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys (name, data, model, ...)")
    try:
        return PipelineConfig.model_validate({**raw, "base_dir": path.resolve().parent, "config_file": path},
                                             context={"training": training})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from None
