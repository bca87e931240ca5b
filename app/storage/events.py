"""Events: idempotent bulk insert (worker), erasure, counts."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from sqlalchemy import delete, func, or_, select
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


_STORED_EVENTS = """
SELECT event_id, user_id, event_family, event_name, item_id, previous_user_id, context::text AS context,
       extract(epoch FROM occurred_at)::float8 AS occurred_at
FROM events
WHERE org_id = $1 AND event_id = ANY($2::uuid[])
"""


async def stored_events(session: AsyncSession, org_id: uuid.UUID, event_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Event id -> the event as stored (the worker's record shape, without received_at), for those
    of `event_ids` that are stored."""
    conn = await driver_connection(session)
    rows = await conn.fetch(_STORED_EVENTS, org_id, event_ids)
    return {
        str(row["event_id"]): {
            **dict(row),
            "event_id": str(row["event_id"]),
            "context": orjson.loads(row["context"]) if row["context"] is not None else None,
        }
        for row in rows
    }


async def delete_user_events(
    session: AsyncSession, org_id: uuid.UUID, user_ids: list[str], *, erased_at: float
) -> int:
    """The users' events from before their erasure (app/erasure_rule.py): received or happened
    at or before `erased_at`; what was sent and happened after it is new data and stays."""
    moment = func.to_timestamp(erased_at)
    result = await session.execute(
        delete(Event).where(
            Event.org_id == org_id,
            Event.user_id.in_(user_ids),
            or_(Event.received_at <= moment, Event.occurred_at <= moment),
        )
    )
    return result.rowcount or 0  # type: ignore[attr-defined]


async def count_events(session: AsyncSession, org_id: uuid.UUID) -> int:
    return int(await session.scalar(select(func.count()).select_from(Event).where(Event.org_id == org_id)) or 0)


async def orgs_with_events(session: AsyncSession) -> set[uuid.UUID]:
    """Every org that has stored events (a scan of the whole table: the scheduler runs it once
    per worker start)."""
    return set((await session.scalars(select(Event.org_id).distinct())).all())
