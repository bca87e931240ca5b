"""What a `lehnz` command works with: which servers (`connected`), and the open handles (`open_resources`).

- `connected(settings)` decides where the command's PostgreSQL and Redis are: the configured
  URLs; else the embedded servers of the data dir when it holds them; else (the default data
  dir only) the data of the one `lehnz serve` running for this user, found through the pointer
  serve leaves (app/embedded.py), saying so on stderr; else it refuses with the fix, unless
  the command may create a new embedded database (`--init`). Then it starts or joins the
  embedded servers for as long as the command runs.
- `open_resources(settings)` opens what the command asks for (engine and session factory,
  Redis client and queue, model store), checks up front that each server answers, applies the
  migrations if asked, and closes everything on the way out. Every command opens its
  resources this way, so every command fails the same way (one line) when a server is away.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from app.embedded import ServePointer, embedded_for, has_data, running_serves
from app.settings import Settings

if TYPE_CHECKING:
    from arq.connections import ArqRedis
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

    from app.model_store import ModelStore
    from app.queue import Queue
    from app.storage.db import SessionFactory
    from app.storage.migrate import Upgrade


class CommandError(Exception):
    """A problem the user can fix, said in one line (the cli prints it without a traceback)."""


class NoDatabase(CommandError):
    """No database where the command looked, and it may not create one."""


class Unreachable(CommandError):
    """A configured or embedded server does not answer (or its URL is unusable)."""

    def __init__(self, server: str, url: str, exc: BaseException) -> None:
        super().__init__(f"cannot connect to {server} at {mask_url(url)} ({root_cause(exc)})")


def root_cause(exc: BaseException) -> str:
    """`Type: first line` of the innermost cause (the driver's error inside SQLAlchemy's wrapper)."""
    while (inner := getattr(exc, "orig", None) or exc.__cause__) is not None and inner is not exc:
        exc = inner
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def mask_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparsable URL>"


# --- which servers -----------------------------------------------------------------------------


def locate(settings: Settings, *, init: bool = False, can_init: bool = False) -> tuple[Settings, str | None]:
    """The settings to reach this command's servers with, and a note for stderr (or None)."""
    need_postgres, need_redis = settings.database_url is None, settings.redis_url is None
    if not (need_postgres or need_redis):
        return settings, None
    data_dir = settings.data_dir.resolve()
    if has_data(data_dir, postgres=need_postgres, redis_server=need_redis):
        return settings, None
    if init:
        return settings, f"creating a new embedded database in {data_dir}"
    explicit = "data_dir" in settings.model_fields_set  # LEHNZ_DATA_DIR (or .env) names it: no guessing
    serves = [] if explicit else running_serves()
    if len(serves) == 1:
        return _join(settings, serves[0])
    where = f"no lehnz database in {data_dir}" + (" (LEHNZ_DATA_DIR)" if explicit else "")
    create = "; --init creates a new, empty one there" if can_init else ""
    if len(serves) > 1:
        running = "; ".join(f"{s.url} with data in {s.data_dir}" for s in serves)
        raise NoDatabase(f"{where}, and {len(serves)} `lehnz serve` are running ({running}): run this where "
                         f"the one you mean runs, or set LEHNZ_DATA_DIR to its data dir{create}")
    found = "" if explicit else ", and no running `lehnz serve` was found"
    raise NoDatabase(f"{where}{found}: run it where `lehnz serve` runs, or set LEHNZ_DATA_DIR=<the data dir "
                     f"of that serve> (or LEHNZ_DATABASE_URL and LEHNZ_REDIS_URL){create}")


def _join(settings: Settings, serve: ServePointer) -> tuple[Settings, str]:
    # model_copy does not validate: the values must have their fields' types.
    updates: dict[str, Any] = {"data_dir": Path(serve.data_dir)}
    if settings.model_dir is None:
        updates["model_dir"] = Path(serve.models_path)
    if settings.database_url is None:
        updates["database_url"] = serve.database_url  # None again when serve's is embedded too
    if settings.redis_url is None:
        updates["redis_url"] = serve.redis_url
    note = f"joined the running `lehnz serve` at {serve.url} (pid {serve.pid}, data in {serve.data_dir})"
    return settings.model_copy(update=updates), note


