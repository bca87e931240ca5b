"""Running `lehnz` as a user does: real subprocesses, real servers, waits on conditions."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

import httpx
import psutil

from app.settings import Settings

T = TypeVar("T")


def lehnz(*args: str, env: dict[str, str], timeout: float = 120, cwd: Path | None = None,
          python: tuple[str, ...] = ("-m", "app.cli")) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *python, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False, cwd=cwd)


def external_env(settings: Settings) -> dict[str, str]:
    """Point the command at the test session's servers (nothing embedded starts)."""
    return {
        **os.environ,
        "LEHNZ_DATABASE_URL": settings.database_url or "",
        "LEHNZ_REDIS_URL": settings.redis_url or "",
        "LEHNZ_DATA_DIR": str(settings.data_dir),
        "LEHNZ_MODEL_DIR": str(settings.models_path),
        "LEHNZ_LOG_LEVEL": "WARNING",
    }


def clean_env(runtime_dir: Path) -> dict[str, str]:
    """No LEHNZ_* setting, and a runtime dir of the test's own (where `lehnz serve` leaves its
    pointer), so that no serve of the machine is found and none of ours is seen by others."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEHNZ_")}
    env.update({"LEHNZ_LOG_LEVEL": "WARNING", "XDG_RUNTIME_DIR": str(runtime_dir)})
    return env


def embedded_env(data_dir: Path, runtime_dir: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEHNZ_")}
    env.update({"LEHNZ_DATA_DIR": str(data_dir), "LEHNZ_LOG_LEVEL": "WARNING"})
    if runtime_dir is not None:
        env["XDG_RUNTIME_DIR"] = str(runtime_dir)
    return env


def scratch_dir(prefix: str) -> Path:
    """A short path under /tmp (Unix socket paths are limited to 107 bytes)."""
    path = Path(f"/tmp/lehnz-{prefix}-{uuid.uuid4().hex[:8]}")
    path.mkdir(mode=0o700)
    return path


def wait_until(
    check: Callable[[], T], *, timeout: float, interval: float = 0.1, what: str = "condition"
) -> T:
    """Call `check` until it returns a truthy value; fail with its last value after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s (last value: {value!r})")
        time.sleep(interval)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_dead(*pids: int, timeout: float = 30) -> None:
    wait_until(lambda: not [pid for pid in pids if alive(pid)], timeout=timeout,
               what=f"processes {pids} gone")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def embedded_pids(data_dir: Path) -> tuple[int, int]:
    postgres = int((data_dir / "postgres" / "postmaster.pid").read_text().splitlines()[0])
    redis = int((data_dir / "redis" / "redis.pid").read_text())
    return postgres, redis


class Serve:
    """A real `lehnz serve` on a free port, its stderr (its log) in a file, in a session of its own."""

    def __init__(self, env: dict[str, str], *, cwd: Path | None = None, log_path: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 - closed in stop()/kill()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port)],
            env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> None:
        def ready() -> bool:
            assert self.process.poll() is None, f"lehnz serve exited:\n{self.log()[-4000:]}"
            try:
                return httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=timeout, interval=0.2, what="lehnz serve ready")

    def child(self, role: str) -> psutil.Process | None:
        """The running api or worker child (the one `serve` started last)."""
        for child in psutil.Process(self.process.pid).children():
            with contextlib.suppress(psutil.Error):
                if child.cmdline()[-1:] == [role] and child.status() != psutil.STATUS_ZOMBIE:
                    return child
        return None

    def stop(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self._log.close()


def kill_embedded(data_dir: Path) -> None:
    """Teardown: the embedded servers of a data dir, whatever state the test left them in."""
    pids = []
    for pid_file in (data_dir / "postgres" / "postmaster.pid", data_dir / "redis" / "redis.pid"):
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            pids.append(int(pid_file.read_text().splitlines()[0]))
    pids = [pid for pid in pids if alive(pid) and _is_server(pid)]  # not a reused pid
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_dead(*pids, timeout=10)


def _is_server(pid: int) -> bool:
    try:
        name = psutil.Process(pid).name()
    except psutil.Error:
        return False
    return "postgres" in name or "redis" in name


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
