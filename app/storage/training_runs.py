"""Training run history: the newest succeeded run is the live model; the newest failure is last_error."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.tables import TrainingRun


async def latest(session: AsyncSession, org_id: uuid.UUID, *, status: str | None = None) -> TrainingRun | None:
    query = select(TrainingRun).where(TrainingRun.org_id == org_id)
    if status is not None:
        query = query.where(TrainingRun.status == status)
    return await session.scalar(query.order_by(TrainingRun.finished_at.desc(), TrainingRun.id.desc()).limit(1))
