"""Async alembic environment: the URL comes from the caller (lehnz migrate) or LEHNZ_DATABASE_URL."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.settings import get_settings
from app.storage.tables import Base

config = context.config
target_metadata = Base.metadata

_LOCK_ID = 727274
_LOCK_POLL_S = 0.2


def _database_url() -> str:
    url = config.attributes.get("database_url") or get_settings().database_url
    if not url:
        raise RuntimeError("no database URL: run `lehnz migrate`, or set LEHNZ_DATABASE_URL")
    return url


def run_migrations_offline() -> None:
    context.configure(url=_database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    # The caller may ask to hear of each revision applied (`lehnz migrate` says which ones).
    callback = config.attributes.get("on_version_apply")
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True,
                      transaction_per_migration=True, on_version_apply=[callback] if callback else [])
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = create_async_engine(_database_url(), poolclass=pool.NullPool)
    async with engine.connect() as connection:
        # Serialise concurrent `lehnz migrate` runs (several replicas starting at once). Polled,
        # not waited for: a session blocked in pg_advisory_lock keeps a snapshot open, and a
        # CREATE INDEX CONCURRENTLY in the holder's migration waits for every open snapshot, so
        # the two would deadlock. Each try ends its transaction, so none is held while waiting;
        # the session lock outlives it, and alembic then begins transactions of its own.
        while True:
            acquired = (await connection.exec_driver_sql(f"SELECT pg_try_advisory_lock({_LOCK_ID})")).scalar()
            await connection.commit()
            if acquired:
                break
            await asyncio.sleep(_LOCK_POLL_S)
        try:
            await connection.run_sync(_run_sync)
        finally:
            await connection.exec_driver_sql(f"SELECT pg_advisory_unlock({_LOCK_ID})")
            await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_sync(connection)
    else:
        asyncio.run(run_migrations_online())
