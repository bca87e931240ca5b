"""Events: idempotent bulk insert (worker), erasure, counts."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.base import driver_connection
from app.storage.tables import Event

# UNIQUE (org_id, event_id) + DO NOTHING: a retried job or a re-sent event stores nothing twice.
_INSERT_EVENTS = """
INSERT INTO events (org_id, event_id, user_id, event_family, event_name, item_id, previous_user_id,
                    recommendation_id, context, occurred_at, received_at)
SELECT $1, u.event_id, u.user_id, u.event_family, u.event_name, u.item_id, u.previous_user_id,
       u.recommendation_id, u.context::jsonb, to_timestamp(u.occurred_at), to_timestamp(u.received_at)
FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
            $10::float8[], $11::float8[])
     AS u(event_id, user_id, event_family, event_name, item_id, previous_user_id, recommendation_id, context,
          occurred_at, received_at)
ON CONFLICT (org_id, event_id) DO NOTHING
RETURNING event_id
"""


def _context_text(record: dict[str, Any]) -> str | None:
    context = record.get("context")
    return None if context is None else orjson.dumps(context).decode()


async def insert_events(session: AsyncSession, org_id: uuid.UUID, records: list[dict[str, Any]]) -> set[str]:
    """Insert what is not stored yet; returns the event ids that were new."""
    conn = await driver_connection(session)
    rows = await conn.fetch(
        _INSERT_EVENTS,
        org_id,
        [r["event_id"] for r in records],
        [r["user_id"] for r in records],
        [r["event_family"] for r in records],
        [r["event_name"] for r in records],
        [r.get("item_id") for r in records],
        [r.get("previous_user_id") for r in records],
        [r.get("recommendation_id") for r in records],
        [_context_text(r) for r in records],
        [r["occurred_at"] for r in records],
        [r["received_at"] for r in records],
    )
    return {str(row["event_id"]) for row in rows}


async def delete_user_events(
    session: AsyncSession, org_id: uuid.UUID, user_ids: list[str], *, received_before: float
) -> int:
    result = await session.execute(
        delete(Event).where(
            Event.org_id == org_id,
            Event.user_id.in_(user_ids),
            Event.received_at <= func.to_timestamp(received_before),
        )
    )
    return result.rowcount or 0  # type: ignore[attr-defined]


async def count_events(session: AsyncSession, org_id: uuid.UUID) -> int:
    return int(await session.scalar(select(func.count()).select_from(Event).where(Event.org_id == org_id)) or 0)
