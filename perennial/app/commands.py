"""`perennial run`, `status`, `serve`, `ingest`, `release` and `rollback`, and the tables they print."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from perennial.adapters.postgres_state import state_store
from perennial.core.config import ConfigError, PipelineConfig, Settings, load_config, without_credentials
from perennial.core.lifelong import AccuracyMatrix
from perennial.core.metrics import metric_named_or_accuracy
from perennial.core.state import AWAITING, EXPIRED, RELEASED, REQUESTED, StateStore
from perennial.core.types import Action, CycleRecord, Trigger, pct

# Wide enough for the per-batch table even when output is piped (rich assumes 80 columns then).
console = Console(width=max(Console().width, 160))

_DECISION_STYLE = {Action.REJECT: "red", Action.NOOP: "dim", Action.FINE_TUNE: "yellow",
                   Action.RETRAIN: "cyan", Action.REUSE: "green", Action.AWAIT_LABELS: "magenta"}


def cycles_table(records: list[CycleRecord], title: str) -> Table:
    """Batch, rows, drift share, the champion's metric before, decision, reason, model, champion after,
    training cost and the forgetting of the model in service."""
    table = Table(title=title, show_lines=False, expand=False)
    name = records[-1].metric if records else "accuracy"
    short = {"accuracy": "acc.", "balanced_accuracy": "bal. acc.", "average_precision": "AP"}.get(name, name)
    # Narrow headers so the reason keeps its width at 160 columns; "validation" shows as the reject.
    for column, justify in [("batch", "left"), ("rows", "right"), ("drift", "right"),
                            (f"{short} before", "right"), ("decision", "left"), ("reason", "left"),
                            ("model", "left"), ("champion", "right"), ("train s (CPU)", "right"),
                            ("forgetting", "right")]:
        table.add_column(column, justify=justify, overflow="fold",
                         max_width=60 if column == "reason" else None)
    for r in records:
        style = _DECISION_STYLE.get(r.decision, "")
        m = metric_named_or_accuracy(r.metric)
        table.add_row(r.batch, str(r.rows), pct(r.drift_share, 1),
                      _before_cell(r, m), f"[{style}]{_decision_cell(r)}[/{style}]",
                      _reason_cell(r), _model_cell(r),
                      f"v{r.champion_version_after}" if r.champion_version_after else "-",
                      _seconds(r.train_seconds, r.train_cpu_seconds),
                      "-" if r.forgetting is None else m.format_gap(r.forgetting, 1))
    return table


def _reason_cell(r: CycleRecord) -> str:
    """The reason, with the columns validation saw shift, or the release awaiting its next run."""
    if r.status == RELEASED:
        return escape(f"released ({r.release_reason}), to be processed again; rejected: {r.reason}")
    shifted = f" (shifted: {', '.join(r.shifted_columns)})" if r.shifted_columns else ""
    return escape(r.reason + shifted)


def _decision_cell(r: CycleRecord) -> str:
    """The decision, with a data-growth retrain told apart from a retrain on an alarm, and a batch whose
    labels came too late."""
    if r.status == EXPIRED:
        return f"{r.decision} (labels expired)"
    return f"{r.decision} (growth)" if r.trigger == Trigger.DATA_GROWTH else r.decision


def _before_cell(r: CycleRecord, m) -> str:
    """The champion's metric on the batch; for a batch served without labels, its estimate (~)."""
    if r.champion_accuracy_before is None and r.estimate and r.status == AWAITING:
        return f"~{m.format(r.estimate['value'], 1)}"
    return m.format(r.champion_accuracy_before, 1)


def _seconds(wall: float | None, cpu: float | None) -> str:
    return "-" if wall is None else f"{wall:.1f} ({cpu or 0:.1f})"


