"""GET /v1/strategies: the 14 strategies as the registry defines them (name, input, fallback, mode).

Public and static: what a client needs to build a strategy picker (the dashboard's playground does)
without copying the list. The registry is the one source; nothing here is restated.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.api.envelope import ok
from app.api.openapi import error_responses
from app.recommend import registry
from app.schemas.envelope import Envelope

router = APIRouter(prefix="/v1", tags=["recommendations"])


class StrategyInfo(BaseModel):
    name: str = Field(examples=["personalized"], description="canonical name, as sent in `strategy`")
    requires: str | None = Field(
        examples=["user_id"],
        description="user_id, context_item_id, 'context_item_id or filters.category', or null",
    )
    fallback: str | None = Field(description="the strategy that answers when this one has too little signal")
    mode: str = Field(examples=["behavioral"])
    summary: str
    default: bool = Field(description="used when a request names no strategy")


@router.get(
    "/strategies",
    operation_id="list_strategies",
    response_model=Envelope[list[StrategyInfo]],
    responses=error_responses(),
    summary="The 14 recommendation strategies: required input, fallback, mode, what each does",
)
async def list_strategies() -> Any:
    return ok(
        [
            {
                "name": s.name,
                "requires": s.requires,
                "fallback": s.fallback,
                "mode": s.mode,
                "summary": s.summary,
                "default": s.name == registry.DEFAULT_STRATEGY,
            }
            for s in registry.REGISTRY.values()
        ]
    )
