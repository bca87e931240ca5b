"""Operator reads over an org's data: catalog and user search with keyset paging, one user's events.
Every query is bounded by an index (at 100k items and 1M events each answers in milliseconds;
docs/benchmarks.md, "Dashboard"). Counts (the catalog by status, events per hour) are in counts.py.

Paging is by key (`after` = the last id of the previous page), in the database's order of ids:
a page costs the same however deep it is, and rows inserted meanwhile never shift a page.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.base import driver_connection, driver_transaction


@dataclass(frozen=True)
class ItemRow:
    item_id: str
    item_type: str
    status: str
    attributes: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class UserRow:
    user_id: str
    upserted: bool  # in the users table (else only seen in events)
    status: str | None
    attributes: dict[str, Any] | None
    created_at: datetime | None
    events: int
    last_event_at: datetime | None


@dataclass(frozen=True)
class EventRow:
    event_id: str
    user_id: str
    event_family: str
    event_name: str
    item_id: str | None
    recommendation_id: str | None
    context: dict[str, Any] | None
    occurred_at: datetime
    received_at: datetime


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


_ITEM_COLUMNS = "item_id, item_type, status, attributes::text, created_at, updated_at"


async def search_items(
    session: AsyncSession,
    org_id: uuid.UUID,
    *,
    query: str | None,
    status: str | None,
    after: str | None,
    limit: int,
) -> list[ItemRow]:
    """Items in id order after `after`; `query` matches the id or `attributes.title`, case-insensitively.
    Returns up to `limit` rows (ask for one more to know whether there is a next page)."""
    conditions = ["org_id = $1", "item_id > $2"]
    args: list[Any] = [org_id, after or ""]
    if status is not None:
        args.append(status)
        conditions.append(f"status = ${len(args)}")
    if query:
        needle = query.lower()
        if len(needle) >= 3:
            # Only items holding every trigram of the needle can contain it: found in the trigram
            # index (migration 0005), then checked by the LIKE below. The planner still reads the
            # catalog in id order instead when the needle is so common that the first page is near.
            args.append(needle)
            conditions.append(f"item_search_trigrams(item_id, attributes) @> search_trigrams(${len(args)})")
        # lower() + LIKE, not ILIKE: the same match, half the time per row.
        args.append(_like_pattern(needle))
        conditions.append(
            f"(lower(item_id) LIKE ${len(args)} OR lower(attributes->>'title') LIKE ${len(args)})"
        )
    args.append(limit)
    sql = (
        f"SELECT {_ITEM_COLUMNS} FROM items WHERE {' AND '.join(conditions)} "
        f"ORDER BY item_id LIMIT ${len(args)}"
    )
    conn = await driver_connection(session)
    if not query:
        return [_item(row) for row in await conn.fetch(sql, *args)]
    async with driver_transaction(conn, readonly=True):
        # The needle decides the plan (rare: the trigram index; common: id order, stopping at the first
        # page), so plan for each one. The statement is prepared once per connection, and after five
        # runs Postgres would keep one generic plan for all needles (500 ms for a common one).
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        return [_item(row) for row in await conn.fetch(sql, *args)]


async def get_item(session: AsyncSession, org_id: uuid.UUID, item_id: str) -> ItemRow | None:
    conn = await driver_connection(session)
    row = await conn.fetchrow(
        f"SELECT {_ITEM_COLUMNS} FROM items WHERE org_id = $1 AND item_id = $2", org_id, item_id
    )
    return _item(row) if row is not None else None


def _item(row: Any) -> ItemRow:
    return ItemRow(row[0], row[1], row[2], orjson.loads(row[3]), row[4], row[5])


# Distinct user ids of the org's events after $2 and from the prefix $3 on, one index probe each (a
# "loose index scan" over ix_events_org_user_time), stopping at the first id without the prefix.
_USERS_PAGE = """
WITH RECURSIVE seen(user_id) AS (
    (SELECT user_id FROM events WHERE org_id = $1 AND user_id > $2 AND user_id >= $3 ORDER BY user_id LIMIT 1)
    UNION ALL
    SELECT (SELECT e.user_id FROM events e WHERE e.org_id = $1 AND e.user_id > seen.user_id
            ORDER BY e.user_id LIMIT 1)
    FROM seen WHERE seen.user_id IS NOT NULL AND starts_with(seen.user_id, $3)
),
from_events AS (
    SELECT user_id FROM seen WHERE user_id IS NOT NULL AND starts_with(user_id, $3) LIMIT $4
),
from_users AS (
    SELECT user_id FROM users
    WHERE org_id = $1 AND user_id > $2 AND user_id >= $3 AND starts_with(user_id, $3)
    ORDER BY user_id LIMIT $4
)
SELECT user_id FROM (SELECT user_id FROM from_events UNION SELECT user_id FROM from_users) ids
ORDER BY user_id LIMIT $4
"""

_USER_DETAILS = """
SELECT ids.user_id, u.status, u.attributes::text, u.created_at, s.events, s.last_event_at
FROM unnest($2::text[]) AS ids(user_id)
LEFT JOIN users u ON u.org_id = $1 AND u.user_id = ids.user_id
LEFT JOIN LATERAL (
    SELECT count(*) AS events, max(occurred_at) AS last_event_at FROM events e
    WHERE e.org_id = $1 AND e.user_id = ids.user_id
) s ON true
"""


async def search_users(
    session: AsyncSession, org_id: uuid.UUID, *, prefix: str, after: str | None, limit: int
) -> list[UserRow]:
    """Every user the org knows, upserted or only seen in events, in id order after `after`,
    whose id starts with `prefix`. Up to `limit` rows."""
    conn = await driver_connection(session)
    ids = [row[0] for row in await conn.fetch(_USERS_PAGE, org_id, after or "", prefix, limit)]
    if not ids:
        return []
    details = {row[0]: row for row in await conn.fetch(_USER_DETAILS, org_id, ids)}
    return [_user(details[user_id]) for user_id in ids]


async def get_user(session: AsyncSession, org_id: uuid.UUID, user_id: str) -> UserRow:
    """The user's row (if upserted) and event summary; `upserted` False and 0 events if unknown."""
    conn = await driver_connection(session)
    row = (await conn.fetch(_USER_DETAILS, org_id, [user_id]))[0]
    return _user(row)


def _user(row: Any) -> UserRow:
    upserted = row[1] is not None
    return UserRow(
        user_id=row[0],
        upserted=upserted,
        status=row[1],
        attributes=orjson.loads(row[2]) if upserted else None,
        created_at=row[3],
        events=int(row[4] or 0),
        last_event_at=row[5],
    )


async def user_events(
    session: AsyncSession, org_id: uuid.UUID, user_ids: list[str], *, limit: int
) -> list[EventRow]:
    """The newest events of these users (a user and their stitched aliases), newest first."""
    conn = await driver_connection(session)
    rows = await conn.fetch(
        "SELECT event_id, user_id, event_family, event_name, item_id, recommendation_id, context::text, "
        "occurred_at, received_at FROM events WHERE org_id = $1 AND user_id = ANY($2::text[]) "
        "ORDER BY occurred_at DESC, id DESC LIMIT $3",
        org_id,
        user_ids,
        limit,
    )
    return [
        EventRow(
            str(r[0]),
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            orjson.loads(r[6]) if r[6] is not None else None,
            r[7],
            r[8],
        )
        for r in rows
    ]
