"""A PostgreSQL cluster of the machine's server binaries: `initdb` in a folder, a server on 127.0.0.1
with a password-protected role (scram), databases created on demand. No Docker. As root (CI), the
cluster runs as the `postgres` user, since the server refuses to run as root."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


def server_bin() -> Path | None:
    """The folder of `initdb`, `pg_ctl` and `postgres`, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


def require_server_bin() -> Path:
    found = server_bin()
    if found is None:
        raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found: install PostgreSQL "
                           ">= 14.9 (Debian: apt-get install postgresql)")
    return found


def _give_to_postgres(*paths: Path) -> None:
    user = pwd.getpwnam("postgres")
    for path in paths:
        os.chown(path, user.pw_uid, user.pw_gid)


@dataclass
class Cluster:
    """`folder` holds the data directory, the socket and the server log; `user` owns every database."""

    folder: Path
    port: int
    user: str
    password: str
    bin: Path
    # Throwaway clusters (tests) trade durability for a start in ~2 s; the topology keeps fsync on.
    durable: bool = True

    def url(self, database: str, driver: str = "postgresql", with_password: bool = False) -> str:
        """A URL without the password unless asked: libpq and asyncpg read it from PGPASSWORD."""
        secret = f":{self.password}" if with_password else ""
        return f"{driver}://{self.user}{secret}@127.0.0.1:{self.port}/{database}"

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:  # the server refuses root
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.folder)
        if done.returncode:
            raise RuntimeError(f"{args[0]} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")

    def init(self) -> Cluster:
        """A new cluster whose superuser is `user`; the password passes through a file only initdb reads."""
        self.folder.mkdir(parents=True, exist_ok=True)
        pwfile = self.folder / "pw"
        pwfile.touch(mode=0o600)
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            _give_to_postgres(self.folder, pwfile)
        try:
            self._run("initdb", "-D", str(self.data), "-U", self.user, f"--pwfile={pwfile}",
                      "--auth=scram-sha-256", "-E", "UTF8", "--locale=C",
                      *([] if self.durable else ["--no-sync"]))
        finally:
            pwfile.unlink(missing_ok=True)
        return self

    def start(self) -> Cluster:
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                   "-c max_connections=100 -c shared_buffers=32MB")
        if not self.durable:  # the tests kill clients, never the server
            options += " -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "server.log"),
                  "-w", "-t", "60", "start")
        return self

    def create_databases(self, *names: str, extensions: dict[str, str] | None = None) -> None:
        """Each database unless it exists; `extensions` maps a database to an extension it needs."""
        import psycopg

        with psycopg.connect(self.url("postgres", with_password=True), autocommit=True) as conn:
            existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
            for name in names:
                if name not in existing:
                    conn.execute(f'CREATE DATABASE "{name}"')
        for database, extension in (extensions or {}).items():
            with psycopg.connect(self.url(database, with_password=True), autocommit=True) as conn:
                conn.execute(f"CREATE EXTENSION IF NOT EXISTS {extension}")

    def stop(self, mode: str = "fast") -> None:
        if self.data.exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
