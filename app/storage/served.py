"""The served-recommendation log: what was recommended to whom, for attribution."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.base import driver_connection
from app.storage.tables import ServedRecommendation

_INSERT = """
INSERT INTO served_recommendations (org_id, recommendation_id, strategy, mode, user_id, context_item_id,
                                    item_ids, model_version, served_at)
SELECT u.org_id, u.recommendation_id, u.strategy, u.mode, u.user_id, u.context_item_id,
       ARRAY(SELECT jsonb_array_elements_text(u.item_ids::jsonb)), u.model_version, to_timestamp(u.served_at)
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::float8[])
     AS u(org_id, recommendation_id, strategy, mode, user_id, context_item_id, item_ids, model_version, served_at)
-- A batch mixes orgs: rows of an org deleted since they were served are left out, not the batch.
WHERE u.org_id IN (SELECT id FROM orgs)
ON CONFLICT (org_id, recommendation_id) DO NOTHING
"""


async def insert_served(session: Any, rows: list[dict[str, Any]]) -> None:
    import orjson

    conn = await driver_connection(session)
    await conn.execute(
        _INSERT,
        [r["org_id"] for r in rows],
        [r["recommendation_id"] for r in rows],
        [r["strategy"] for r in rows],
        [r["mode"] for r in rows],
        [r.get("user_id") for r in rows],
        [r.get("context_item_id") for r in rows],
        [orjson.dumps(r["item_ids"]).decode() for r in rows],
        [r.get("model_version") for r in rows],
        [r["served_at"] for r in rows],
    )


# One batch: the oldest rows of one org, found through ix_served_org_time, deleted by primary key.
_DELETE_OLDER = """
DELETE FROM served_recommendations
WHERE org_id = $1 AND recommendation_id IN (
    SELECT recommendation_id FROM served_recommendations
    WHERE org_id = $1 AND served_at < $2
    LIMIT $3
)
"""


async def delete_older(session: Any, org_id: Any, before: Any, *, limit: int) -> int:
    """Delete up to `limit` of the org's rows served before `before`; returns how many went."""
    conn = await driver_connection(session)
    status = await conn.execute(_DELETE_OLDER, org_id, before, limit)
    return int(status.split()[-1])  # "DELETE n"


async def forget_viewer(session: AsyncSession, org_id: uuid.UUID, user_ids: list[str], *, served_until: datetime) -> None:
    """What was recommended to these users until `served_until` stays counted in analytics, no
    longer tied to the person (an erasure); rows served later (they came back) keep theirs."""
    await session.execute(
        update(ServedRecommendation)
        .where(ServedRecommendation.org_id == org_id, ServedRecommendation.user_id.in_(user_ids),
               ServedRecommendation.served_at <= served_until)
        .values(user_id=None)
    )
