"""GET /v1/analytics/recommendations (secret key): outcomes of served recommendations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from app.api.deps import OperatorOrg, Session
from app.api.envelope import ok
from app.api.openapi import error_responses
from app.errors import BadRequest
from app.schemas.envelope import Envelope
from app.storage import analytics

router = APIRouter(prefix="/v1/analytics", tags=["operator"])

_DEFAULT_WINDOW = timedelta(days=30)
_COUNTS = ("served", "exposures", "clicks", "conversions")


class Outcomes(BaseModel):
    served: int = Field(description="recommendations served")
    exposures: int = Field(description="exposure-family events carrying their recommendation_id")
    clicks: int = Field(description="click events carrying their recommendation_id")
    conversions: int = Field(description="purchase events carrying their recommendation_id")
    ctr: float | None = Field(description="clicks / exposures (null without exposures)")
    conversion_rate: float | None = Field(description="conversions / clicks (null without clicks)")
    revenue: float = Field(description="sum of context.price x context.quantity of those purchases")


class DayOutcomes(Outcomes):
    day: str = Field(examples=["2026-11-26"])


class StrategyOutcomes(Outcomes):
    strategy: str = Field(examples=["personalized"])
    days: list[DayOutcomes]


class RecommendationAnalytics(BaseModel):
    since: str
    until: str
    strategies: list[StrategyOutcomes]
    totals: Outcomes


@router.get(
    "/recommendations",
    response_model=Envelope[RecommendationAnalytics],
    responses=error_responses(400, 401, 403, 429, 503),
    summary="Served, exposures, clicks, conversions, CTR, conversion rate and revenue per strategy and day",
)
async def recommendation_analytics(
    org: OperatorOrg,
    session: Session,
    since: Annotated[datetime | None, Query(description="ISO 8601; default 30 days ago")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601; default now")] = None,
) -> Any:
    until_at = _aware(until) if until else datetime.now(UTC)
    since_at = _aware(since) if since else until_at - _DEFAULT_WINDOW
    if since_at >= until_at:
        raise BadRequest("since must be before until", error=[{"field": "since", "issue": "not before until"}])
    rows = await analytics.recommendation_outcomes(session, org.org_id, since=since_at, until=until_at)
    by_strategy: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_strategy.setdefault(row["strategy"], []).append(row)
    strategies = [
        {"strategy": name, **_rates(_sum(days)), "days": [{"day": d["day"].isoformat(), **_rates(d)} for d in days]}
        for name, days in sorted(by_strategy.items())
    ]
    data = {
        "since": since_at.isoformat(),
        "until": until_at.isoformat(),
        "strategies": strategies,
        "totals": _rates(_sum(rows)),
    }
    return ok(data)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _sum(rows: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {key: sum(r[key] for r in rows) for key in _COUNTS}
    total["revenue"] = sum(r["revenue"] for r in rows)
    return total


def _rates(counts: dict[str, Any]) -> dict[str, Any]:
    return {
        **{key: counts[key] for key in _COUNTS},
        "ctr": round(counts["clicks"] / counts["exposures"], 6) if counts["exposures"] else None,
        "conversion_rate": round(counts["conversions"] / counts["clicks"], 6) if counts["clicks"] else None,
        "revenue": round(float(counts["revenue"]), 2),
    }