def cost_summary(records: list[CycleRecord]) -> str:
    """Totals of the cost ledger: adaptations and the candidates they trained, training and evaluation
    seconds, rows the kept models were trained on."""
    trained = [r for r in records if r.train_seconds is not None]
    candidates = sum(max(1, len(r.candidates)) for r in trained)
    return (f"Cost ledger: {len(trained)} adaptation(s) training {candidates} candidate(s), "
            f"{sum(r.train_seconds for r in trained):.1f} s wall / "
            f"{sum(r.train_cpu_seconds or 0 for r in trained):.1f} s CPU, the models kept trained on "
            f"{sum(r.trained_rows or 0 for r in trained):,} rows; evaluation "
            f"{sum(r.eval_seconds or 0 for r in records):.1f} s wall / "
            f"{sum(r.eval_cpu_seconds or 0 for r in records):.1f} s CPU; "
            f"{sum(r.decision is Action.REUSE for r in records)} reuse(s) without training.")


def lifelong_summary(matrix: AccuracyMatrix, metric: str = "accuracy") -> str | None:
    """The champion's average metric, backward transfer and forgetting over the kept windows."""
    if not matrix.steps:
        return None
    judged = metric_named_or_accuracy(metric)
    m = matrix.metrics(judged)
    sign = "+" if m.backward_transfer >= 0 else "-"
    return (f"Across time ({len(matrix.windows)} holdout windows, champion now): average "
            f"{metric.replace('_', ' ')} {judged.format(m.average_accuracy)}, backward transfer "
            f"{sign}{judged.format_gap(abs(m.backward_transfer))}, "
            f"forgetting {judged.format_gap(m.forgetting)} "
            f"(on its own concept's windows: {judged.format_gap(m.concept_forgetting)}).")


def _model_cell(r: CycleRecord) -> str:
    if r.status != "done":
        return r.status
    if r.model_version is None:
        return "-"
    return f"v{r.model_version} " + ("promoted" if r.promoted else "kept as challenger")


# Settings this command's process keeps until it ends (`start_flow_server`).
_PROCESS = ExitStack()


def start_flow_server(config: Path | None = None) -> None:
    """Without a Prefect server configured, start the temporary one this command's flows run on,
    in a child that dies with this process (Prefect's own outlives a SIGKILL). The config is checked
    first: a mistake in it is one line, with no server started."""
    import sys

    from perennial.app.local_server import temporary_server

    if config is not None:
        load_config(config)
    server = temporary_server()
    if server is None:
        return
    print(f"Starting a temporary Prefect server on {server.api.removesuffix('/api')} for this command "
          "(set PREFECT_API_URL to use yours)", file=sys.stderr)
    # The flow's libraries load (~7 s) while the server starts: the commands import them only
    # just before their first flow run, which needs the server.
    import perennial.pipeline.flows.continuous_training  # noqa: F401
    from perennial.pipeline.tasks import without_heartbeats

    server.wait()
    # Nothing watches a server that ends with this command: its flow runs send no heartbeats (each
    # run's end waited up to a second for its heartbeat thread).
    _PROCESS.enter_context(without_heartbeats())


def run(config_path: Path) -> int:
    """One cycle over new batches; prints what was decided for each."""
    # The model's parameters are checked against its estimator (scikit-learn's import) only when there
    # is work: by start_flow_server, before the flow.
    config, settings = load_config(config_path, training=False), Settings()
    from perennial.adapters.mlflow_registry import check_reachable

    # Before the flow: an outage is one line and leaves nothing behind, not retries and a traceback.
    check_reachable(settings)
    check_rules_early(config)
    store = model_store(config, settings)
    with store.lock(holder="perennial run"):  # the flow takes it again; held here to fail in one line
        store.check()
        # Nothing to do is answered here, not by a flow run on a temporary server started for it.
        records = []
        if has_work(config, store):
            start_flow_server(config_path)
            from perennial.pipeline.flows.continuous_training import continuous_training

            hide_user_error_tracebacks()
            records = continuous_training(str(config_path), settings=settings)
    if not records:
        console.print(f"No new batches for [bold]{config.name}[/] in {config.source_pattern()}")
        return 0
    console.print(cycles_table(records, f"{config.name}: {len(records)} new batch(es)"))
    return 0


def has_work(config: PipelineConfig, store: StateStore) -> bool:
    """Whether a run has anything to do: a batch the ledger does not list, or an adaptation a deployed
    monitor requested (the flow's own two sources of work)."""
    from perennial.adapters.batch_files import find_new_batches

    return bool(find_new_batches(config, store.processed())) or any(
        r.status == REQUESTED for r in store.records()) or labels_work(config, store)


