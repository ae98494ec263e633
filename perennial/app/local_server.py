"""Prefect servers on 127.0.0.1: the temporary one a command runs its flows on when no Prefect
server is configured, and one in its own PREFECT_HOME for integration tests and benchmarks."""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """Stop a process started with `start_new_session=True`, and its children."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def wait_healthy(proc: subprocess.Popen, api: str, timeout: float) -> int | None:
    """Wait until the server answers /health: None then, or its exit code if it ended first.
    RuntimeError when it is neither healthy nor ended after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return proc.returncode
        try:
            if httpx.get(f"{api}/health", timeout=5).status_code == 200:
                return None
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"Prefect server at {api} not healthy after {timeout:.0f} s")


def quiet_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment without Prefect, MLflow or Perennial settings, with telemetry off."""
    env = {k: v for k, v in (base or os.environ).items()
           if not k.startswith(("PREFECT_", "PERENNIAL_", "MLFLOW_"))}
    env.update({"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "MLFLOW_DISABLE_TELEMETRY": "true"})
    return env


# Perennial's flows use no Prefect blocks: a server of ours does not register Prefect's block types at
# start (measured: 10.5 s -> 8.7 s to a fresh temporary server answering, 4.8 s -> 4.4 s on a used one).
NO_BLOCKS = {"PREFECT_API_BLOCKS_REGISTER_ON_START": "false"}


class PrefectServer:
    """`prefect server start` on a free port; `api` is its URL once `start()` returns."""

    def __init__(self, home: Path, timeout: float = 180) -> None:
        self.home, self.timeout = home, timeout
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.proc: subprocess.Popen | None = None

    def start(self) -> PrefectServer:
        self.home.mkdir(parents=True, exist_ok=True)
        log = open(self.home / "server.log", "w")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env={**quiet_env(), **NO_BLOCKS, "PREFECT_HOME": str(self.home)}, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = wait_healthy(self.proc, self.api, self.timeout)
        except RuntimeError:
            self.stop()
            raise
        if code is not None:
            raise RuntimeError(f"Prefect server exited (code {code}); see {self.home / 'server.log'}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def __enter__(self) -> PrefectServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# uvicorn's exit code when its startup failed: a port taken since `free_port` found it free, or
# anything else (an unwritable database), so only a few more tries.
STARTUP_FAILED = 3
STARTS = 3


def die_with_parent() -> Callable[[], None]:
    """A `preexec_fn` that has the kernel SIGKILL the child when this process dies, however it dies.

    The signal follows the thread that started the child: start it from the main thread."""
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork, not in the child
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return preexec


class TemporaryServer:
    """Prefect's temporary server, started with the command and environment Prefect uses
    (`SubprocessASGIServer`), in a child the kernel kills when this process dies: a `perennial run`
    killed with SIGKILL leaves no server listening. `spawn` returns at once; `wait` before a flow runs."""

    def __init__(self, env: dict[str, str], timeout: float) -> None:
        self.env, self.timeout = env, timeout
        self.proc: subprocess.Popen | None = None
        self.api = ""

    def spawn(self) -> TemporaryServer:
        import prefect

        port = free_port()
        self.api = f"http://127.0.0.1:{port}/api"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent),
             "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "error", "--lifespan", "on"],
            env=self.env, preexec_fn=die_with_parent(),
            # Its own session: Ctrl-C reaches this process only, which then reports its flow run's
            # state before stopping the server at exit.
            start_new_session=True)
        point_prefect_at(self.api)
        return self

    def wait(self) -> None:
        """Until the server answers; after a failed start, again on another port (a few times)."""
        assert self.proc is not None, "spawn() first"
        for start in range(1, STARTS + 1):
            code = wait_healthy(self.proc, self.api, self.timeout)
            if code is None:
                return
            if code != STARTUP_FAILED or start == STARTS:
                raise RuntimeError(f"temporary Prefect server exited with code {code} before answering "
                                   f"({start} start(s); its errors are above)")
            self.spawn()

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


def point_prefect_at(api: str) -> None:
    """Prefect in this process (and its children) talks to `api` from now on."""
    from prefect.context import refresh_global_settings_context

    os.environ["PREFECT_API_URL"] = api
    # It serves no UI (as Prefect's own temporary server): no "View at" links to one.
    os.environ.setdefault("PREFECT_UI_URL", "")
    refresh_global_settings_context()  # Prefect read its settings when it was imported


def temporary_server() -> TemporaryServer | None:
    """Where Prefect would start its temporary server (no API URL configured), one that dies with
    this process, spawned, stopped at exit; None elsewhere, and off Linux (Prefect starts its own)."""
    if not sys.platform.startswith("linux"):
        return None
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return None
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
           "PREFECT__SERVER_FINAL": "1", **NO_BLOCKS, **settings.to_environment_variables(exclude_unset=True)}
    server = TemporaryServer(env, settings.server.ephemeral.startup_timeout_seconds).spawn()
    # Registered before Prefect's own exit handlers, so it runs after them (they send the last logs).
    atexit.register(server.stop)
    return server
