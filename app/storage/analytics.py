"""Recommendation analytics: the served log joined to events that carry its recommendation_id."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.base import driver_connection

# Conversions are purchases (the event that completes a transaction); revenue is their
# context.price x context.quantity (quantity 1 when absent). Each event is attributed to the
# served recommendation it names, on the day that recommendation was served; ids that were
# never served to this org count for nothing.
_BY_STRATEGY_AND_DAY = """
WITH served AS (
    SELECT recommendation_id::text AS rid, strategy, (served_at AT TIME ZONE 'UTC')::date AS day
    FROM served_recommendations
    WHERE org_id = $1 AND served_at >= $2 AND served_at < $3
),
-- Counted per strategy and day before the join below: joining first sorted every served row
-- (1.5 s for 100k served in 30 days; half that this way, docs/benchmarks.md "Dashboard").
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


async def recommendation_outcomes(
    session: AsyncSession, org_id: uuid.UUID, *, since: datetime, until: datetime
) -> list[dict[str, Any]]:
    conn = await driver_connection(session)
    rows = await conn.fetch(_BY_STRATEGY_AND_DAY, org_id, since, until)
    return [
        {
            "strategy": row["strategy"],
            "day": row["day"],
            "served": int(row["served"]),
            "exposures": int(row["exposures"]),
            "clicks": int(row["clicks"]),
            "conversions": int(row["conversions"]),
            "revenue": float(row["revenue"]),
        }
        for row in rows
    ]
