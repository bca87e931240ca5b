"""GET /v1/org (settings and rate-limit usage) and GET /v1/overview (catalog, events, dead letters).

Operator reads: a secret key or a dashboard session of the org (deps.OperatorOrg). The overview
holds only what GET /v1/models/status does not: a client (the dashboard too) reads both.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request

from app.api.deps import OperatorOrg, QueueDep, Session, SettingsDep, State
from app.api.envelope import ok
from app.api.openapi import error_responses
from app.limit_syntax import parse_limit
from app.schemas.browse import OrgSettings, Overview
from app.schemas.envelope import Envelope
from app.storage import counts, orgs
from app.storage.tables import Account

router = APIRouter(prefix="/v1", tags=["operator"])

# Dead letters are one list for every org; an org's count reads at most this many entries.
_DEAD_LETTER_SCAN = 1000


@router.get(
    "/org",
    operation_id="get_org",
    response_model=Envelope[OrgSettings],
    responses=error_responses(401, 403, 429, 503),
    summary="The organisation: tenant id, domain, rate limit and its usage in the current window",
)
async def get_org(org: OperatorOrg, session: Session, settings: SettingsDep, request: Request) -> Any:
    row = await orgs.get_org(session, org.org_id)
    limit = row.rate_limit or settings.rate_limit
    item = parse_limit(limit)
    window = getattr(request.state, "rate_limit", None)  # this request's window, as counted by the limiter
    account = None
    if org.key_type == "session":
        found = await session.get(Account, org.pair_id)
        if found is not None:
            account = {"account_id": str(found.id), "email": found.email}
    data = {
        "org_id": str(row.id),
        "tenant_id": row.slug,
        "name": row.name,
        "domain": row.domain,
        "created_at": iso(row.created_at),
        "rate_limit": {
            "limit": limit,
            "source": "org" if row.rate_limit else "deployment",
            "requests": int(item.amount),
            "window_s": int(item.get_expiry()),
            "used": window.count if window is not None else None,
            "remaining": window.remaining if window is not None else None,
            "reset_s": window.reset_s if window is not None else None,
        },
        "account": account,
    }
    return ok(data)


@router.get(
    "/overview",
    operation_id="get_overview",
    response_model=Envelope[Overview],
    responses=error_responses(401, 403, 429, 503),
    summary="Catalog by status, events per hour (24 h) and per day (7 days), dead letters, the serving model",
)
async def get_overview(org: OperatorOrg, session: Session, queue: QueueDep, state: State) -> Any:
    now = datetime.now(UTC)
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    today = this_hour.replace(hour=0)
    hours = [this_hour - timedelta(hours=h) for h in range(23, -1, -1)]
    days = [today - timedelta(days=d) for d in range(6, -1, -1)]
    per_hour = await counts.events_per_hour(session, org.org_id, since=days[0], until=now)
    hourly: list[dict[str, Any]] = [{"hour": iso(h), "events": per_hour.get(h, 0)} for h in hours]
    per_day: dict[str, int] = {}
    for hour, count in per_hour.items():
        day = hour.astimezone(UTC).date().isoformat()
        per_day[day] = per_day.get(day, 0) + count
    daily: list[dict[str, Any]] = [
        {"day": d.date().isoformat(), "events": per_day.get(d.date().isoformat(), 0)} for d in days
    ]
    org_id = str(org.org_id)
    parked = await queue.dead_letters(limit=_DEAD_LETTER_SCAN)
    snapshot = state.models.peek(org_id) if state.models is not None else None
    data = {
        "catalog": (await counts.org_counts(session, org.org_id)).items_by_status(),
        "events": {
            "last_24h": sum(h["events"] for h in hourly),
            "last_7d": sum(d["events"] for d in daily),
            "hourly": hourly,
            "daily": daily,
        },
        "dead_letters": sum(
            1 for entry in parked if str((entry.get("kwargs") or {}).get("org_id")) == org_id
        ),
        "serving_model_version": snapshot.model_version if snapshot is not None else None,
    }
    return ok(data)


def iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
