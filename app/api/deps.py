"""Annotated dependency aliases: ask for what you need by type (STYLE.md rule 1)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.state import AppState
from app.errors import BadRequest
from app.queue import Queue
from app.settings import Settings
from app.storage.orgs import KeyOwner

_api_key = APIKeyHeader(name="X-API-KEY", auto_error=False, description="lehnz_pk_... or lehnz_sk_...")


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.lehnz
    return state


State = Annotated[AppState, Depends(get_state)]


def get_settings(state: State) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_queue(state: State) -> Queue:
    return state.queue


QueueDep = Annotated[Queue, Depends(get_queue)]


async def get_session(state: State) -> AsyncIterator[AsyncSession]:
    # Routes open `async with session.begin()` themselves (the caller owns the transaction).
    async with state.sessions() as session:
        yield session


Session = Annotated[AsyncSession, Depends(get_session)]


async def _org_for(request: Request, state: AppState, key: str | None, key_type: str) -> KeyOwner:
    owner = await state.keys.authenticate(key, required_type=key_type)
    request.state.org_slug = owner.org_slug
    if state.limiter is not None:
        await state.limiter.hit_org(request, owner, state.settings)
    return owner


async def publishable_org(
    request: Request, state: State, key: Annotated[str | None, Depends(_api_key)]
) -> KeyOwner:
    return await _org_for(request, state, key, "publishable")


async def secret_org(request: Request, state: State, key: Annotated[str | None, Depends(_api_key)]) -> KeyOwner:
    return await _org_for(request, state, key, "secret")


PublishableOrg = Annotated[KeyOwner, Depends(publishable_org)]
SecretOrg = Annotated[KeyOwner, Depends(secret_org)]

_JSON_TYPES = ("application/json",)


async def json_body(request: Request) -> Any:
    """The body as JSON: 400 for a wrong Content-Type or malformed JSON (never FastAPI's 422)."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type not in _JSON_TYPES and not media_type.endswith("+json"):
        raise BadRequest(
            f"Content-Type must be application/json (got '{media_type or 'none'}')",
            error="unsupported_content_type",
        )
    raw = await request.body()
    if not raw.strip():
        raise BadRequest("Request body is empty; send a JSON object or array", error="empty_body")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Malformed JSON: {exc}", error="malformed_json") from None


JsonBody = Annotated[Any, Depends(json_body)]
