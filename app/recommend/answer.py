"""The product path of POST /v1/recommend: a validated request and an org in, the response data out.

The route only parses the body and wraps the envelope; `lehnz eval` and the dashboard call this
same function, so what is measured is what is served: the same input checks, the same category
rule, the same real-time state, the same clock, the same ranking and the same response.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from app import metrics
from app.errors import BadRequest, MissingStrategyInput
from app.recommend import registry, service
from app.recommend.catalog import COLUMNS_AT_LOAD
from app.recommend.filters import Filters, compile_filters
from app.recommend.model_cache import OrgSnapshot
from app.recommend.ranking import RankContext
from app.recommend.realtime import Activity
from app.recommend.served_log import ServedLog
from app.schemas.recommend import RecommendIn
from app.settings import Settings

# (org id, user id) -> (canonical user id, recent activity newest first): Redis for the api.
UserState = Callable[[str, str], Awaitable[tuple[str, list[Activity]]]]


@dataclass(frozen=True)
class Tenant:
    """Who is asking: what the response names (tenant_id, domain) and whose data it ranks."""

    org_id: str
    slug: str
    domain: str


async def answer(
    request: RecommendIn,
    *,
    tenant: Tenant,
    snapshot: OrgSnapshot,
    user_state: UserState,
    settings: Settings,
    served_log: ServedLog | None = None,
    now: float | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """The `data` of a POST /v1/recommend response. Raises BadRequest (unknown strategy, bad
    filters) and MissingStrategyInput (422). `now`: the clock the strategies rank at (trending,
    buy-again, fresh activity); `started`: when the request arrived (for latency_ms)."""
    started = time.perf_counter() if started is None else started
    strategy = registry.resolve(request.strategy)
    if strategy is None:
        known = ", ".join(registry.REGISTRY)
        raise BadRequest(f"Unknown strategy '{request.strategy}'; use one of: {known}", error="unknown_strategy")
    filters = compile_filters(request.filters)
    _require_inputs(strategy, request, filters)

    user_id, recent = (request.user_id, []) if request.user_id is None else await user_state(
        tenant.org_id, request.user_id
    )
    catalog = snapshot.catalog
    # A filter column is built from every item's attributes the first time a key is asked for
    # (seconds at a million items): in a worker thread, so the event loop serves other requests
    # meanwhile. The columns every request may read are built at load (COLUMNS_AT_LOAD).
    missing = catalog.missing_columns([*filters.attribute_keys, *COLUMNS_AT_LOAD])
    if missing:
        await asyncio.to_thread(catalog.with_columns, missing)
    context_item = catalog.lookup(request.context_item_id)
    category = filters.category
    if category is None and context_item is not None:
        value = (catalog.attributes[context_item] or {}).get("category")
        category = value if isinstance(value, str) else None
    ctx = RankContext(
        models=snapshot.models,
        catalog=catalog,
        settings=settings,
        now=time.time() if now is None else now,
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
        "tenant_id": tenant.slug,
        "domain": tenant.domain,
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
    if served_log is not None:  # so that later events carrying the recommendation_id are attributed
        served_log.add(
            {
                "org_id": tenant.org_id,
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
    return data


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
