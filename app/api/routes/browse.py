"""Catalog and user browsing for operators (secret key or dashboard session; deps.OperatorOrg):

- GET /v1/items: search and page through the catalog (id or title), any status
- GET /v1/items/{item_id}: one item with its attributes and status
- GET /v1/users: search (id prefix) and page through every user the org knows
- GET /v1/users/{user_id}: a user with their persisted events, stitched aliases and the real-time
  activity the session strategies read

Similar and frequently-bought-together items, and a user's personalized results, are answers of
POST /v1/recommend; the dashboard asks that endpoint, so what it shows is what is served.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query

from app.api.deps import OperatorOrg, Session, SettingsDep, State
from app.api.envelope import ok
from app.api.openapi import error_responses
from app.api.routes import users as _users  # noqa: F401 - registers the any_text path convertor
from app.api.routes.org import iso
from app.errors import BadRequest, NotFound
from app.recommend import realtime
from app.schemas.browse import ItemOut, ItemPage, UserActivity, UserPage
from app.schemas.envelope import Envelope
from app.schemas.validation import MAX_ID_CHARS
from app.storage import browse, identity
from app.storage.browse import ItemRow, UserRow

router = APIRouter(prefix="/v1", tags=["operator"])

Limit = Annotated[int, Query(ge=1, le=100, description="rows per page, 1-100")]
After = Annotated[
    str | None, Query(min_length=1, max_length=MAX_ID_CHARS, description="next_after of the previous page")
]


@router.get(
    "/items",
    operation_id="list_items",
    response_model=Envelope[ItemPage],
    responses=error_responses(400, 401, 403, 429, 503),
    summary="Search and page through the catalog: by id or title, optionally one status",
)
async def list_items(
    org: OperatorOrg,
    session: Session,
    q: Annotated[
        str | None, Query(max_length=MAX_ID_CHARS, description="part of the id or the title")
    ] = None,
    status: Annotated[Literal["active", "inactive", "deleted"] | None, Query()] = None,
    after: After = None,
    limit: Limit = 20,
) -> Any:
    rows = await browse.search_items(
        session, org.org_id, query=_clean(q), status=status, after=_clean(after), limit=limit + 1
    )
    return ok({"items": [_item(r) for r in rows[:limit]], "pagination": _page(rows, after, limit, "item_id")})


@router.get(
    "/items/{item_id:any_text}",
    operation_id="get_item",
    response_model=Envelope[ItemOut],
    responses=error_responses(400, 401, 403, 404, 429, 503),
    summary="One catalog item: type, status, attributes, created and updated times",
)
async def get_item(
    org: OperatorOrg, session: Session, item_id: str = Path(min_length=1, max_length=MAX_ID_CHARS)
) -> Any:
    row = await browse.get_item(session, org.org_id, _clean(item_id) or "")
    if row is None:
        raise NotFound("No item with this id in your catalog")
    return ok(_item(row))


@router.get(
    "/users",
    operation_id="list_users",
    response_model=Envelope[UserPage],
    responses=error_responses(400, 401, 403, 429, 503),
    summary="Search (id prefix) and page through every user: upserted ones and those only seen in events",
)
async def list_users(
    org: OperatorOrg,
    session: Session,
    q: Annotated[str | None, Query(max_length=MAX_ID_CHARS, description="start of the user id")] = None,
    after: After = None,
    limit: Limit = 20,
) -> Any:
    rows = await browse.search_users(
        session, org.org_id, prefix=_clean(q) or "", after=_clean(after), limit=limit + 1
    )
    return ok({"users": [_user(r) for r in rows[:limit]], "pagination": _page(rows, after, limit, "user_id")})


@router.get(
    "/users/{user_id:any_text}",
    operation_id="get_user",
    response_model=Envelope[UserActivity],
    responses=error_responses(400, 401, 403, 429, 503),
    summary="A user's newest events, stitched aliases and real-time activity",
)
async def get_user(
    org: OperatorOrg,
    session: Session,
    state: State,
    settings: SettingsDep,
    user_id: str = Path(min_length=1, max_length=MAX_ID_CHARS),
    limit: Annotated[int, Query(ge=1, le=200, description="events, newest first")] = 50,
) -> Any:
    user_id = _clean(user_id) or ""
    org_id = str(org.org_id)
    # The same resolution and real-time read as POST /v1/recommend.
    canonical = await realtime.resolve_user(state.redis, org_id, user_id)
    recent = await realtime.read_recent(state.redis, org_id, canonical, limit=settings.recent_activity_len)
    aliases = sorted(await identity.aliases_of(session, org.org_id, canonical))
    events = await browse.user_events(session, org.org_id, [canonical, *aliases], limit=limit)
    data = {
        "user": _user(await browse.get_user(session, org.org_id, user_id)),
        "canonical_id": canonical,
        "aliases": aliases,
        "events": [
            {
                "event_id": e.event_id,
                "user_id": e.user_id,
                "event_family": e.event_family,
                "event_name": e.event_name,
                "item_id": e.item_id,
                "recommendation_id": e.recommendation_id,
                "context": e.context,
                "timestamp": iso(e.occurred_at),
                "received_at": iso(e.received_at),
            }
            for e in events
        ],
        "recent": [
            {
                "item_id": a.item_id,
                "event_name": a.event_name,
                "event_family": a.event_family,
                "timestamp": iso(_utc(a.timestamp)),
            }
            for a in recent
        ],
    }
    return ok(data)


def _clean(text: str | None) -> str | None:
    """Postgres text cannot hold NUL: 400, as for every other id on the wire."""
    if text is not None and "\x00" in text:
        raise BadRequest("Ids and searches must not contain NUL characters", error="nul_character")
    return text


def _page(rows: list[Any], after: str | None, limit: int, key: str) -> dict[str, Any]:
    has_next = len(rows) > limit
    return {
        "limit": limit,
        "after": after,
        "next_after": getattr(rows[limit - 1], key) if has_next else None,
        "has_next": has_next,
    }


def _item(row: ItemRow) -> dict[str, Any]:
    return {
        "item_id": row.item_id,
        "item_type": row.item_type,
        "status": row.status,
        "attributes": row.attributes,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


def _user(row: UserRow) -> dict[str, Any]:
    return {
        "user_id": row.user_id,
        "upserted": row.upserted,
        "status": row.status,
        "attributes": row.attributes,
        "created_at": iso(row.created_at) if row.created_at is not None else None,
        "events": row.events,
        "last_event_at": iso(row.last_event_at) if row.last_event_at is not None else None,
    }


def _utc(unix_s: float) -> datetime:
    return datetime.fromtimestamp(unix_s, UTC)