def labels_summary(store: StateStore) -> str:
    """Labels that arrive later: the batches waiting and the label pool."""
    pool, waiting = store.label_pool(), store.pending()
    expired = sum(r.status == EXPIRED for r in store.records())
    refused = f"; label files skipped: {', '.join(pool.refused)}" if pool.refused else ""
    return (f"Labels: {len(waiting)} batch(es) waiting ({', '.join(r.batch for r in waiting) or 'none'}), "
            f"{expired} expired; {len(pool.frame):,} label(s) of no waiting batch yet, {pool.expired:,} "
            f"dropped after labels.max_wait_batches, {pool.duplicates:,} replaced by a later label; "
            f"{len(pool.files):,} label file(s) read{refused}")


def labels_work(config: PipelineConfig, store: StateStore) -> bool:
    """Labels that arrive later give work: a label file not read yet (or changed), or a waiting batch
    that may expire (the pool's orphans expire with the next batch)."""
    if config.labels.source is None:
        return False
    from perennial.adapters.batch_files import label_files
    from perennial.core.files import file_sha256

    read = store.label_pool().files
    waiting = store.pending()
    wait = config.labels.max_wait_batches
    return any(read.get(p.name) != file_sha256(p) for p in label_files(config.labels_pattern())) or any(
        store.newer_batches(r.batch) >= wait or store.intent(r.batch) for r in waiting)


def model_store(config: PipelineConfig, settings: Settings) -> StateStore:
    """The model's state, when it belongs to this config's batches (else a ConfigError naming both)."""
    store = state_store(settings, config.name)
    store.check_source(config.source_pattern(), config.config_file)
    return store


def hide_user_error_tracebacks() -> None:
    """Prefect logs a failed run's exception with its traceback; for our own errors (a held lock, a
    corrupt state file, an untrusted version, an outage) the message is all a user needs, and the
    CLI prints it."""
    import logging

    from perennial.core.files import disk_error
    from perennial.core.types import USER_ERRORS

    def one_line(record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and (isinstance(error, (ConfigError, *USER_ERRORS)) or disk_error(error)):
            record.exc_info, record.exc_text = None, None
        return True

    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
               if name.startswith("prefect")]
    for handler in {h for logger in [logging.getLogger("prefect"), *loggers] for h in logger.handlers}:
        handler.addFilter(one_line)


def check_rules_early(config: PipelineConfig) -> None:
    """Declared validation rules must name feature columns: checked before any flow run, so a mistake
    is one line and nothing is written (each cycle checks again, e.g. in deployed runs)."""
    from perennial.adapters.batch_files import next_schema
    from perennial.core.schema import check_column_rules

    if not config.validation.columns:
        return
    store = state_store(Settings(), config.name)
    schema = next_schema(config, store.schema(), store.processed())
    if schema is not None:
        check_column_rules(config, schema)


def serve(config_paths: list[Path]) -> int:
    """Serve the deployments of every model given (configs, or folders of them) from this process
    until interrupted."""
    from perennial.app.deployments import adapt_name, fleet, monitor_name
    from perennial.app.deployments import serve as serve_deployments

    paths = fleet(config_paths)
    configs = [load_config(path) for path in paths]
    for config in configs:
        check_rules_early(config)
    for config in configs:
        console.print(f"Serving [bold]{monitor_name(config)}[/] (cron {config.deploy.cron}, and on "
                      "perennial.batch.arrived or perennial.labels.arrived) and "
                      f"[bold]{adapt_name(config)}[/] (on perennial.drift.detected)")
    serve_deployments(paths)
    return 0


