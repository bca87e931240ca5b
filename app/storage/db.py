"""Engine and session factory. The caller owns the transaction (`async with session.begin()`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

SessionFactory = async_sessionmaker[AsyncSession]


def create_engine(database_url: str, *, pool_size: int = 10) -> AsyncEngine:
    engine = create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        # Fail fast when Postgres is away; callers turn this into 503 or a retried job.
        connect_args={"timeout": 5, "command_timeout": 120},
    )
    event.listen(engine.sync_engine.pool, "checkin", _close_one_left_in_a_transaction)
    return engine


def _close_one_left_in_a_transaction(dbapi_connection: Any, record: Any) -> None:
    """A connection checked in (after the pool's rollback) still inside a transaction begun on
    the driver, which that rollback cannot see (see base.driver_transaction), is closed: inside
    a READ ONLY transaction every later write through it would fail. The pool's pre-ping finds
    it closed on the next checkout and opens a new one."""
    driver = dbapi_connection.driver_connection if dbapi_connection is not None else None
    if driver is not None and not driver.is_closed() and driver.is_in_transaction():
        driver.terminate()


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, expire_on_commit=False)
