"""What training reads from Postgres, as columnar arrays (asyncpg, no ORM: 1M rows must be quick)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

_EVENTS = """
SELECT e.user_id, e.item_id, e.event_name, e.event_family,
       extract(epoch FROM e.occurred_at)::float8 AS ts,
       e.context->>'order_id' AS order_id,
       e.context->>'session_id' AS session_id,
       CASE WHEN jsonb_typeof(e.context->'price') = 'number' THEN (e.context->>'price')::float8 END AS price,
       CASE WHEN jsonb_typeof(e.context->'quantity') = 'number' THEN (e.context->>'quantity')::float8 END AS quantity
FROM events e
WHERE e.org_id = $1 AND e.item_id IS NOT NULL
"""

_ITEMS = """
SELECT item_id, item_type, status, attributes::text AS attributes, extract(epoch FROM created_at)::float8 AS created
FROM items WHERE org_id = $1 ORDER BY item_id
"""


@dataclass(frozen=True)
class RawTrainingData:
    events: list[Any]          # asyncpg records, columns as in _EVENTS
    items: list[Any]           # asyncpg records, columns as in _ITEMS
    aliases: dict[str, str]    # alias id -> canonical id
    hidden_users: set[str]     # inactive / deleted users: left out of training


async def load(conn: Any, org_id: uuid.UUID) -> RawTrainingData:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        events = await conn.fetch(_EVENTS, org_id)
        items = await conn.fetch(_ITEMS, org_id)
        aliases = dict(
            await conn.fetch("SELECT alias_id, canonical_id FROM identity_aliases WHERE org_id = $1", org_id)
        )
        hidden = {
            r[0] for r in await conn.fetch("SELECT user_id FROM users WHERE org_id = $1 AND status <> 'active'", org_id)
        }
    return RawTrainingData(events=events, items=items, aliases=aliases, hidden_users=hidden)


def attributes(records: list[Any], index: int) -> list[dict[str, Any]]:
    return [orjson.loads(r[index]) for r in records]
