"""POST /v1/recommend (publishable key; or the dashboard's session cookie, whose answers are not logged)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastapi import APIRouter

from app import metrics
from app.api.deps import PublishableJson
from app.api.envelope import ok
from app.api.openapi import PUBLISHABLE_KEY, error_responses, json_body_schema
from app.api.state import AppState
from app.errors import BadRequest
from app.recommend import realtime
from app.recommend.answer import Tenant, answer
from app.recommend.realtime import Activity
from app.schemas.envelope import Envelope
from app.schemas.recommend import RecommendIn, RecommendOut
from app.schemas.validation import validate_object

router = APIRouter(tags=["recommendations"])
log = logging.getLogger("lehnz.recommend")

# Real-time state is an enhancement: if Redis is slow or away, answer without it.
_REALTIME_TIMEOUT_S = 0.25


@router.post(
    "/v1/recommend",
    response_model=Envelope[RecommendOut],
    responses=error_responses(400, 401, 403, 422, 429, 503),
    summary="Ranked items from one of the 14 strategies (publishable key)",
    openapi_extra={**json_body_schema(RecommendIn, allow_array=False), **PUBLISHABLE_KEY},
)
async def recommend(call: PublishableJson) -> Any:
    started = time.perf_counter()
    org, body, state = call.org, call.body, call.state
    if not isinstance(body, dict):
        raise BadRequest("Body must be a JSON object", error="body_not_object")
    request = validate_object(RecommendIn, body)
    assert state.models is not None
    org_id = str(org.org_id)
    data = await answer(
        request,
        tenant=Tenant(org_id, org.org_slug, org.org_domain),
        snapshot=await state.models.get(org_id),
        user_state=lambda org_id, user_id: _user_state(state, org_id, user_id),
        settings=state.settings,
        # The dashboard's playground and detail pages (a session, not a key) are a person trying
        # strategies, not a shopper: not logged, so analytics counts only what storefronts served.
        served_log=None if org.key_type == "session" else state.served_log,
        started=started,
    )
    return ok(data)


async def _user_state(state: AppState, org_id: str, user_id: str) -> tuple[str, list[Activity]]:
    """Redis's real-time state for the user; without it (down, slow) the trained model answers."""
    if state.realtime_breaker.open:
        metrics.REALTIME_UNAVAILABLE.inc()
        return user_id, []
    try:
        # asyncio.timeout, not wait_for: wait_for wraps the call in a task of its own per request.
        async with asyncio.timeout(_REALTIME_TIMEOUT_S):
            return await realtime.user_state(
                state.deadline_redis, org_id, user_id, limit=state.settings.recent_activity_len
            )
    except Exception as exc:  # noqa: BLE001 - degrade to the trained model only
        state.realtime_breaker.failed()
        metrics.REALTIME_UNAVAILABLE.inc()
        log.warning("real-time state unavailable (%s); answering from the trained model", type(exc).__name__)
        return user_id, []
