"""Retention of the served-recommendation log (cron on the ingest worker).

Every /v1/recommend answer adds a row: at 100 requests/s that is 8.6M rows a day, so without a
limit the table outgrows everything else. Rows older than `LEHNZ_SERVED_RETENTION_DAYS` go, in
short batches (one transaction each, so ingest never waits behind a long delete) and within a
time budget per run; a backlog (after raising the limit, or a long outage) is worked off over
the following runs.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from app.storage import orgs, served
from workers.context import JobContext, worker_context

log = logging.getLogger("lehnz.worker.retention")

_BATCH_ROWS = 10_000


async def prune_served(ctx: JobContext, *, batch_rows: int = _BATCH_ROWS) -> int:
    """Delete served-log rows older than the retention period; returns how many went.

    Runs as an ingest job, so within the ingest job timeout: it stops starting batches after
    half of it (the cron runs every 10 minutes)."""
    shared = worker_context(ctx)
    settings = shared.settings
    days = settings.served_retention_days
    if days <= 0:
        return 0
    before = datetime.now(UTC) - timedelta(days=days)
    deadline = time.monotonic() + settings.ingest_job_timeout_s / 2
    sessions = shared.sessions
    async with sessions() as session:
        org_ids = await orgs.list_org_ids(session)
    deleted = 0
    for org_id in org_ids:
        while time.monotonic() < deadline:
            async with sessions() as session, session.begin():
                count = await served.delete_older(session, org_id, before, limit=batch_rows)
            deleted += count
            if count < batch_rows:
                break
    if deleted:
        log.info("deleted %d served-recommendation rows older than %d days", deleted, days)
    return deleted
