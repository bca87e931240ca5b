"""POST /v1/recommend (publishable key)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from fastapi import APIRouter

from app import metrics
from app.api.deps import PublishableJson
from app.api.envelope import ok
from app.api.openapi import PUBLISHABLE_KEY, error_responses, json_body_schema
from app.api.state import AppState
from app.errors import BadRequest, MissingStrategyInput
from app.recommend import realtime, registry, service
from app.recommend.filters import Filters, compile_filters
from app.recommend.ranking import RankContext
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
    strategy = registry.resolve(request.strategy)
    if strategy is None:
        known = ", ".join(registry.REGISTRY)
        raise BadRequest(f"Unknown strategy '{request.strategy}'; use one of: {known}", error="unknown_strategy")
    filters = compile_filters(request.filters)
    _require_inputs(strategy, request, filters)

    org_id = str(org.org_id)
    assert state.models is not None
    snapshot = await state.models.get(org_id)
    user_id, recent = await _user_state(state, org_id, request.user_id)
    catalog = snapshot.catalog
    context_item = catalog.lookup(request.context_item_id)
    category = filters.category
    if category is None and context_item is not None:
        value = (catalog.attributes[context_item] or {}).get("category")
        category = value if isinstance(value, str) else None
    ctx = RankContext(
        models=snapshot.models,
        catalog=catalog,
        settings=state.settings,
        now=time.time(),
        user_id=user_id,
        context_item=context_item,
        context_item_given=request.context_item_id is not None,
        category=category,
        recent=recent,
        memo=snapshot.memo,
    )
    page = service.rank(strategy, ctx, filters, page=request.page, limit=request.limit)

    recommendation_id = str(uuid.uuid4())
    item_ids = [str(catalog.item_ids[i]) for i in page.indices]
    results = [
        {"item_id": item_id, "score": score, "reason": reason, "metadata": catalog.attributes[i] or {}}
        for item_id, i, score, reason in zip(item_ids, page.indices, page.scores, page.reasons)
    ]
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    data = {
        "recommendation_id": recommendation_id,
        "tenant_id": org.org_slug,
        "domain": org.org_domain,
        "strategy": strategy.name,
        "mode": page.mode,
        "results": results,
        "recommended_items": item_ids,
        "pagination": {
            "page": request.page,
            "limit": request.limit,
            "total_count": page.total_count,
            "has_next": page.total_count > request.page * request.limit,
        },
        "latency_ms": latency_ms,
        "model_version": snapshot.model_version,
    }
    if state.served_log is not None:
        state.served_log.add(
            {
                "org_id": org_id,
                "recommendation_id": recommendation_id,
                "strategy": strategy.name,
                "mode": page.mode,
                "user_id": request.user_id,
                "context_item_id": request.context_item_id,
                "item_ids": item_ids,
                "model_version": snapshot.model_version,
                "served_at": time.time(),
            }
        )
    served, fallback, latency = metrics.recommend_series(strategy.name)
    served.inc()
    if page.mode == "fallback":
        fallback.inc()
    latency.observe(latency_ms / 1000)
    return ok(data)


def _require_inputs(strategy: registry.Strategy, request: RecommendIn, filters: Filters) -> None:
    missing = None
    if strategy.requires == registry.USER and request.user_id is None:
        missing = "user_id"
    elif strategy.requires == registry.ITEM and request.context_item_id is None:
        missing = "context_item_id"
    elif strategy.requires == registry.ITEM_OR_CATEGORY and request.context_item_id is None and not filters.category:
        missing = "context_item_id or filters.category"
    if missing:
        raise MissingStrategyInput(f"Strategy '{strategy.name}' requires {missing}", error=[
            {"field": missing.split(" ")[0], "issue": f"required by strategy {strategy.name}"}
        ])


async def _user_state(state: AppState, org_id: str, user_id: str | None) -> tuple[str | None, list[Activity]]:
    if user_id is None:
        return user_id, []
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
