"""POST /v1/recommend wire shapes (API.md section 5)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

# The same ids as on ingest (a string or an integer); logged with every served recommendation.
from app.schemas.validation import Id


def _not_a_boolean(value: Any) -> Any:
    # pydantic would read `true` as 1; a boolean is never a page size (filters refuse it too).
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")  # noqa: TRY004 - pydantic reports ValueError
    return value


_Count = Annotated[int, BeforeValidator(_not_a_boolean)]
MAX_FILTERS = 32


class RecommendIn(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {"strategy": "personalized", "user_id": "user_42", "limit": 10},
                {"strategy": "similar", "context_item_id": "prod_7", "filters": {"price": {"lt": 100}}},
                {"strategy": "category-popular", "filters": {"category": "shoes", "brand": ["Nike", "Adidas"]}},
            ]
        },
    )

    strategy: str | None = Field(default=None, max_length=64, description="one of the 14 strategies")
    user_id: Id | None = None
    context_item_id: Id | None = None
    # A storefront filters on a handful of attributes; every key costs a pass over the catalog.
    filters: dict[str, Any] | None = Field(default=None, max_length=MAX_FILTERS)
    limit: _Count = Field(default=20, ge=1, le=100)
    page: _Count = Field(default=1, ge=1, le=10_000)

    @field_validator("filters")
    @classmethod
    def _numeric_excluded_ids(cls, filters: dict[str, Any] | None) -> dict[str, Any] | None:
        """Integer entries of `exclude_item_ids` are item ids like any other (`123` is "123");
        anything else that is not a string is left for the filter compiler to refuse."""
        excluded = (filters or {}).get("exclude_item_ids")
        if not isinstance(excluded, list):
            return filters
        ids = [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in excluded]
        return {**(filters or {}), "exclude_item_ids": ids}


class RecommendedItem(BaseModel):
    item_id: str = Field(examples=["prod_7"])
    score: float = Field(ge=0, le=1, examples=[0.985])
    reason: str = Field(examples=["behavioral_match"])
    metadata: dict[str, Any] = Field(examples=[{"brand": "Sony"}])


class Pagination(BaseModel):
    page: int = Field(examples=[1])
    limit: int = Field(examples=[20])
    total_count: int = Field(examples=[48])
    has_next: bool = Field(examples=[True])


class RecommendOut(BaseModel):
    recommendation_id: str = Field(examples=["550e8400-e29b-41d4-a716-446655440000"])
    tenant_id: str = Field(examples=["glow-beauty-ng"])
    domain: str = Field(examples=["commerce"])
    strategy: str = Field(examples=["personalized"])
    mode: Literal["behavioral", "semantic", "hybrid", "popularity", "fallback"]
    results: list[RecommendedItem]
    recommended_items: list[str] = Field(examples=[["prod_7", "prod_3", "prod_22"]])
    pagination: Pagination
    latency_ms: float = Field(examples=[4.2])
    model_version: str | None = Field(examples=["20261126T104500Z-3fa9c1"])
