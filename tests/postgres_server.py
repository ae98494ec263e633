"""A throwaway PostgreSQL cluster for tests: `initdb` in a temporary folder, a server on 127.0.0.1 at a
free port with a password-protected role, stopped and removed afterwards. No Docker; the server
binaries of the machine (PATH, or Debian's /usr/lib/postgresql/<version>/bin). As root (CI), the
cluster runs as the `postgres` user, since the server refuses to run as root."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

USER, PASSWORD, DATABASE = "perennial", "s3cret-pw", "perennial"


def server_bin() -> Path | None:
    """The folder of `initdb`, `pg_ctl` and `postgres`, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PostgresServer:
    folder: Path
    port: int
    bin: Path

    @property
    def url(self) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:  # the server refuses root
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, text=True, cwd=self.folder)

    def start(self) -> PostgresServer:
        data, pwfile = self.folder / "data", self.folder / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(data), "-U", USER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                  "--no-sync", "-E", "UTF8", "--locale=C")
        # fsync off: the tests kill clients, never the server; a cluster starts in ~2 s.
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c full_page_writes=off -c max_connections=40 -c shared_buffers=16MB")
        self._run("pg_ctl", "-D", str(data), "-o", options, "-l", str(self.folder / "server.log"),
                  "-w", "-t", "60", "start")
        import psycopg

        admin = self.url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """A running cluster; `stop()` it when done."""
    bin_dir = server_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found: install the "
                           "Debian package postgresql")
    # Not under pytest's tmp folder: as root that one is private, and the server runs as `postgres`.
    folder = Path(tempfile.mkdtemp(prefix="perennial-pg-"))
    server = PostgresServer(folder, free_port(), bin_dir)
    try:
        return server.start()
    except BaseException:
        server.stop()
        raise