@contextlib.contextmanager
def connected(
    settings: Settings, *, init: bool = False, can_init: bool = False,
    notify: Callable[[str], None] | None = None,
) -> Iterator[Settings]:
    """Settings with both URLs filled: the configured ones, else embedded servers (joined or
    started, and left or stopped on the way out)."""
    located, note = locate(settings, init=init, can_init=can_init)
    if note and notify is not None:
        notify(note)
    need_postgres, need_redis = located.database_url is None, located.redis_url is None
    with embedded_for(located.data_dir, need_postgres=need_postgres, need_redis=need_redis) as urls:
        updates: dict[str, Any] = {}
        if urls.database_url:
            updates["database_url"] = urls.database_url
        if urls.redis_url:
            updates["redis_url"] = urls.redis_url
        yield located.model_copy(update=updates)


# --- the open handles --------------------------------------------------------------------------


class Resources:
    """A command's handles; only those asked for from `open_resources` are there."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._models: ModelStore | None = None
        self.upgrade: Upgrade | None = None  # set when the migrations were applied on opening
        self._engine: AsyncEngine | None = None
        self._sessions: SessionFactory | None = None
        self._redis: ArqRedis | None = None
        self._queue: Queue | None = None

    @property
    def models(self) -> ModelStore:
        """The model store, opened on first use (its numpy import is a second most commands skip)."""
        if self._models is None:
            from app.model_store import ModelStore

            self._models = ModelStore(self.settings.models_path)
        return self._models

    @property
    def sessions(self) -> SessionFactory:
        if self._sessions is None:
            raise RuntimeError("open_resources(..., database=True) was not asked for")
        return self._sessions

    @property
    def redis(self) -> ArqRedis:
        if self._redis is None:
            raise RuntimeError("open_resources(..., redis=True) was not asked for")
        return self._redis

    @property
    def queue(self) -> Queue:
        if self._queue is None:
            raise RuntimeError("open_resources(..., redis=True) was not asked for")
        return self._queue

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: committed when the block ends, rolled back if it raises."""
        async with self.sessions() as session, session.begin():
            yield session

    async def _open_database(self, *, migrate: bool) -> None:
        from app.storage.db import create_engine, create_session_factory
        from app.storage.migrate import upgrade_head

        url = self.settings.database_url or ""
        try:
            self._engine = create_engine(url, pool_size=1)
            async with self._engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
        except Exception as exc:  # whatever the cause, the database cannot be used
            raise Unreachable("PostgreSQL", url, exc) from exc
        self._sessions = create_session_factory(self._engine)
        if migrate:  # alembic runs its own event loop: in a thread of its own
            self.upgrade = await asyncio.to_thread(upgrade_head, url)

    async def _open_redis(self) -> None:
        from app.queue import Queue, create_redis

        url = self.settings.redis_url or ""
        try:
            self._redis = create_redis(url)
            await self._redis.ping()
        except Exception as exc:  # whatever the cause, Redis cannot be used
            raise Unreachable("Redis", url, exc) from exc
        self._queue = Queue(self._redis)

    async def aclose(self) -> None:
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
        if self._engine is not None:
            await self._engine.dispose()


@contextlib.asynccontextmanager
async def open_resources(
    settings: Settings, *, database: bool = True, redis: bool = False, migrate: bool = False
) -> AsyncIterator[Resources]:
    """The handles a command asks for, each server checked up front (Unreachable if it does not
    answer), the migrations applied first if `migrate`; all closed when the block ends."""
    resources = Resources(settings)
    try:
        if database:
            await resources._open_database(migrate=migrate)
        if redis:
            await resources._open_redis()
        yield resources
    finally:
        await resources.aclose()