def ingest(file: Path, config_path: Path) -> int:
    """Copy a batch into the source folder atomically, then emit `perennial.batch.arrived`.

    The name must be one the monitor will process: not hidden, no control characters, a batch
    suffix, and new to this model (not in its ledger, quarantine or folder). The one exception is a
    rejected batch whose file left the folder, brought back unchanged so it can be released."""
    from perennial.core.types import BatchError

    config = load_config(config_path, training=False)
    folder = ingest_folder(config_path, "data.source", config.data.source, config.source_pattern(), file,
                           "batch file", BatchError)
    store = model_store(config, Settings())
    rejected = check_ingest_name(file, store)
    target = folder / file.name
    if target.exists():  # early, to spare a copy; `copy_exclusively` is what guarantees it
        raise BatchError(already_arrived(target))
    copy_exclusively(file, target)
    console.print(f"Ingested {file} -> {target}")
    if (later := processed_after(file.name, store)) is not None:
        console.print(escape(f"Warning: {file.name} sorts before {later}, already processed: batches are "
                             "taken in name order (numbers by value: batch-9 before batch-10), so this one "
                             "comes late; name batches so that each new one sorts last"))
    if rejected is not None:
        console.print(escape(f"It was rejected before ({rejected.reason}); " + (
            "it is released: the next run processes it" if rejected.status == RELEASED else
            f"`perennial release {file.name} --config {config_path} --reason ...` lets it back in")))
    announce(config.name, {"batch": target.name, "path": str(target)})
    return 0


def ingest_labels(file: Path, config_path: Path) -> int:
    """Copy a label file (the `data.id` and `data.target` columns) into `labels.source` atomically, then
    emit `perennial.labels.arrived`; the file is checked first, so a file the monitor would refuse is
    refused here, naming it, and nothing is copied."""
    from perennial.adapters.batch_files import read_label_file
    from perennial.core.labels import LabelError

    config = load_config(config_path, training=False)
    if config.labels.source is None:
        raise ConfigError(f"{config_path}: key 'labels.source' is not set: labels come with the batches; set "
                          "it to a folder (and data.id) for labels that arrive later")
    folder = ingest_folder(config_path, "labels.source", config.labels.source, config.labels_pattern(), file,
                           "label file", LabelError)
    check_file_name(file, "label file")
    labels = read_label_file(file, config)
    target = folder / file.name
    if target.exists():
        raise LabelError(f"label file {target}: a label file of that name already arrived; ingest the new "
                         "one under a new name")
    copy_exclusively(file, target)
    console.print(f"Ingested {len(labels.frame):,} labels ({labels.duplicates:,} repeated ids, last kept; "
                  f"{labels.empty:,} rows without a label) {file} -> {target}")
    from perennial.adapters.prefect_events import LABELS_ARRIVED

    if send_event(LABELS_ARRIVED, config.name, {"file": target.name, "path": str(target),
                                                "labels": len(labels.frame)}):
        console.print(f"Emitted {LABELS_ARRIVED} for perennial.model.{config.name}")
    else:
        console.print("No PREFECT_API_URL: no event sent; `perennial run` will join the labels.")
    return 0


def ingest_folder(config_path: Path, key: str, given: str, pattern: str, file: Path, kind: str,
                  error: type[Exception]) -> Path:
    """The folder `key` names, to ingest `file` into: a ConfigError when it is no existing folder, `error`
    naming the `kind` of file when `file` is not there."""
    folder = Path(pattern)
    if not folder.is_dir():
        raise ConfigError(f"{config_path}: key '{key}' must be an existing folder to ingest into "
                          f"(got {given!r})")
    if not file.is_file():
        raise error(f"{kind} {file}: not found")
    return folder


def check_file_name(file: Path, kind: str) -> None:
    """A name the monitor would skip raises BatchError naming the file."""
    from perennial.adapters.batch_files import BATCH_SUFFIXES
    from perennial.core.types import BatchError

    name = file.name
    if any(ord(c) < 0x20 or c == "\x7f" for c in name):
        raise BatchError(f"{kind} {str(file)!r}: its name has control characters; rename it")
    if name.startswith("."):
        raise BatchError(f"{kind} {file}: names starting with '.' are skipped by the monitor "
                         "(they mark files being written); rename it")
    if file.suffix.lower() not in BATCH_SUFFIXES:
        raise BatchError(f"{kind} {file}: expected one of {', '.join(sorted(BATCH_SUFFIXES))}")


