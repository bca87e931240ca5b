"""The compose roles, run for real: the exact `lehnz migrate|api|worker` commands of
docker-compose.yml as processes against the test's Postgres and Redis (URLs set, so nothing
embedded starts), an event through the api over real HTTP persisted by the worker, the
image's and compose's healthcheck commands against them, then a graceful SIGTERM stop.

The roles get a database of their own (created empty, so `lehnz migrate` really migrates) and
a Redis database index of their own, so a long-running worker neither trains nor queues
anything for the other tests' organisations; both are removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from app import redis_keys
from app.queue import create_redis
from app.settings import Settings
from app.storage.db import create_engine, create_session_factory
from app.storage.tables import Event
from tests.factories import create_org, event
from tests.ops.deployment import compose_healthcheck, image_healthcheck, role_argv
from tests.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

STOP_WITHIN_S = 15.0
ROLES_REDIS_DB = 13


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def executable(argv: list[str]) -> list[str]:
    """`lehnz ...` -> this environment's console script (what the image has on its PATH);
    `python ...` -> this interpreter."""
    program, *rest = argv
    if program == "python":
        return [sys.executable, *rest]
    if program == "lehnz":
        script = Path(sys.executable).parent / "lehnz"
        return [str(script), *rest] if script.exists() else [sys.executable, "-m", "app.cli", *rest]
    raise AssertionError(f"unexpected program {program!r}")


def with_redis_db(url: str, db: int) -> str:
    """The same server, another database index (redis://host/N or unix://path?db=N)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        path, _, query = url.partition("?")
        options = {**dict(parse_qsl(query)), "db": str(db)}
        return f"{path}?{urlencode(options)}"
    return urlunsplit(parts._replace(path=f"/{db}"))


class Role:
    """One role process with its output in a file (a pipe nobody reads would block it), in a
    process group of its own so that kill() also ends any child it left (a training process)."""

    def __init__(self, argv: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.log_path = log
        self._log: IO[bytes] = open(log, "wb")  # noqa: SIM115 - closed in kill()
        self.process = subprocess.Popen(
            executable(argv),
            env=env,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def assert_running(self) -> None:
        code = self.process.poll()
        assert code is None, f"{self.process.args} exited with {code}:\n{self.output()}"

    def stop(self) -> tuple[int, float]:
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=STOP_WITHIN_S)
        finally:
            self.kill()
        return code, time.monotonic() - started

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.wait(timeout=10)
        self._log.close()


@dataclass(frozen=True)
class RolesBackend:
    database_url: str
    redis_url: str
    sessions: Any
    redis: Any


@pytest_asyncio.fixture
async def backend(settings: Settings) -> AsyncIterator[RolesBackend]:
    """An empty database on the test's Postgres server and a flushed Redis db index."""
    server_url = make_url(settings.database_url or "")
    name = f"lehnz_roles_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url.render_as_string(hide_password=False), pool_size=1)
    async with admin.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.execute(text(f'CREATE DATABASE "{name}"'))
    database_url = server_url.set(database=name).render_as_string(hide_password=False)
    redis_url = with_redis_db(settings.redis_url or "", ROLES_REDIS_DB)
    engine = create_engine(database_url, pool_size=2)
    redis = create_redis(redis_url)
    await redis.flushdb()
    try:
        yield RolesBackend(database_url, redis_url, create_session_factory(engine), redis)
    finally:
        await redis.flushdb()
        await redis.aclose()
        await engine.dispose()
        async with admin.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


def role_environment(backend: RolesBackend, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEHNZ_")}
    env.update(
        LEHNZ_DATABASE_URL=backend.database_url,
        LEHNZ_REDIS_URL=backend.redis_url,
        LEHNZ_DATA_DIR=str(tmp_path / "data"),
        LEHNZ_MODEL_DIR=str(tmp_path / "data" / "models"),
        LEHNZ_HOST="127.0.0.1",
        LEHNZ_SYNC_INTERVAL_S="0.1",
        # No scheduled train while this test runs: it is about starting and stopping the roles,
        # and a train in flight would only make the stop timing depend on the machine's load.
        LEHNZ_TRAIN_MIN_NEW_EVENTS="1000000",
        OPENBLAS_NUM_THREADS="1",
    )
    return env


def run_check(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(executable(argv), env=env, cwd=cwd, capture_output=True, timeout=30, check=False)


async def test_compose_roles_migrate_serve_ingest_and_stop_gracefully(
    backend: RolesBackend, tmp_path: Path
) -> None:
    role_env = role_environment(backend, tmp_path)
    # cwd without a .env, so only the environment configures the roles (as in a container).
    migrate = await asyncio.to_thread(
        subprocess.run, executable(role_argv("migrate")), env=role_env, cwd=tmp_path, capture_output=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr.decode()[-4000:]
    async with backend.sessions() as session:
        assert await session.scalar(text("SELECT count(*) FROM alembic_version")) == 1

    port = free_port()
    check_env = {**role_env, "LEHNZ_PORT": str(port)}
    roles: list[Role] = []
    try:
        worker = Role(role_argv("worker"), env=role_env, cwd=tmp_path, log=tmp_path / "worker.log")
        roles.append(worker)
        api_argv = [*role_argv("api"), "--port", str(port)]
        api = Role(api_argv, env=role_env, cwd=tmp_path, log=tmp_path / "api.log")
        roles.append(api)

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:

            async def api_up() -> bool:
                api.assert_running()
                worker.assert_running()
                try:
                    return (await http.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(api_up, timeout=60, interval=0.1)

            org = await create_org(backend.sessions, name=f"Roles {uuid.uuid4().hex[:8]}")
            user_id = f"shopper-{uuid.uuid4().hex[:8]}"
            accepted = await http.post(
                "/v1/ingest/events/ingest", json=[event(user_id, "view", "sku-1")], headers=org.pk
            )
            assert accepted.status_code == 202, accepted.text

            async def persisted() -> int:
                worker.assert_running()
                async with backend.sessions() as session:
                    query = select(func.count()).select_from(Event).where(
                        Event.org_id == uuid.UUID(org.org_id), Event.user_id == user_id
                    )
                    return int(await session.scalar(query) or 0)

            assert await eventually(persisted, timeout=30, interval=0.05) == 1

            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["data"]["database"] == "ok" and ready.json()["data"]["redis"] == "ok"

        # The container healthchecks, run as Docker would run them inside the containers.
        for name, argv in [
            ("Dockerfile HEALTHCHECK", image_healthcheck()),
            ("compose api healthcheck", compose_healthcheck("api")),
            ("compose worker healthcheck", compose_healthcheck("worker")),
        ]:
            result = await asyncio.to_thread(run_check, argv, check_env, tmp_path)
            assert result.returncode == 0, f"{name} failed: {result.stderr.decode()[-2000:]}"

        code, took = await asyncio.to_thread(worker.stop)
        assert code == 0, f"worker exited with {code} after SIGTERM:\n{worker.output()}"
        assert took < STOP_WITHIN_S
        code, took = await asyncio.to_thread(api.stop)
        assert took < STOP_WITHIN_S
        assert code == 0, f"api exited with {code} after SIGTERM:\n{api.output()}"
        assert "Application shutdown complete" in api.output(), api.output()

        # A stopped api fails its check at once; a stopped worker's health keys lapse within
        # arq's health_check_interval + 1 s (31 s), after which its check fails.
        result = await asyncio.to_thread(run_check, image_healthcheck(), check_env, tmp_path)
        assert result.returncode != 0, "the api healthcheck still passes after the api stopped"
        for queue in (redis_keys.INGEST_QUEUE, redis_keys.TRAIN_QUEUE):
            assert 0 < await backend.redis.pttl(f"{queue}:health-check") <= 31_000
    finally:
        for role in roles:
            role.kill()
