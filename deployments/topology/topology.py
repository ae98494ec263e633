"""Start, stop and restart the topology's services; see the package docstring for the picture."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx

from deployments.topology.postgres import Cluster, require_server_bin
from perennial.app.local_server import free_port, quiet_env

ROOT = Path(__file__).resolve().parents[2]  # the checkout: prefect.yaml and the flows' code
MODELS = Path(__file__).parent / "models"
BIN = Path(sys.executable).parent
POOL = "perennial"  # the work pool prefect.yaml names
WORKERS = ("worker-1", "worker-2")
BUCKET = "perennial-artifacts"
# moto accepts any key; a real object store's keys come from the MLflow server's environment.
S3_KEYS = {"AWS_ACCESS_KEY_ID": "topology", "AWS_SECRET_ACCESS_KEY": "topology",
           "AWS_DEFAULT_REGION": "us-east-1"}
ADMIN = "admin"  # MLflow's admin user, the workers' user too
DB_USER = "perennial"  # the PostgreSQL role owning the four databases
DATABASES = ("prefect", "mlflow", "mlflow_auth", "perennial")
# Each secret, the variable it comes from, and what it protects.
SECRETS = {
    "PGPASSWORD": "the PostgreSQL role `perennial` (all four databases)",
    "PREFECT_API_AUTH_STRING": "the Prefect server's API (PREFECT_SERVER_API_AUTH_STRING on the server)",
    "MLFLOW_TRACKING_PASSWORD": "MLflow's `admin` user (basic auth)",
}
STARTUP_SECONDS = 240  # the slowest service on 2 busy cores: the Prefect server's first migration


class TopologyError(RuntimeError):
    """The topology cannot start or stop; the message says what to do."""


def secrets_from_env(env: dict[str, str] | None = None) -> dict[str, str]:
    env = os.environ if env is None else env
    missing = [name for name in SECRETS if not env.get(name)]
    if missing:
        lines = [f"  export {name}=...   # {SECRETS[name]}" for name in missing]
        raise TopologyError("secrets come from the environment; set:\n" + "\n".join(lines)
                            + "\n(e.g. $(openssl rand -hex 16) each; keep them in your secret store)")
    return {name: env[name] for name in SECRETS}


@dataclass
class Ports:
    postgres: int
    s3: int
    mlflow: int
    prefect: int

    @classmethod
    def free(cls) -> Ports:
        return cls(free_port(), free_port(), free_port(), free_port())


class Topology:
    """Services in `home`: data in a folder each, logs in logs/, pids in run/, ports in topology.json."""

    def __init__(self, home: Path) -> None:
        self.home = home.resolve()
        self.logs, self.run = self.home / "logs", self.home / "run"
        self.record = self.home / "topology.json"

    # -- where everything is ------------------------------------------------------------------------

    @functools.cached_property
    def ports(self) -> Ports:
        if not self.record.exists():
            raise TopologyError(f"no topology in {self.home} (run `up` first)")
        return Ports(**json.loads(self.record.read_text()))

    def cluster(self, password: str = "") -> Cluster:
        return Cluster(self.home / "postgres", self.ports.postgres, DB_USER, password, require_server_bin())

    def client_env(self) -> dict[str, str]:
        """What a client (a worker, `perennial`, `prefect`, `mlflow`) needs besides the secrets."""
        p, cluster = self.ports, self.cluster()
        return {"PREFECT_API_URL": f"http://127.0.0.1:{p.prefect}/api",
                "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{p.mlflow}",
                "MLFLOW_TRACKING_USERNAME": ADMIN,
                "PERENNIAL_STATE_URL": cluster.url("perennial"),
                "PERENNIAL_MODELS": str(self.home / "models")}

    def env(self, secret: dict[str, str], **extra: str) -> dict[str, str]:
        return {**quiet_env(), **self.client_env(), **secret, **extra}

    # -- daemons ------------------------------------------------------------------------------------

    def spawn(self, name: str, command: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        """A service in a session of its own (stopped with its children), its output in logs/NAME.log."""
        with open(self.logs / f"{name}.log", "a") as log:
            proc = subprocess.Popen(command, env=env, cwd=cwd or self.home, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        (self.run / f"{name}.pid").write_text(str(proc.pid))

    def alive(self, name: str) -> bool:
        pid = self._pid(name)
        if pid is None:
            return False
        with contextlib.suppress(ChildProcessError):  # started by this process: ended means a zombie
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _pid(self, name: str) -> int | None:
        path = self.run / f"{name}.pid"
        return int(path.read_text()) if path.exists() else None

    def kill(self, name: str, timeout: float = 30) -> None:
        """SIGTERM to the service's session, SIGKILL after `timeout` seconds."""
        pid = self._pid(name)
        if pid is None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(pid):
                time.sleep(0.2)
            if not _group_alive(pid):
                break
        (self.run / f"{name}.pid").unlink(missing_ok=True)

    def wait_until(self, name: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _quietly(ready):
            if not self.alive(name):
                raise TopologyError(f"{name} exited while starting; see {self.logs / (name + '.log')}")
            if time.monotonic() > deadline:
                raise TopologyError(f"{name} not ready after {STARTUP_SECONDS} s; see "
                                    f"{self.logs / (name + '.log')}")
            time.sleep(0.5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # A zombie leader of an otherwise empty group still answers; reap it if it is our child.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)
    return True


def _quietly(check: Callable[[], bool]) -> bool:
    try:
        return bool(check())
    except (httpx.HTTPError, OSError):
        return False


def answers(url: str) -> bool:
    return httpx.get(url, timeout=5).status_code == 200


# -- the services, in the order `up` starts them ------------------------------------------------------

def start_postgres(top: Topology, secret: dict[str, str]) -> None:
    cluster = top.cluster(secret["PGPASSWORD"])
    if os.geteuid() == 0:  # the server runs as `postgres`, which must reach its folder
        top.home.chmod(0o711)
    cluster.init().start()
    cluster.create_databases(*DATABASES, extensions={"prefect": "pg_trgm"})


def start_s3(top: Topology, secret: dict[str, str]) -> None:
    """moto's S3 server (in memory: `down` forgets the artifacts, as it drops the databases)."""
    port = top.ports.s3
    top.spawn("s3", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], top.env(secret))
    top.wait_until("s3", lambda: answers(f"http://127.0.0.1:{port}/moto-api/"))
    import boto3

    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name=S3_KEYS["AWS_DEFAULT_REGION"],
                 aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=BUCKET)


