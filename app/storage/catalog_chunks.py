"""The whole items table of an org for the api's catalog, a chunk of rows at a time.

app/storage/catalog.py's load_catalog_rows returns every row at once: a million items are a
million row objects alive together (about half a gigabyte that the allocator then keeps). The
api's full catalog load reads through this instead and folds each chunk into compact columns
(app/recommend/catalog.py CatalogTable) before the next one arrives.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.base import driver_connection, driver_transaction

CHUNK_ROWS = 5000
# The columns load_catalog_rows reads, in its order.
_ROWS = """
SELECT item_id, item_type, status, attributes::text, extract(epoch FROM created_at)::float8,
       extract(epoch FROM updated_at)::float8
FROM items WHERE org_id = $1
"""


async def catalog_chunks(session: AsyncSession, org_id: uuid.UUID) -> AsyncIterator[list[tuple[Any, ...]]]:
    """Rows (item_id, item_type, status, attributes JSON text, created_at, updated_at as unix
    times), CHUNK_ROWS at a time, from one snapshot of the table."""
    conn = await driver_connection(session)
    async with driver_transaction(conn, isolation="repeatable_read", readonly=True):
        cursor = await conn.cursor(_ROWS, org_id)
        while rows := await cursor.fetch(CHUNK_ROWS):
            yield [tuple(r) for r in rows]
