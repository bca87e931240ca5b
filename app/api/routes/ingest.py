"""POST /v1/ingest/{items/upsert, users/upsert, events/ingest}: validate all, enqueue once, 202."""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import APIRouter

from app import metrics
from app.api.deps import BatcherDep, JsonBody, PublishableJson, SecretOrg, SettingsDep
from app.api.envelope import ok
from app.api.openapi import PUBLISHABLE_KEY, error_responses, json_body_schema
from app.errors import BadRequest, PayloadTooLarge
from app.queue import IngestBatcher
from app.schemas.envelope import Accepted, Envelope
from app.schemas.ingest import EventIn, ItemIn, UserIn, new_event_ids
from app.schemas.validation import validate_batch
from app.settings import Settings

router = APIRouter(prefix="/v1/ingest", tags=["ingestion"])

_ERRORS = error_responses(400, 401, 403, 413, 429, 503)


def _as_records(body: Any, *, name: str, settings: Settings) -> tuple[list[Any], bool]:
    """One object or an array of them; arrays over the batch limit are 413."""
    if isinstance(body, dict):
        return [body], True
    if isinstance(body, list):
        if len(body) > settings.max_batch:
            raise PayloadTooLarge(
                f"Batch of {len(body)} {name} is over the limit of {settings.max_batch} records per request"
            )
        return body, False
    raise BadRequest(f"Body must be a JSON object or an array of {name}", error="body_not_object_or_array")


async def _accept(
    batcher: IngestBatcher, kind: str, org_id: uuid.UUID, payload: list[dict[str, Any]]
) -> Any:
    if payload:
        try:
            await batcher.submit(kind, str(org_id), payload)
        except Exception:
            metrics.INGEST_REJECTED.labels(kind, "503").inc()
            raise
    metrics.INGEST_ACCEPTED.labels(kind).inc(len(payload))
    return ok({"accepted": len(payload)}, message=f"{kind} accepted", status_code=202)


@router.post(
    "/items/upsert",
    status_code=202,
    response_model=Envelope[Accepted],
    responses=_ERRORS,
    summary="Upsert catalog items (secret key)",
    openapi_extra=json_body_schema(ItemIn),
)
async def upsert_items(org: SecretOrg, body: JsonBody, batcher: BatcherDep, settings: SettingsDep) -> Any:
    records, single = _as_records(body, name="items", settings=settings)
    items = validate_batch(ItemIn, records, name="items", single=single)
    received_at = time.time()
    payload = [item.to_record(received_at=received_at) for item in items]
    return await _accept(batcher, "items", org.org_id, payload)


@router.post(
    "/users/upsert",
    status_code=202,
    response_model=Envelope[Accepted],
    responses=_ERRORS,
    summary="Upsert users (secret key)",
    openapi_extra=json_body_schema(UserIn),
)
async def upsert_users(org: SecretOrg, body: JsonBody, batcher: BatcherDep, settings: SettingsDep) -> Any:
    records, single = _as_records(body, name="users", settings=settings)
    users = validate_batch(UserIn, records, name="users", single=single)
    received_at = time.time()
    payload = [user.to_record(received_at=received_at) for user in users]
    return await _accept(batcher, "users", org.org_id, payload)


@router.post(
    "/events/ingest",
    status_code=202,
    response_model=Envelope[Accepted],
    responses=_ERRORS,
    summary="Ingest interaction events (publishable key)",
    openapi_extra={**json_body_schema(EventIn), **PUBLISHABLE_KEY},
)
async def ingest_events(call: PublishableJson) -> Any:
    org, settings, batcher = call.org, call.state.settings, call.state.batcher
    assert batcher is not None
    records, single = _as_records(call.body, name="events", settings=settings)
    events = validate_batch(EventIn, records, name="events", single=single)
    received_at = time.time()
    # The server assigns event ids before queueing, so a retried job can never duplicate one.
    ids = new_event_ids(len(events))
    payload = [event.to_record(received_at=received_at, default_id=event_id) for event, event_id in zip(events, ids)]
    return await _accept(batcher, "events", org.org_id, payload)