def check_ingest_name(file: Path, store: StateStore) -> CycleRecord | None:
    """A name the monitor would skip, or one this model has already seen, raises BatchError; the
    ledger line of a rejected batch brought back unchanged is returned (it can then be released)."""
    import filecmp

    from perennial.core.types import BatchError

    name = file.name
    check_file_name(file, "batch file")
    record = store.record(name)
    quarantined = store.quarantine_dir / name
    if record is not None and record.decision is Action.REJECT and quarantined.is_file() \
            and filecmp.cmp(file, quarantined, shallow=False):
        return record  # `perennial release` asks for this when the file has left the folder
    if record is not None:
        raise BatchError(f"batch file {file}: {name} was already processed ({record.decision}; "
                         "`perennial status` shows it), a batch of that name would be skipped; "
                         "ingest it under a new name")
    if quarantined.exists():
        raise BatchError(f"batch file {file}: {name} is in quarantine ({store.quarantine_dir}); "
                         "ingest it under a new name")
    return None


def processed_after(name: str, store: StateStore) -> str | None:
    """The last batch already processed when `name` sorts before it, else None."""
    from perennial.adapters.batch_files import name_order

    last = max(store.processed(), key=name_order, default=None)
    return last if last is not None and name_order(name) < name_order(last) else None


def already_arrived(target: Path) -> str:
    return f"batch file {target}: a batch of that name already arrived; ingest the new one under a new name"


def copy_exclusively(file: Path, target: Path) -> None:
    """Copy to a hidden partial file of its own (the monitor skips dot-files), sync it, then link it
    to the target name: the link fails if that name exists, even one that appeared a moment ago, so
    no batch is ever replaced. The partial file never outlives this call."""
    import shutil

    from perennial.core.files import place_atomically
    from perennial.core.types import BatchError

    def cannot_copy(exc: OSError) -> BatchError:  # disk full, permissions, no hard links there
        return BatchError(f"batch file {file}: cannot be copied to {target} ({exc.strerror or exc})")

    try:
        with open(file, "rb") as src:
            place_atomically(target, lambda out: shutil.copyfileobj(src, out, 1 << 20), replace=False)
    except FileExistsError:
        raise BatchError(already_arrived(target)) from None
    except OSError as exc:
        raise cannot_copy(exc) from None


def release(batch_id: str, config_path: Path, reason: str) -> int:
    """Let a quarantined (rejected) batch back into the stream: the next run processes it again with
    its failures waived as shifts and its unseen labels as new classes; the reason is recorded. Only
    the bytes that were rejected are released: a file changed since is refused, and the next run
    learns from the quarantined copy (its hash is on the `released` line)."""
    from dataclasses import replace
    from datetime import UTC, datetime

    from perennial.core.types import BatchError

    config = load_config(config_path, training=False)
    store = model_store(config, Settings())
    record = store.record(batch_id)
    if not reason.strip():
        raise BatchError(f"batch {batch_id}: --reason must say why it is released")
    if record is None:
        raise BatchError(f"batch {batch_id}: not in the ledger of {config.name} ({store.ledger_location}); "
                         "only a rejected batch can be released")
    if record.status == RELEASED:
        raise BatchError(f"batch {batch_id}: already released ({record.release_reason}); "
                         "the next `perennial run` processes it")
    if record.decision is not Action.REJECT:
        raise BatchError(f"batch {batch_id}: not rejected (its decision was {record.decision}: "
                         f"{record.reason}); only a rejected batch can be released")
    unusable = record.unusable or ([record.reason] if record.validation == "unreadable" else [])
    if unusable:
        raise BatchError(f"batch {batch_id}: cannot be released, no model can learn from it as it is "
                         f"({'; '.join(unusable)}); fix the file and ingest it under a new name")
    path = Path(record.path)
    if not path.is_file():
        raise BatchError(f"batch {batch_id}: file {path} is no longer there; ingest it again "
                         f"(`perennial ingest FILE --config {config_path}`), then release it")
    digest = rejected_bytes(batch_id, path, store)
    with store.lock(holder="perennial release"):
        if store.record(batch_id) != record:
            raise BatchError(f"batch {batch_id}: processed meanwhile; run `perennial status` and try again")
        store.append(replace(record, status=RELEASED, release_reason=reason.strip(), released_sha256=digest,
                             released_at=datetime.now(UTC).isoformat(timespec="seconds")))
    console.print(f"Released {batch_id} ({reason.strip()}); the next run processes it again, learning the "
                  f"bytes that were rejected (sha256 {digest[:12]}, its quarantined copy)")
    announce(config.name, {"batch": batch_id, "path": str(path), "released": True})
    return 0


