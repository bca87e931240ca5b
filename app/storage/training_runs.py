"""Training run history: the newest succeeded run is the live model; the newest failure is last_error."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.tables import Event, Item, TrainingRun, User


async def latest(session: AsyncSession, org_id: uuid.UUID, *, status: str | None = None) -> TrainingRun | None:
    query = select(TrainingRun).where(TrainingRun.org_id == org_id)
    if status is not None:
        query = query.where(TrainingRun.status == status)
    return await session.scalar(query.order_by(TrainingRun.finished_at.desc(), TrainingRun.id.desc()).limit(1))


async def stored_counts(session: AsyncSession, org_id: uuid.UUID) -> dict[str, int]:
    counts = {}
    for name, table in (("items", Item), ("users", User), ("events", Event)):
        counts[name] = int(
            await session.scalar(select(func.count()).select_from(table).where(table.org_id == org_id)) or 0
        )
    return counts
