"""Shared helpers for storage modules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession


async def driver_connection(session: AsyncSession) -> Any:
    """The asyncpg connection under the session's transaction, for COPY and array-bound bulk SQL."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection


@asynccontextmanager
async def driver_transaction(conn: Any, **options: Any) -> AsyncIterator[None]:
    """asyncpg's `conn.transaction(**options)` that never leaves the connection in a transaction.

    SQLAlchemy does not know about a transaction begun on the driver connection, so its pool
    cannot roll it back. If a cancellation lands while BEGIN, COMMIT or ROLLBACK is in flight
    (a request cancelled, the api shutting down, an abandoned catalog read), asyncpg's
    bookkeeping and the server disagree, and the connection would go back to the pool still
    inside, e.g., a READ ONLY transaction: every later write through it fails. When the end
    of the transaction cannot be made certain, the connection is closed instead; the pool
    replaces a closed connection.
    """
    transaction = conn.transaction(**options)
    try:
        await transaction.start()
    except BaseException:
        conn.terminate()
        raise
    try:
        yield
    except BaseException:
        try:
            await transaction.rollback()
        except BaseException:  # noqa: BLE001 - closed instead; the original error is raised
            conn.terminate()
        raise
    try:
        await transaction.commit()
    except BaseException:
        conn.terminate()
        raise
