"""Retention of the served-recommendation log: old rows go in batches, recent ones and other
settings' worth of history stay."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import select

from app.storage import served
from app.storage.tables import ServedRecommendation
from tests.factories import OrgKeys
from workers import retention
from workers.main import close_context, open_context

DAY_S = 86_400.0


def _row(org: OrgKeys, age_days: float) -> dict[str, Any]:
    return {"org_id": org.org_id, "recommendation_id": str(uuid.uuid4()), "strategy": "popular",
            "mode": "popularity", "user_id": "u", "context_item_id": None, "item_ids": ["a"],
            "model_version": None, "served_at": time.time() - age_days * DAY_S}


async def _ages(db: Any, org: OrgKeys) -> list[int]:
    async with db() as session:
        times = await session.scalars(select(ServedRecommendation.served_at).where(
            ServedRecommendation.org_id == uuid.UUID(org.org_id)))
        return sorted(round((time.time() - t.timestamp()) / DAY_S) for t in times)


async def _prune(settings: Any, **overrides: Any) -> int:
    ctx, _, _ = await open_context(settings.model_copy(update=overrides))
    try:
        return await retention.prune_served(ctx, batch_rows=2)
    finally:
        await close_context(ctx)


async def test_rows_older_than_the_retention_go_in_batches_and_the_rest_stays(
    org: OrgKeys, other_org: OrgKeys, settings: Any, db: Any
) -> None:
    ages = [400, 200, 200, 181, 179, 30, 0]  # 4 old rows: batches of 2 must go on past the first
    async with db() as session, session.begin():
        await served.insert_served(session, [_row(org, a) for a in ages] + [_row(other_org, a) for a in (365, 1)])

    assert await _prune(settings, served_retention_days=0) == 0  # 0 keeps everything
    assert await _ages(db, org) == sorted(ages)

    deleted = await _prune(settings, served_retention_days=180)
    assert deleted >= 5  # other tests' orgs may have old rows too; never fewer than ours
    assert await _ages(db, org) == [0, 30, 179]
    assert await _ages(db, other_org) == [1]


async def test_the_ingest_worker_prunes_every_ten_minutes(settings: Any) -> None:
    # async: arq's Worker takes the running event loop (a sync test would make it open one and
    # leave it unclosed).
    from workers.main import build_workers

    ingest, _ = build_workers(settings, {}, None, burst=False)
    [job] = [c for c in ingest.cron_jobs if c.name == "prune_served"]
    assert job.minute == set(range(3, 60, 10)) and job.unique
    # arq keeps a crashed job "in progress" for the worker's longest timeout: the pruning must
    # not stretch how long accepted events wait after a worker is killed.
    assert ingest.in_progress_timeout_s == settings.ingest_job_timeout_s + 10
