"""Shared helpers for storage modules."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession


async def driver_connection(session: AsyncSession) -> Any:
    """The asyncpg connection under the session's transaction, for COPY and array-bound bulk SQL."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection
