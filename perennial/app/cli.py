"""The `perennial` command: demo, run, serve, ingest, ingest-labels, release, rollback, status.

Heavy libraries load inside commands."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime
from pathlib import Path

QUIET_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # A cold start of Prefect's temporary server can take longer than its 20 s default on 2 cores.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perennial",
        description="Continuous training for tabular ML: validate, detect drift, fine-tune or "
        "retrain, and promote through the MLflow registry.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="Run the loop over a synthetic stream with known drift.")
    demo.add_argument("--workdir", type=Path, default=None,
                      help="Folder for the stream, state, MLflow and Prefect files (default: a new "
                      "./perennial-demo-<time> folder).")
    demo.add_argument("--rows", type=int, default=2000, help="Rows per batch (default: 2000).")
    demo.add_argument("--no-run", action="store_true",
                      help="Only write the stream (stream/) and its config; e.g. to ingest into a server.")
    demo.add_argument("--delayed-labels", action="store_true",
                      help="Serve batches without labels and ingest their labels later: estimates, "
                      "await_labels, and the decisions the labels lead to.")
    _config(sub.add_parser("run", help="One cycle over the batches not processed yet."))
    serve = sub.add_parser("serve", help="Serve the monitor and adapt deployments of one model or a fleet "
                           "on a Prefect server, from one process.")
    serve.add_argument("--config", type=Path, required=True, action="append",
                       help="A model's YAML config, or a folder of them (every .yaml / .yml in it); "
                       "repeat it to serve several models.")
    ingest = sub.add_parser("ingest", help="Add a batch file atomically and announce it to the monitor.")
    _config(ingest).add_argument("file", type=Path, help="A .csv or .parquet batch.")
    labels = sub.add_parser("ingest-labels", help="Add a label file (row ids and their labels) atomically "
                            "and announce it to the monitor, which joins it to the batches waiting for it.")
    _config(labels).add_argument("file", type=Path, help="A .csv or .parquet file: the data.id and target "
                                 "columns.")
    release = sub.add_parser("release", help="Let a rejected (quarantined) batch back into the stream: "
                             "the next run processes it with its failures recorded as shifts.")
    _config(release).add_argument("batch", help="The batch's file name, as in the ledger (e.g. 2026-03.csv).")
    release.add_argument("--reason", required=True, help="Why, e.g. 'ages above 120 are the new normal'; "
                         "recorded on the ledger line.")
    _rollback(sub)
    report = _config(sub.add_parser("report", help="A model's life on one self-contained HTML page: its "
                                    "metric, decisions, champions, drift and cost per batch."))
    report.add_argument("--out", type=Path, default=None,
                        help="Where to write it (default: report.html in the model's state folder).")
    status = _config(sub.add_parser("status", help="Champion, registered versions and recent decisions."))
    status.add_argument("--last", type=int, default=10, help="How many recent decisions to show.")
    status.add_argument("--history", action="store_true",
                        help="Show every move of the champion alias instead (newest first).")
    return parser


def _rollback(sub) -> None:
    rollback = _config(sub.add_parser("rollback", help="Move the champion alias back to an earlier version; "
                                      "the version left is not reinstated automatically."))
    rollback.add_argument("--to", type=int, default=None, metavar="VERSION",
                          help="The version to serve (default: the champion before the current one, "
                          "from the champion history, past versions rolled back from).")
    rollback.add_argument("--reason", required=True, help="Why, e.g. 'v7 rejects valid loans'; recorded in "
                          "the champion history and on the version.")
    rollback.add_argument("--allow-unpromoted", action="store_true",
                          help="Also serve a version that never passed the promotion gate (never champion, "
                          "or not promoted by its cycle).")


def _config(command: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """A command's `--config`."""
    command.add_argument("--config", type=Path, required=True, help="The model's YAML config.")
    return command


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    from pydantic import ValidationError

    from perennial.core.config import ConfigError, settings_error
    from perennial.core.types import USER_ERRORS

    try:
        return _command(args)
    except (ConfigError, *USER_ERRORS) as exc:
        print(f"perennial: error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        # The environment's settings: one line, never quoting a value (it may hold a password).
        print(f"perennial: error: {settings_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("perennial: interrupted; batches not in the ledger will be processed next time",
              file=sys.stderr)
        return 130


def _command(args: argparse.Namespace) -> int:
    if args.command == "demo":
        return _demo(args)
    if args.command == "run":
        from perennial.app.commands import run

        return run(args.config)
    if args.command == "serve":
        return _serve(args)
    if args.command == "ingest":
        from perennial.app.commands import ingest

        return ingest(args.file, args.config)
    if args.command == "ingest-labels":
        from perennial.app.commands import ingest_labels

        return ingest_labels(args.file, args.config)
    if args.command == "release":
        from perennial.app.commands import release

        return release(args.batch, args.config, args.reason)
    if args.command == "report":
        from perennial.app.commands import report

        return report(args.config, args.out)
    if args.command == "rollback":
        from perennial.app.commands import rollback

        return rollback(args.config, args.to, args.reason, args.allow_unpromoted)
    if args.history:
        from perennial.app.commands import history

        return history(args.config)
    from perennial.app.commands import status

    return status(args.config, args.last)


def _demo(args: argparse.Namespace) -> int:
    from perennial.app.demo import run_demo

    if args.no_run:
        return run_demo(args.workdir, args.rows, run=False, delayed_labels=args.delayed_labels)
    # run_demo's default, decided here: the server keeps its database in the workdir too.
    workdir = (args.workdir or Path(f"perennial-demo-{datetime.now():%Y%m%d-%H%M%S}")).resolve()
    (workdir / "prefect").mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(workdir / "prefect")
    from perennial.app.commands import start_flow_server

    start_flow_server()
    return run_demo(workdir, args.rows, delayed_labels=args.delayed_labels)


def _serve(args: argparse.Namespace) -> int:
    # A triggered run should start within seconds, not at the runner's default 10 s poll.
    os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "1")
    from perennial.app.commands import serve, start_flow_server
    from perennial.app.deployments import fleet
    from perennial.core.config import Settings

    configs = fleet(args.config)  # checked before a server starts: a mistake is one line
    Settings()  # the environment's settings too
    start_flow_server()
    return serve(configs)


if __name__ == "__main__":
    sys.exit(main())
