"""Items and users: idempotent bulk upserts (worker) and the reads the api and trainer need."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.base import driver_connection, driver_transaction
from app.storage.tables import User

# A retried (older) job must never overwrite a newer upsert: rows remember the api receive time
# of the upsert that wrote them, and only a later-or-equal one replaces them. created_at is the
# client's when given, else the time of the first upsert (kept by later upserts without one).
_UPSERT_ITEMS = """
INSERT INTO items AS t (org_id, item_id, item_type, status, attributes, created_at, updated_at, received_at)
SELECT $1, u.item_id, u.item_type, u.status, u.attributes::jsonb,
       to_timestamp(COALESCE(u.created_at, u.received_at)), now(), to_timestamp(u.received_at)
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::float8[], $7::float8[])
     AS u(item_id, item_type, status, attributes, created_at, received_at)
ON CONFLICT (org_id, item_id) DO UPDATE SET
    item_type = EXCLUDED.item_type,
    status = EXCLUDED.status,
    attributes = EXCLUDED.attributes,
    updated_at = now(),
    received_at = EXCLUDED.received_at
WHERE t.received_at <= EXCLUDED.received_at
"""

_UPSERT_USERS = """
INSERT INTO users AS t (org_id, user_id, status, attributes, created_at, updated_at, received_at)
SELECT $1, u.user_id, u.status, u.attributes::jsonb, to_timestamp(u.created_at), now(), to_timestamp(u.received_at)
FROM unnest($2::text[], $3::text[], $4::text[], $5::float8[], $6::float8[])
     AS u(user_id, status, attributes, created_at, received_at)
ON CONFLICT (org_id, user_id) DO UPDATE SET
    status = EXCLUDED.status,
    attributes = EXCLUDED.attributes,
    created_at = EXCLUDED.created_at,
    updated_at = now(),
    received_at = EXCLUDED.received_at
WHERE t.received_at <= EXCLUDED.received_at
"""

# Only for records that carry their own created_at (and still own the row).
_SET_ITEM_CREATED_AT = """
UPDATE items AS t SET created_at = to_timestamp(u.created_at)
FROM unnest($2::text[], $3::float8[], $4::float8[]) AS u(item_id, created_at, received_at)
WHERE t.org_id = $1 AND t.item_id = u.item_id AND t.received_at = to_timestamp(u.received_at)
"""


@dataclass(frozen=True)
class CatalogRow:
    item_id: str
    item_type: str
    status: str
    attributes: dict[str, Any]
    created_at: datetime
    updated_at: datetime


def _last_per_key(records: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """ON CONFLICT cannot touch one row twice in a statement: keep the latest record per id."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        current = latest.get(record[key])
        if current is None or current["received_at"] <= record["received_at"]:
            latest[record[key]] = record
    return list(latest.values())


def _json_texts(records: list[dict[str, Any]], field: str) -> list[str]:
    return [orjson.dumps(r.get(field) or {}).decode() for r in records]


async def upsert_items(session: AsyncSession, org_id: uuid.UUID, records: list[dict[str, Any]]) -> int:
    records = _last_per_key(records, "item_id")
    conn = await driver_connection(session)
    ids = [r["item_id"] for r in records]
    received = [r["received_at"] for r in records]
    await conn.execute(
        _UPSERT_ITEMS,
        org_id,
        ids,
        [r["item_type"] for r in records],
        [r["status"] for r in records],
        _json_texts(records, "attributes"),
        [r.get("created_at") for r in records],
        received,
    )
    dated = [r for r in records if r.get("created_at") is not None]
    if dated:
        await conn.execute(
            _SET_ITEM_CREATED_AT,
            org_id,
            [r["item_id"] for r in dated],
            [r["created_at"] for r in dated],
            [r["received_at"] for r in dated],
        )
    return len(records)


async def upsert_users(session: AsyncSession, org_id: uuid.UUID, records: list[dict[str, Any]]) -> int:
    records = _last_per_key(records, "user_id")
    conn = await driver_connection(session)
    await conn.execute(
        _UPSERT_USERS,
        org_id,
        [r["user_id"] for r in records],
        [r["status"] for r in records],
        _json_texts(records, "attributes"),
        [r["created_at"] for r in records],
        [r["received_at"] for r in records],
    )
    return len(records)


_CHUNK_ROWS = 5000
_CATALOG_COLUMNS = """
SELECT item_id, item_type, status, attributes::text, extract(epoch FROM created_at)::float8,
       extract(epoch FROM updated_at)::float8
FROM items WHERE org_id = $1
"""


async def load_catalog_rows(session: AsyncSession, org_id: uuid.UUID, *, changed_since: float | None) -> list[Any]:
    """Rows (item_id, item_type, status, attributes JSON text, created_at, updated_at) as unix times.

    `changed_since` reads only rows updated after it (the api's incremental refresh).
    """
    conn = await driver_connection(session)
    if changed_since is not None:
        return list(await conn.fetch(_CATALOG_COLUMNS + " AND updated_at > to_timestamp($2)", org_id, changed_since))
    # A whole catalog is read in chunks: decoding 100k rows at once would hold the api's event
    # loop for half a second; a cursor returns to the loop between chunks.
    rows: list[Any] = []
    async with driver_transaction(conn, readonly=True):
        async for row in conn.cursor(_CATALOG_COLUMNS, org_id, prefetch=_CHUNK_ROWS):
            rows.append(row)
    return rows


async def delete_users(session: AsyncSession, org_id: uuid.UUID, user_ids: list[str]) -> None:
    """The users' profiles (an erasure: workers/erasure.py)."""
    await session.execute(delete(User).where(User.org_id == org_id, User.user_id.in_(user_ids)))
