"""`python -m deployments.topology up|down|restart SERVICE|env [--home DIR]`
(docs/topology.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deployments.topology.topology import ENV_FILE, Topology, down, restart, up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.topology", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "restart", "env"])
    parser.add_argument("service", nargs="?", help="for restart: prefect-server, mlflow, worker-1, worker-2")
    parser.add_argument("--home", type=Path, default=Path(".topology"),
                        help="the topology's data, logs and client settings (default: .topology)")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            top = up(args.home)
            print(f"Topology up in {top.home}; its clients' settings (no secrets): "
                  f"source {top.home / ENV_FILE}")
            for key, value in top.client_env().items():
                print(f"  {key}={value}")
            print(f"Prefect UI: {top.client_env()['PREFECT_API_URL'].removesuffix('/api')}  "
                  f"MLflow UI: {top.client_env()['MLFLOW_TRACKING_URI']} (user admin)")
        elif args.command == "down":
            down(Topology(args.home))
            print(f"Topology in {args.home} stopped; logs kept in {args.home / 'logs'}")
        elif args.command == "restart":
            restart(Topology(args.home), args.service or "")
            print(f"{args.service} restarted")
        else:
            for key, value in Topology(args.home).client_env().items():
                print(f"export {key}={value}")
    except RuntimeError as exc:  # TopologyError, or a PostgreSQL tool's failure with its message
        print(f"topology: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
