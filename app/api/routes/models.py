"""POST /v1/models/train and GET /v1/models/status (secret key; API.md section 6)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from app.api.deps import OperatorOrg, QueueDep, Session, json_body
from app.api.envelope import ok
from app.api.openapi import error_responses, json_body_schema
from app.errors import BadRequest
from app.schemas.envelope import Envelope, JobQueued
from app.schemas.validation import validate_object
from app.storage import counts, training_runs

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


class ModelChoice(BaseModel):
    model: str = Field(description="als | ease | knn | popular", examples=["als"])
    # Numbers, and one flag (ALS's `als_presence`: confidence from presence, not the decayed weight).
    params: dict[str, bool | float] = Field(examples=[{"factors": 64, "regularization": 0.05, "alpha": 20,
                                                        "iterations": 15, "als_presence": False}])
    ndcg_at_10: float | None = Field(default=None, description="its score on the holdout")


class CandidateScore(BaseModel):
    model: str
    params: dict[str, bool | float]
    ndcg_at_10: float
    std_error: float = Field(description="standard error of ndcg_at_10 over the holdout users")
    seconds: float = Field(description="fit and scoring time on the holdout")


class ModelQuality(BaseModel):
    """What the org's model search found (docs/operations.md, "Model quality")."""

    metric: str = Field(examples=["ndcg@10"])
    holdout_users: int = Field(description="users whose latest interaction was held out")
    chosen: ModelChoice = Field(description="the family and hyperparameters personalized is served by")
    candidates: list[CandidateScore]
    popular_ndcg_at_10: float | None
    personalized_vs_popular: float | None = Field(
        description="chosen ndcg@10 / popular's; null when the search had too little data"
    )
    searched: bool = Field(description="false: this version refitted the winner of searched_version")
    searched_version: str | None
    search_seconds: float | None = None
    search_reason: str | None = None
    complete: bool | None = Field(default=None, description="every candidate ran within the time budget")
    interactions: int | None = Field(default=None, description="interactions the search saw")
    note: str | None = None


class ModelStatus(BaseModel):
    model: LiveModel | None
    stored: StoredCounts
    queue_depth: int = Field(description="ingestion jobs of this org not yet persisted")
    training: bool
    last_error: str | None
    quality: ModelQuality | None = Field(description="the serving model's model search findings; null before any")


class TrainIn(BaseModel):
    """Optional body of POST /v1/models/train."""

    model_config = ConfigDict(extra="forbid")
    search: StrictBool = Field(
        default=False, description="run the model search in this train, even if the data did not grow enough"
    )


@router.post(
    "/train",
    status_code=202,
    response_model=Envelope[JobQueued],
    responses=error_responses(400, 401, 403, 429, 503),
    summary="Queue a retrain of this org's models now (coalesced)",
    openapi_extra={**json_body_schema(TrainIn, allow_array=False, required=False)},
)
async def train(org: OperatorOrg, queue: QueueDep, request: Request) -> Any:
    search = False
    if (await request.body()).strip():
        body = await json_body(request)
        if not isinstance(body, dict):
            raise BadRequest("Body must be a JSON object", error="body_not_object")
        search = validate_object(TrainIn, body).search
    job_id = await queue.enqueue_train(str(org.org_id), reason="api", search=search, asked=True)
    return ok({"job_id": job_id}, message="training queued" + (" with a model search" if search else ""),
              status_code=202)


@router.get(
    "/status",
    response_model=Envelope[ModelStatus],
    responses=error_responses(401, 403, 429, 503),
    summary="The live model, stored counts, queue depth, training state, last error",
)
async def status(org: OperatorOrg, session: Session, queue: QueueDep) -> Any:
    org_id = org.org_id
    success = await training_runs.latest(session, org_id, status="succeeded")
    last_run = await training_runs.latest(session, org_id)
    stored = await counts.stored_counts(session, org_id)  # kept as rows are written, not counted here
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
        "quality": success.quality if success is not None else None,
    }
    return ok(data)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
