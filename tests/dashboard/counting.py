"""Helpers of the tests of the counts kept as rows are written (test_counts.py,
tests/api/test_analytics_counts.py)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from app.storage.base import driver_connection


@contextlib.asynccontextmanager
async def transaction(db: Any) -> AsyncIterator[Any]:
    """A session whose statements run in one transaction. The storage functions write through the
    session's asyncpg connection, which SQLAlchemy has not begun a transaction on by then."""
    async with db() as session, (await driver_connection(session)).transaction():
        yield session


# Every served row of the range joined to the events that name it (before migration 0004).
_REFERENCE = """
WITH served AS (
    SELECT recommendation_id::text AS rid, strategy, (served_at AT TIME ZONE 'UTC')::date AS day
    FROM served_recommendations
    WHERE org_id = $1 AND served_at >= $2 AND served_at < $3
),
served_per_day AS (
    SELECT strategy, day, count(*) AS served FROM served GROUP BY strategy, day
),
outcomes AS (
    SELECT s.strategy, s.day,
           count(*) FILTER (WHERE e.event_family = 'exposure') AS exposures,
           count(*) FILTER (WHERE e.event_name = 'click') AS clicks,
           count(*) FILTER (WHERE e.event_name = 'purchase') AS conversions,
           coalesce(sum(
               CASE WHEN e.event_name = 'purchase' AND jsonb_typeof(e.context->'price') = 'number'
                    THEN (e.context->>'price')::numeric
                         * CASE WHEN jsonb_typeof(e.context->'quantity') = 'number'
                                THEN (e.context->>'quantity')::numeric ELSE 1 END
               END), 0) AS revenue
    FROM events e JOIN served s ON e.recommendation_id = s.rid
    WHERE e.org_id = $1 AND e.recommendation_id IS NOT NULL
    GROUP BY s.strategy, s.day
)
SELECT p.strategy, p.day, p.served,
       coalesce(o.exposures, 0) AS exposures, coalesce(o.clicks, 0) AS clicks,
       coalesce(o.conversions, 0) AS conversions, coalesce(o.revenue, 0) AS revenue
FROM served_per_day p LEFT JOIN outcomes o ON o.strategy = p.strategy AND o.day = p.day
ORDER BY p.strategy, p.day
"""


async def reference_outcomes(conn: Any, org_id: uuid.UUID, since: datetime, until: datetime) -> list[dict[str, Any]]:
    rows = await conn.fetch(_REFERENCE, org_id, since, until)
    return [
        {**{key: int(row[key]) for key in ("served", "exposures", "clicks", "conversions")},
         "strategy": row["strategy"], "day": row["day"], "revenue": float(row["revenue"])}
        for row in rows
    ]
