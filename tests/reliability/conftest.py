"""Servers a test may stop, kill and restart, and real worker processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.embedded import EmbeddedServers
from app.settings import Settings


class OwnRedis:
    """A Redis of this test only, started through the embedded-server code path (AOF on)."""

    def __init__(self, directory: Path) -> None:
        self._servers = EmbeddedServers(directory, postgres=False)
        self.url = ""

    def start(self) -> str:
        self.url = self._servers.open().redis_url or ""
        return self.url

    def stop(self) -> None:
        """Graceful: SHUTDOWN flushes the AOF."""
        self._servers.close()

    def pause(self) -> None:
        """A stall: the process stops answering, its connections stay open (SIGSTOP)."""
        os.kill(self._pid(), signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self._pid(), signal.SIGCONT)

    def _pid(self) -> int:
        return int((self._servers.data_dir / "redis" / "redis.pid").read_text())

    def kill(self) -> None:
        """A crash: SIGKILL, no chance to flush anything."""
        pid = self._pid()
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid)
        self._servers.close()  # forget the dead server; the next start() reads the AOF


class OwnPostgres:
    def __init__(self, directory: Path) -> None:
        self._servers = EmbeddedServers(directory, redis_server=False)
        self.url = ""

    def start(self) -> str:
        self.url = self._servers.open().database_url or ""
        return self.url

    def stop(self) -> None:
        self._servers.close()


def _wait_gone(pid: int, timeout: float = 10) -> None:
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} did not exit")


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    directory = Path(f"/tmp/lehnz-rr-{uuid.uuid4().hex[:8]}")
    server = OwnRedis(directory)
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)  # a whole Redis data dir per test otherwise


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    from app.storage.migrate import upgrade_head

    directory = Path(f"/tmp/lehnz-pg-{uuid.uuid4().hex[:8]}")
    server = OwnPostgres(directory)
    upgrade_head(server.start())
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)  # a whole Postgres cluster per test otherwise


@pytest.fixture
def worker_process(settings: Settings) -> Iterator[Any]:
    """Start real `lehnz worker` processes; every one is killed at the end of the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(**env_overrides: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.update({
            "LEHNZ_DATABASE_URL": settings.database_url or "",
            "LEHNZ_REDIS_URL": settings.redis_url or "",
            "LEHNZ_DATA_DIR": str(settings.data_dir),
            "LEHNZ_MODEL_DIR": str(settings.models_path),
            "LEHNZ_LOG_LEVEL": "WARNING",
            "LEHNZ_INGEST_JOB_TIMEOUT_S": "2",
            "LEHNZ_RETRY_BACKOFF_MAX_S": "1",
        })
        env.update(env_overrides)
        process = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=env)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
