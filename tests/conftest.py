"""Shared fixtures: real PostgreSQL and Redis (embedded, or external via LEHNZ_TEST_*_URL),
one api app per session over ASGI, a fresh org per test so tests never see each other's data."""

from __future__ import annotations

import asyncio
import collections
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from app.embedded import EmbeddedServers
from app.settings import Settings
from tests.factories import OrgKeys, create_org


def _dump_asyncio_tasks(signum: int, frame: object) -> None:
    """`kill -USR1 <pytest pid>` while a test hangs: every asyncio task's stack, written to
    /tmp/lehnz-tasks-<pid>.txt (pytest captures stderr)."""
    loop = asyncio.events._get_running_loop()
    with open(f"/tmp/lehnz-tasks-{os.getpid()}.txt", "w") as out:
        if loop is None:
            out.write("no running event loop\n")
            return
        for task in asyncio.all_tasks(loop):
            out.write(f"--- {task!r}\n")
            task.print_stack(file=out)


# --- pytest-xdist ---------------------------------------------------------------------------
# The controller of an xdist run collects nothing and loads no conftest below tests/, so the
# container tests' image build it owns (tests/ops/conftest.py builds in a plain run) is here.
_IMAGE_BUILD = pytest.StashKey[Any]()


def _xdist_controller(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "numprocesses", None)) and not hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    if _xdist_controller(config) and not config.option.collectonly:
        from tests.ops.images.background import SHARED_BUILD_DIR

        os.environ[SHARED_BUILD_DIR] = tempfile.mkdtemp(prefix="lehnz-image-build-")  # the workers inherit it


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """A worker has collected: if the container tests are among them, the build starts now."""
    from tests.ops.compose_stack import docker_problem
    from tests.ops.images.background import CONTAINER_TESTS, SHARED_BUILD_DIR, BackgroundBuild

    config, shared = node.config, os.environ.get(SHARED_BUILD_DIR)
    wanted = shared and _IMAGE_BUILD not in config.stash and any(i.startswith(CONTAINER_TESTS) for i in ids)
    if wanted and docker_problem() is None:  # else the container tests say why they cannot run
        config.stash[_IMAGE_BUILD] = BackgroundBuild(Path(shared))


def pytest_unconfigure(config: pytest.Config) -> None:
    build = config.stash.get(_IMAGE_BUILD, None)
    if build is not None:
        build.finish()
    elif _xdist_controller(config):
        from tests.ops.images.background import SHARED_BUILD_DIR

        shutil.rmtree(os.environ.get(SHARED_BUILD_DIR, "/nonexistent"), ignore_errors=True)  # no build ran


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test has a node id of its own: pytest-xdist schedules by node id, so tests sharing
    one would run once and the others silently never (schemathesis 4 names its cases
    `test[GET /path]` but gives them all the bare function's id)."""
    counts = collections.Counter(item.nodeid for item in items)
    for item in items:
        if counts[item.nodeid] > 1 and not item.nodeid.endswith("::" + item.name) and item.parent is not None:
            # The id pytest gives an item it names itself: its parent's id and its name.
            if hasattr(item, "_id"):  # pytest 9 keeps it structured
                item._id = item.parent.id.child(item.name)
            else:
                item._nodeid = f"{item.parent.nodeid}::{item.name}"
    shared = [nodeid for nodeid, n in collections.Counter(item.nodeid for item in items).items() if n > 1]
    if shared:
        raise pytest.UsageError(f"tests share node ids (xdist would run one of each): {shared[:5]}")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: a worker per core, at most four (each starts its own embedded Postgres and
    Redis, and tests that spawn servers want a core of their own)."""
    return max(1, min(os.cpu_count() or 1, 4))


@pytest.fixture(scope="session", autouse=True)
def _diagnose_hangs() -> Iterator[None]:
    import signal

    previous = signal.signal(signal.SIGUSR1, _dump_asyncio_tasks)
    yield
    signal.signal(signal.SIGUSR1, previous)


@pytest.fixture(scope="session")
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="lehnz-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def server_urls(data_dir: Path) -> Iterator[tuple[str, str]]:
    """External servers when LEHNZ_TEST_DATABASE_URL / LEHNZ_TEST_REDIS_URL are set, else embedded ones."""
    database_url = os.environ.get("LEHNZ_TEST_DATABASE_URL")
    redis_url = os.environ.get("LEHNZ_TEST_REDIS_URL")
    servers = EmbeddedServers(data_dir / "servers", postgres=database_url is None, redis_server=redis_url is None)
    urls = servers.open() if (database_url is None or redis_url is None) else None
    from app.storage.migrate import upgrade_head

    try:  # a failing migration must not leave the embedded servers running after the session
        database_url = database_url or (urls.database_url if urls else None)
        redis_url = redis_url or (urls.redis_url if urls else None)
        assert database_url and redis_url
        upgrade_head(database_url)
        yield database_url, redis_url
    finally:
        servers.close()


def make_settings(server_urls: tuple[str, str], data_dir: Path, **overrides: Any) -> Settings:
    database_url, redis_url = server_urls
    base: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "data_dir": data_dir,
        "model_dir": data_dir / "models",
        "access_log": False,
        "sync_interval_s": 0.05,
        "ingest_job_timeout_s": 10,
        "retry_backoff_max_s": 1.0,
    }
    base.update(overrides)
    return Settings(**base)


@pytest.fixture(scope="session")
def settings(server_urls: tuple[str, str], data_dir: Path) -> Settings:
    return make_settings(server_urls, data_dir)


@pytest_asyncio.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    from app.main import create_app

    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest_asyncio.fixture(scope="session")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest_asyncio.fixture(scope="session")
async def db(settings: Settings) -> AsyncIterator[Any]:
    """A session factory for assertions and set-up (tests own their transactions)."""
    from app.storage.db import create_engine, create_session_factory

    engine = create_engine(settings.database_url or "", pool_size=2)
    yield create_session_factory(engine)
    await asyncio.wait_for(engine.dispose(), timeout=10)


@pytest_asyncio.fixture(scope="session")
async def redis(settings: Settings) -> AsyncIterator[Any]:
    from app.queue import create_redis

    client = create_redis(settings.redis_url or "")
    yield client
    await asyncio.wait_for(client.aclose(), timeout=10)


@pytest_asyncio.fixture
async def org(db: Any) -> OrgKeys:
    return await create_org(db, name=f"Test {uuid.uuid4().hex[:8]}")


@pytest_asyncio.fixture
async def other_org(db: Any) -> OrgKeys:
    return await create_org(db, name=f"Other {uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="session")
def drain(settings: Settings) -> Any:
    """Run the worker in burst mode until the queues are empty (no sleeps, no polling of results).
    Session-wide (it holds nothing but the settings), so module-scoped worlds use it too."""
    from workers.main import run

    async def _drain(**overrides: Any) -> None:
        await asyncio.wait_for(run(settings.model_copy(update=overrides), burst=True), timeout=60)

    return _drain


@pytest.fixture
def app_with(settings: Settings) -> Any:
    """An extra api app with some settings changed, served over ASGI: `async with app_with(...) as client`."""
    import contextlib

    from app.main import create_app

    @contextlib.asynccontextmanager
    async def _make(client_ip: str = "127.0.0.1", **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        application = create_app(settings.model_copy(update=overrides))
        async with application.router.lifespan_context(application):
            transport = httpx.ASGITransport(app=application, raise_app_exceptions=False, client=(client_ip, 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
                yield http

    return _make
