"""Training run history: the newest succeeded run is the live model; the newest failure is last_error."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.tables import TrainingRun


async def latest(session: AsyncSession, org_id: uuid.UUID, *, status: str | None = None) -> TrainingRun | None:
    query = select(TrainingRun).where(TrainingRun.org_id == org_id)
    if status is not None:
        query = query.where(TrainingRun.status == status)
    return await session.scalar(query.order_by(TrainingRun.finished_at.desc(), TrainingRun.id.desc()).limit(1))


def add_run(
    session: AsyncSession, org_id: uuid.UUID, *, status: str, started: datetime, finished: datetime,
    summary: dict[str, Any], error: str | None,
) -> None:
    """A finished run (the worker's train job); `summary` is what the training child returned."""
    session.add(
        TrainingRun(
            org_id=org_id,
            status=status,
            version=summary.get("version"),
            started_at=started,
            finished_at=finished,
            duration_ms=int(summary.get("duration_ms") or (finished - started).total_seconds() * 1000),
            items=summary.get("items", 0),
            users=summary.get("users", 0),
            interactions=summary.get("interactions", 0),
            error=error,
            quality=summary.get("quality"),
        )
    )


async def last_success_by_org(session: AsyncSession) -> dict[uuid.UUID, datetime]:
    """When each org's newest model was trained (orgs without one are absent)."""
    rows = await session.execute(
        select(TrainingRun.org_id, func.max(TrainingRun.finished_at))
        .where(TrainingRun.status == "succeeded")
        .group_by(TrainingRun.org_id)
    )
    return {org_id: finished for org_id, finished in rows.all()}
