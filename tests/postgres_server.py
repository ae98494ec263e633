"""A throwaway PostgreSQL cluster for tests (the topology's `Cluster`, fsync off): a server on
127.0.0.1 at a free port with a password-protected role, stopped and removed afterwards."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from deployments.topology.postgres import Cluster, require_server_bin, server_bin
from perennial.app.local_server import free_port

USER, PASSWORD, DATABASE = "perennial", "s3cret-pw", "perennial"

__all__ = ["PASSWORD", "PostgresServer", "server_bin", "start_postgres"]


@dataclass
class PostgresServer:
    cluster: Cluster

    @property
    def url(self) -> str:
        """The tests' database, password included (the tests check it never leaks)."""
        return self.cluster.url(DATABASE, with_password=True)

    def stop(self) -> None:
        try:
            self.cluster.stop("immediate")
        finally:
            shutil.rmtree(self.cluster.folder, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """A running cluster with the database `perennial`; `stop()` it when done."""
    # Not under pytest's tmp folder: as root that one is private, and the server runs as `postgres`.
    folder = Path(tempfile.mkdtemp(prefix="perennial-pg-"))
    server = PostgresServer(Cluster(folder, free_port(), USER, PASSWORD, require_server_bin(), durable=False))
    try:
        server.cluster.init().start().create_databases(DATABASE)
        return server
    except BaseException:
        server.stop()
        raise
