"""Recommendation analytics: recommendations served per strategy and UTC day, with the outcomes of
the events that carry their recommendation_id.

Conversions are purchases (the event that completes a transaction); revenue is their
context.price x context.quantity (quantity 1 when absent). Each event is attributed to the served
recommendation it names, on the day that recommendation was served; ids that were never served to
this org count for nothing.

Whole hours of the range are read from the counts the database keeps as rows are written
(hourly_recommendation_counts, migration 0004), plus the outcomes still waiting in
unattributed_events; the partial hours at either end come from the served log and the events
themselves (an hour of rows at most). So a 30-day range reads ~720 rows per strategy, however
much was served (docs/benchmarks.md, "Dashboard").
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.base import driver_connection
from app.storage.counts import HOUR, floor_hour

# $1 org; [$2, $3) the whole hours; [$4, $5) and [$6, $7) the partial hours at the ends. The
# outcome definitions are the ones the triggers of migration 0004 count with.
_BY_STRATEGY_AND_DAY = """
WITH parts AS (
    SELECT strategy, (hour AT TIME ZONE 'UTC')::date AS day, served, exposures, clicks, conversions, revenue
    FROM hourly_recommendation_counts
    WHERE org_id = $1 AND hour >= $2 AND hour < $3
    UNION ALL
    SELECT s.strategy, (s.served_at AT TIME ZONE 'UTC')::date, 0, u.exposures, u.clicks, u.conversions, u.revenue
    FROM unattributed_events AS u
    JOIN served_recommendations AS s ON s.org_id = u.org_id AND s.recommendation_id = u.recommendation_id
    WHERE u.org_id = $1 AND s.served_at >= $2 AND s.served_at < $3
    UNION ALL
    SELECT strategy, (served_at AT TIME ZONE 'UTC')::date, 1, 0, 0, 0, 0
    FROM served_recommendations
    WHERE org_id = $1 AND ((served_at >= $4 AND served_at < $5) OR (served_at >= $6 AND served_at < $7))
    UNION ALL
    SELECT s.strategy, (s.served_at AT TIME ZONE 'UTC')::date, 0,
           (e.event_family = 'exposure')::int, (e.event_name = 'click')::int, (e.event_name = 'purchase')::int,
           CASE WHEN e.event_name = 'purchase' AND jsonb_typeof(e.context -> 'price') = 'number'
                THEN (e.context ->> 'price')::numeric
                     * CASE WHEN jsonb_typeof(e.context -> 'quantity') = 'number'
                            THEN (e.context ->> 'quantity')::numeric ELSE 1 END
                ELSE 0 END
    FROM served_recommendations AS s
    JOIN events AS e ON e.org_id = $1 AND e.recommendation_id = s.recommendation_id::text
    WHERE s.org_id = $1 AND ((s.served_at >= $4 AND s.served_at < $5) OR (s.served_at >= $6 AND s.served_at < $7))
      AND (e.event_family = 'exposure' OR e.event_name IN ('click', 'purchase'))
)
SELECT strategy, day, sum(served) AS served, sum(exposures) AS exposures, sum(clicks) AS clicks,
       sum(conversions) AS conversions, sum(revenue) AS revenue
FROM parts
GROUP BY strategy, day
HAVING sum(served) > 0
ORDER BY strategy, day
"""


async def recommendation_outcomes(
    session: AsyncSession, org_id: uuid.UUID, *, since: datetime, until: datetime
) -> list[dict[str, Any]]:
    """Per strategy and UTC day of [since, until): served, exposures, clicks, conversions, revenue."""
    first_whole = floor_hour(since) if since == floor_hour(since) else floor_hour(since) + HOUR
    last_whole = floor_hour(until)
    if first_whole >= last_whole:  # within one hour (or two partial ones): all of it from the rows
        whole, head, tail = (since, since), (since, until), (until, until)
    else:
        whole, head, tail = (first_whole, last_whole), (since, first_whole), (last_whole, until)
    conn = await driver_connection(session)
    rows = await conn.fetch(_BY_STRATEGY_AND_DAY, org_id, *whole, *head, *tail)
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
