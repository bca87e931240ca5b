"""A transaction begun on the asyncpg connection under a SQLAlchemy session (catalog reads,
browse, the training load) never goes back to the pool still open.

Found when a full run had 54 tests fail with "cannot execute INSERT in a read-only transaction":
a catalog read's `BEGIN READ ONLY` outlived a cancellation, SQLAlchemy's rollback on check-in
could not see it, and the shared pool handed that connection to every later writer.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest_asyncio
from sqlalchemy import text

from app.settings import Settings
from app.storage.base import driver_connection, driver_transaction
from app.storage.db import create_engine, create_session_factory

APP = Path(__file__).resolve().parents[2] / "app"


@pytest_asyncio.fixture
async def one_connection(settings: Settings) -> AsyncIterator[Any]:
    """A session factory over a pool that hands out the same connection again and again."""
    engine = create_engine(settings.database_url or "", pool_size=1)
    yield create_session_factory(engine)
    await engine.dispose()


async def read_only_and_pid(factory: Any) -> tuple[str, int]:
    async with factory.begin() as session:
        read_only = (await session.execute(text("SHOW transaction_read_only"))).scalar_one()
        pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        await session.execute(text("CREATE TEMP TABLE written_here (x int)"))  # a write goes through
        await session.execute(text("DROP TABLE written_here"))
        return read_only, pid


async def test_a_connection_left_in_a_driver_transaction_is_replaced_not_handed_out(one_connection: Any) -> None:
    _, first_pid = await read_only_and_pid(one_connection)
    async with one_connection() as session:
        conn = await driver_connection(session)
        assert await conn.fetchval("SELECT pg_backend_pid()") == first_pid  # the pool's one connection
        await conn.execute("BEGIN READ ONLY")  # what a cancelled BEGIN/ROLLBACK can leave behind
    read_only, pid = await read_only_and_pid(one_connection)
    assert read_only == "off"
    assert pid != first_pid  # the pool discarded the connection and opened another


async def test_a_cancelled_driver_transaction_closes_its_connection_when_it_cannot_roll_back(
    one_connection: Any,
) -> None:
    async with one_connection() as session:
        conn = await driver_connection(session)
        # anyio's cancellation (Starlette's, for a request) is level-triggered: every await in
        # the cancelled scope raises, the ROLLBACK after the interrupted query included.
        with anyio.CancelScope() as scope:
            async with driver_transaction(conn, readonly=True):
                scope.cancel()
                await conn.fetchval("SELECT 1")
        assert scope.cancelled_caught
        assert conn.is_closed()  # not returned to the pool inside BEGIN READ ONLY
    read_only, _ = await read_only_and_pid(one_connection)
    assert read_only == "off"


async def test_an_error_inside_rolls_back_and_keeps_the_connection(one_connection: Any) -> None:
    async with one_connection() as session:
        conn = await driver_connection(session)
        try:
            async with driver_transaction(conn, readonly=True):
                await conn.execute("CREATE TEMP TABLE refused (x int)")
        except Exception as exc:  # noqa: BLE001
            assert "read-only" in str(exc)
        assert not conn.is_closed() and not conn.is_in_transaction()


def test_storage_begins_driver_transactions_only_through_driver_transaction() -> None:
    offenders = [str(path.relative_to(APP.parent)) for path in APP.rglob("*.py")
                 if path.name != "base.py" and re.search(r"\bconn\.transaction\(", path.read_text())]
    assert offenders == [], f"use app.storage.base.driver_transaction in {offenders}"