def rejected_bytes(batch_id: str, path: Path, store: StateStore) -> str:
    """The SHA-256 of the bytes a batch was rejected with (its quarantined copy); BatchError when the
    file in the source folder is not those bytes: a release covers only what was judged."""
    from perennial.core.files import file_sha256
    from perennial.core.types import BatchError

    copy = store.quarantine_dir / batch_id
    if not copy.is_file():
        raise BatchError(f"batch {batch_id}: its quarantined copy {copy} is missing, so what was rejected "
                         "is unknown; ingest the file under a new name")
    digest = file_sha256(copy)
    if file_sha256(path) != digest:
        raise BatchError(f"batch {batch_id}: {path} changed since it was rejected (it differs from its "
                         f"quarantined copy {copy}); a changed file is a new batch: ingest it under a new "
                         "name")
    return digest


def announce(model: str, payload: dict) -> None:
    """Emit `perennial.batch.arrived` when a Prefect server is configured, so its monitor runs."""
    from perennial.adapters.prefect_events import BATCH_ARRIVED

    if send_event(BATCH_ARRIVED, model, payload):
        console.print(f"Emitted {BATCH_ARRIVED} for perennial.model.{model}")
    else:
        console.print("No PREFECT_API_URL: no event sent; `perennial run` will pick the batch up.")