def start_mlflow(top: Topology, secret: dict[str, str]) -> None:
    """Basic auth with its users in PostgreSQL, runs and registry in PostgreSQL, artifacts in S3
    (served through the server: clients need no S3 credentials)."""
    p, cluster = top.ports, top.cluster()
    (top.home / "mlflow").mkdir(exist_ok=True)
    ini = top.home / "mlflow" / "basic_auth.ini"
    ini.write_text("[mlflow]\ndefault_permission = READ\n"
                   f"database_uri = {cluster.url('mlflow_auth', 'postgresql+psycopg')}\n"
                   f"admin_username = {ADMIN}\n"
                   # Each request checks the password with PBKDF2 (~0.3 s on 2 cores, and an adapt
                   # run makes ~100 requests); a check passed is trusted for a minute. A password
                   # changed out of band (SQL) takes up to that minute to apply.
                   "auth_cache_ttl_seconds = 60\n")
    env = top.env(secret, MLFLOW_AUTH_CONFIG_PATH=str(ini),
                  MLFLOW_AUTH_ADMIN_PASSWORD=secret["MLFLOW_TRACKING_PASSWORD"],
                  MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16),
                  MLFLOW_S3_ENDPOINT_URL=f"http://127.0.0.1:{p.s3}", **S3_KEYS,
                  # One worker and no job consumers: ~500 MB instead of ~3 GB.
                  MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    top.spawn("mlflow", [str(BIN / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
                         "--port", str(p.mlflow), "--workers", "1",
                         "--backend-store-uri", cluster.url("mlflow", "postgresql+psycopg"),
                         "--artifacts-destination", f"s3://{BUCKET}/mlflow"], env)
    top.wait_until("mlflow", lambda: answers(f"http://127.0.0.1:{p.mlflow}/health"))


def start_prefect(top: Topology, secret: dict[str, str]) -> None:
    p = top.ports
    env = top.env(secret, PREFECT_HOME=str(top.home / "prefect"),
                  PREFECT_API_DATABASE_CONNECTION_URL=top.cluster().url("prefect", "postgresql+asyncpg"),
                  PREFECT_SERVER_API_AUTH_STRING=secret["PREFECT_API_AUTH_STRING"])
    env.pop("PREFECT_API_AUTH_STRING")  # the server's variable, not a client's
    env.pop("PREFECT_API_URL")
    top.spawn("prefect-server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                                 "--port", str(p.prefect)], env)
    top.wait_until("prefect-server", lambda: answers(f"http://127.0.0.1:{p.prefect}/api/health"))


def deploy(top: Topology, secret: dict[str, str]) -> None:
    """The work pool, then every deployment of the repository's prefect.yaml (both models)."""
    env = top.env(secret, PREFECT_HOME=str(top.home / "prefect"), PWD=str(ROOT))
    prefect = str(BIN / "prefect")
    for command in ([prefect, "work-pool", "create", POOL, "--type", "process", "--overwrite"],
                    [prefect, "--no-prompt", "deploy", "--all"]):
        with open(top.logs / "deploy.log", "a") as log:
            done = subprocess.run(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=STARTUP_SECONDS)
        if done.returncode:
            raise TopologyError(f"`{' '.join(command[1:])}` failed; see {top.logs / 'deploy.log'}")


def start_workers(top: Topology, secret: dict[str, str], names: tuple[str, ...] = WORKERS) -> None:
    """Process workers, one flow run at a time each, each with a local folder of its own (as on two
    hosts: what they share is PostgreSQL, MLflow and the batch folders)."""
    for name in names:
        local = top.home / name
        local.mkdir(exist_ok=True)
        env = top.env(secret, PREFECT_HOME=str(local / "prefect"), PERENNIAL_STATE_DIR=str(local / "state"),
                      PREFECT_WORKER_QUERY_SECONDS="2", OMP_NUM_THREADS="1")
        top.spawn(name, [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--name", name,
                         "--type", "process", "--limit", "1"], env, cwd=local)
    api = top.client_env()["PREFECT_API_URL"]
    headers = auth_header(secret["PREFECT_API_AUTH_STRING"])
    started = time.time()

    def online() -> bool:
        found = httpx.post(f"{api}/work_pools/{POOL}/workers/filter", headers=headers, timeout=5).json()
        # A restarted worker counts once it has polled again, not on its predecessor's heartbeat.
        return set(names) <= {w["name"] for w in found if w["status"] == "ONLINE"
                              and datetime.fromisoformat(w["last_heartbeat_time"]).timestamp() >= started}

    top.wait_until(names[-1], online)


def auth_header(auth_string: str) -> dict[str, str]:
    """The header a Prefect client sends for PREFECT_API_AUTH_STRING (HTTP basic, the string as is)."""
    import base64

    return {"Authorization": "Basic " + base64.b64encode(auth_string.encode()).decode()}


# -- the whole topology ------------------------------------------------------------------------------

SERVICES: dict[str, Callable[[Topology, dict[str, str]], None]] = {
    "s3": start_s3, "mlflow": start_mlflow, "prefect-server": start_prefect}
ENV_FILE = "topology.env"


def up(home: Path) -> Topology:
    """Everything, in dependency order; on any failure, what started is stopped again."""
    secret = secrets_from_env()
    top = Topology(home)
    if top.record.exists():
        raise TopologyError(f"{top.home} already holds a topology (`down --home {home}` first)")
    for folder in (top.home, top.logs, top.run):
        folder.mkdir(parents=True, exist_ok=True)
    top.record.write_text(json.dumps(Ports.free().__dict__))
    try:
        write_models(top)
        for start in (start_postgres, *SERVICES.values(), deploy, start_workers):
            start(top, secret)
    except BaseException:
        down(top)
        raise
    exports = "".join(f"export {k}={v}\n" for k, v in top.client_env().items())
    (top.home / ENV_FILE).write_text("# The topology's clients, without secrets (docs/topology.md)\n"
                                     + exports)
    return top


def down(top: Topology) -> None:
    """Stop every service and drop its data; the logs stay."""
    if not top.run.exists():
        raise TopologyError(f"no topology in {top.home}")
    for name in (*reversed(WORKERS), *reversed(SERVICES)):
        top.kill(name)
    if top.record.exists() and (top.home / "postgres" / "data").exists():
        top.cluster().stop()
    for path in top.home.iterdir() if top.home.exists() else []:
        if path != top.logs:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def restart(top: Topology, service: str) -> None:
    """Stop one service and start it again; its data stays (Prefect's and MLflow's in PostgreSQL).
    Not the S3 stand-in, which keeps its objects in memory."""
    restartable = ("prefect-server", "mlflow", *WORKERS)
    if service not in restartable:
        raise TopologyError(f"cannot restart '{service}'; one of {', '.join(restartable)}")
    secret = secrets_from_env()
    top.kill(service)
    if service in WORKERS:
        start_workers(top, secret, (service,))
    else:
        SERVICES[service](top, secret)


def write_models(top: Topology) -> None:
    """The models' configs in <home>/models (their batches in <home>/batches/<model>/), and a stream
    of batches for each in <home>/streams/<model>/ to feed them with `perennial ingest`."""
    (top.home / "models").mkdir()
    for config in sorted(MODELS.glob("*.yaml")):
        shutil.copy(config, top.home / "models" / config.name)
        (top.home / "batches" / config.stem).mkdir(parents=True)
    from deployments.topology.streams import write_streams

    write_streams(top.home / "streams")
