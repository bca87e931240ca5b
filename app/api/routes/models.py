"""POST /v1/models/train and GET /v1/models/status (secret key; API.md section 6)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.api.deps import QueueDep, SecretOrg, Session
from app.api.envelope import ok
from app.api.openapi import error_responses
from app.schemas.envelope import Envelope, JobQueued
from app.storage import training_runs

router = APIRouter(prefix="/v1/models", tags=["operator"])


class LiveModel(BaseModel):
    version: str = Field(examples=["20261126T104500Z-3fa9c1"])
    trained_at: str = Field(examples=["2026-11-26T10:45:00Z"])
    duration_ms: int
    items: int
    users: int
    interactions: int


class StoredCounts(BaseModel):
    items: int
    users: int
    events: int


class ModelStatus(BaseModel):
    model: LiveModel | None
    stored: StoredCounts
    queue_depth: int = Field(description="ingestion jobs of this org not yet persisted")
    training: bool
    last_error: str | None


@router.post(
    "/train",
    status_code=202,
    response_model=Envelope[JobQueued],
    responses=error_responses(401, 403, 429, 503),
    summary="Queue a retrain of this org's models now (coalesced)",
)
async def train(org: SecretOrg, queue: QueueDep) -> Any:
    job_id = await queue.enqueue_train(str(org.org_id), reason="api")
    return ok({"job_id": job_id}, message="training queued", status_code=202)


@router.get(
    "/status",
    response_model=Envelope[ModelStatus],
    responses=error_responses(401, 403, 429, 503),
    summary="The live model, stored counts, queue depth, training state, last error",
)
async def status(org: SecretOrg, session: Session, queue: QueueDep) -> Any:
    org_id = org.org_id
    success = await training_runs.latest(session, org_id, status="succeeded")
    last_run = await training_runs.latest(session, org_id)
    stored = await training_runs.stored_counts(session, org_id)
    model = None
    if success is not None:
        model = {
            "version": success.version,
            "trained_at": _iso(success.finished_at),
            "duration_ms": success.duration_ms,
            "items": success.items,
            "users": success.users,
            "interactions": success.interactions,
        }
    data = {
        "model": model,
        "stored": stored,
        "queue_depth": await queue.queue_depth(str(org_id)),
        "training": await queue.is_training(str(org_id)),
        "last_error": last_run.error if last_run is not None and last_run.status == "failed" else None,
    }
    return ok(data)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