def send_event(event: str, model: str, payload: dict) -> bool:
    """Emit an event about `model` and deliver it before this short-lived process exits; False when
    no Prefect server is configured (PREFECT_API_URL) to receive it."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        return False
    from prefect.events.worker import EventsWorker

    from perennial.adapters.prefect_events import emit

    emit(event, model, payload)
    EventsWorker.drain_all()
    return True


def rollback(config_path: Path, target: int | None, reason: str, allow_unpromoted: bool = False) -> int:
    """Move `champion` back to `target` (default: the version before the current one, from the alias
    history, past versions rolled back from), check-and-set, holding the model's lock so no cycle moves
    it meanwhile; recorded in the history, and announced as `perennial.model.promoted` with decision
    `rollback`. A retry of the rollback just done moves nothing again; a version that never passed
    the promotion gate needs `allow_unpromoted`, and the output says so."""
    from perennial.adapters.mlflow_registry import check_reachable
    from perennial.adapters.mlflow_registry import rollback as roll_back
    from perennial.adapters.prefect_events import MODEL_PROMOTED
    from perennial.core.types import ROLLBACK, RollbackError

    config, settings = load_config(config_path, training=False), Settings()
    if not reason.strip():
        raise RollbackError(f"model {config.name}: --reason must say why the champion is rolled back")
    check_reachable(settings, then="nothing was changed")
    store = state_store(settings, config.name)  # the lock every worker of this model sees
    with store.lock(holder="perennial rollback"):
        outcome = roll_back(config.name, settings, target, reason.strip(), allow_unpromoted,
                            config.model.trusted_types)
    move = outcome.move
    done = (f"Rolled back {config.name} already: champion v{move.from_version} -> v{move.to_version} "
            f"({reason.strip()}) was done by an earlier rollback with this reason; nothing moved again."
            if outcome.again else
            f"Rolled back {config.name}: champion v{move.from_version} -> v{move.to_version} "
            f"({reason.strip()}); v{move.from_version} will not be reinstated automatically.")
    asked = "" if outcome.again else "; served as --allow-unpromoted asked"
    ungated = f" v{move.to_version}: {outcome.ungated}{asked}." if outcome.ungated else ""
    console.print(escape(f"{done}{ungated} Restart servers of models:/{config.name}@champion to serve "
                         f"v{move.to_version}."))
    if send_event(MODEL_PROMOTED, config.name, {"version": move.to_version, "from_version": move.from_version,
                                                "batch": None, "decision": ROLLBACK, "reason": move.reason}):
        console.print(f"Emitted {MODEL_PROMOTED} (decision {ROLLBACK}) for perennial.model.{config.name}")
    else:
        console.print(f"No PREFECT_API_URL: no {MODEL_PROMOTED} event sent.")
    return 0


def history(config_path: Path) -> int:
    """Every recorded move of `champion`, newest first: when, from and to which version, the decision
    (a promotion's, `reuse` or `rollback`), the batch and why."""
    from perennial.adapters.mlflow_registry import champion_history, check_reachable

    config, settings = load_config(config_path, training=False), Settings()
    check_reachable(settings, then=None)
    moves = champion_history(config.name, settings)
    if not moves:
        console.print(f"[bold]{config.name}[/]: no move of the champion recorded yet "
                      f"({without_credentials(settings.tracking_uri())})")
        return 0
    table = Table(title=f"{config.name}: champion history, newest first")
    for column in ("time (UTC)", "from", "to", "decision", "batch", "reason"):
        table.add_column(column, overflow="fold", max_width=70 if column == "reason" else None)
    for m in reversed(moves):
        table.add_row(m.at.removesuffix("+00:00"), f"v{m.from_version}" if m.from_version else "-",
                      f"v{m.to_version}", m.decision, escape(m.batch or "-"), escape(m.reason))
    console.print(table)
    return 0


def status(config_path: Path, last: int) -> int:
    """The champion, every registered version with its aliases, and the latest decisions."""
    config = load_config(config_path, training=False)
    settings = Settings()
    from perennial.adapters.mlflow_registry import check_reachable, registered_versions

    check_reachable(settings, then=None)
    versions = registered_versions(config.name, settings)
    champion = next((v for v in versions if "champion" in v["aliases"]), None)
    if champion is None:
        console.print(f"[bold]{config.name}[/]: no champion yet "
                      f"({without_credentials(settings.tracking_uri())})")
    else:
        m = metric_named_or_accuracy(champion.get("metric", "accuracy"))
        holdout = m.format(float(champion.get("holdout_accuracy", "nan")), 1)
        console.print(f"[bold]{config.name}[/]: champion v{champion['version']} "
                      f"(holdout {m.name.replace('_', ' ')} {holdout}, "
                      f"trained on {champion.get('trained_on', '?')})")
    if versions:
        table = Table(title="Registered versions")
        for column in ("version", "aliases", "decision", "batch", "holdout", "promoted", "why"):
            table.add_column(column, overflow="fold", max_width=70 if column == "why" else None)
        for v in versions:
            acc, m = v.get("holdout_accuracy"), metric_named_or_accuracy(v.get("metric", "accuracy"))
            table.add_row(f"v{v['version']}", ", ".join(v["aliases"]) or "-", v.get("decision", "-"),
                          v.get("batch", "-"), f"{m.name} {m.format(float(acc), 1)}" if acc else "-",
                          v.get("promoted", "-"), v.get("promotion", "-"))
        console.print(table)
    store = model_store(config, settings)
    records = store.records()
    if records:
        console.print(cycles_table(records[-last:], f"Last {min(last, len(records))} decisions"))
        console.print(cost_summary(records))
        console.print(lifelong_summary(store.matrix(), records[-1].metric) or "")
        if config.labels.source is not None:
            console.print(labels_summary(store))
    else:
        console.print(f"No batch processed yet (ledger: {store.ledger_location})")
    return 0


def report(config_path: Path, out: Path | None) -> int:
    """Write the model's life on one HTML page (from its ledger and accuracy matrix) and print its path."""
    from perennial.adapters.report_page import write_page

    config = load_config(config_path, training=False)
    store = model_store(config, Settings())
    store.check()
    target = out or store.report_page
    write_page(target, config.name, store.records(), store.matrix())
    console.print(f"Report of {config.name}: {target.resolve()}")
    return 0
