"""Counts the database keeps as rows are written: an org's items by status, users and events, and
its events per hour. Read in a few rows whatever the org's size (docs/benchmarks.md, "Dashboard").

Statement-level triggers (migration 0004) add every insert, update and delete of items, users,
events and served recommendations to the count tables (tables.py, "counts the database keeps"),
in the writer's own transaction: whatever writes the rows (the worker, erasure, retention,
`lehnz import`, a COPY, an org's deletion), the counts match them. Writers of one org never wait
for each other on a count; a key may have several rows, so every read sums.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.base import driver_connection

HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class OrgCounts:
    items_active: int = 0
    items_inactive: int = 0
    items_deleted: int = 0
    users: int = 0
    events: int = 0

    @property
    def items(self) -> int:
        return self.items_active + self.items_inactive + self.items_deleted

    def items_by_status(self) -> dict[str, int]:
        return {"active": self.items_active, "inactive": self.items_inactive, "deleted": self.items_deleted}


async def org_counts(session: AsyncSession, org_id: uuid.UUID) -> OrgCounts:
    conn = await driver_connection(session)
    row = await conn.fetchrow(
        "SELECT sum(items_active), sum(items_inactive), sum(items_deleted), sum(users), sum(events) "
        "FROM org_counts WHERE org_id = $1",
        org_id,
    )
    return OrgCounts(*(int(value or 0) for value in row))


async def stored_counts(session: AsyncSession, org_id: uuid.UUID) -> dict[str, int]:
    """Rows stored for the org: {items (any status), users (upserted), events}."""
    counts = await org_counts(session, org_id)
    return {"items": counts.items, "users": counts.users, "events": counts.events}


def floor_hour(moment: datetime) -> datetime:
    """The start of the UTC hour `moment` (timezone-aware) is in: the counts' buckets."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


async def events_per_hour(
    session: AsyncSession, org_id: uuid.UUID, *, since: datetime, until: datetime
) -> dict[datetime, int]:
    """Events by the (UTC) hour they happened in, over [since, until); `since` on an hour. The whole
    hours from the kept counts; the last, partial hour from the events themselves (an index range
    scan of at most an hour of events), so events stamped later than `until` are left out."""
    whole_until = max(since, floor_hour(until))
    conn = await driver_connection(session)
    rows = await conn.fetch(
        "SELECT hour, sum(events) FROM hourly_event_counts WHERE org_id = $1 AND hour >= $2 AND hour < $3 "
        "GROUP BY hour "
        "UNION ALL "
        "SELECT date_bin('1 hour', occurred_at, timestamptz '2000-01-01 00:00:00+00'), count(*) "
        "FROM events WHERE org_id = $1 AND occurred_at >= $3 AND occurred_at < $4 GROUP BY 1",
        org_id,
        since,
        whole_until,
        until,
    )
    return {row[0]: int(row[1]) for row in rows if row[1]}
