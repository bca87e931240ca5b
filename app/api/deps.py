"""Annotated dependency aliases: ask for what you need by type (STYLE.md rule 1)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.state import AppState
from app.errors import BadRequest, Unauthorized
from app.queue import IngestBatcher, Queue
from app.security import read_session_token
from app.settings import Settings
from app.storage import orgs
from app.storage.orgs import KeyOwner

_api_key = APIKeyHeader(name="X-API-KEY", auto_error=False, description="lehnz_pk_... or lehnz_sk_...")
_bearer = HTTPBearer(auto_error=False, description="session token from POST /auth/login")


# Dependencies are `async def` on purpose: FastAPI runs plain `def` ones in a worker thread,
# a thread hop per dependency per request.
async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.lehnz
    return state


State = Annotated[AppState, Depends(get_state)]


async def get_settings(state: State) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_queue(state: State) -> Queue:
    return state.queue


QueueDep = Annotated[Queue, Depends(get_queue)]


async def get_batcher(state: State) -> IngestBatcher:
    assert state.batcher is not None
    return state.batcher


BatcherDep = Annotated[IngestBatcher, Depends(get_batcher)]


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


async def secret_org(request: Request, state: State, key: Annotated[str | None, Depends(_api_key)]) -> KeyOwner:
    return await _org_for(request, state, key, "secret")


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


@dataclass(frozen=True, slots=True)
class PublishableCall:
    """A browser-facing request, authenticated, rate limited and parsed."""

    org: KeyOwner
    body: Any
    state: AppState


async def publishable_call(request: Request) -> PublishableCall:
    """The publishable key's org, the JSON body and the state in one dependency, for the two hot
    routes (recommend, events ingest): FastAPI 0.165 re-derives every dependency level's cache
    key and scopes on every request, which cost more CPU than ranking a `popular` answer
    (docs/benchmarks.md). Same checks in the same order as SecretOrg + JsonBody. The routes
    declare the key's security scheme themselves (openapi.PUBLISHABLE_KEY)."""
    state: AppState = request.app.state.lehnz
    org = await _org_for(request, state, request.headers.get("x-api-key"), "publishable")
    return PublishableCall(org=org, body=await json_body(request), state=state)


PublishableJson = Annotated[PublishableCall, Depends(publishable_call)]


@dataclass(frozen=True)
class AccountContext:
    account_id: uuid.UUID
    org_id: uuid.UUID


async def current_account(
    request: Request,
    state: State,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> AccountContext:
    """A dashboard session (Authorization: Bearer <token from /auth/login>), rate limited per org."""
    if bearer is None or bearer.scheme.lower() != "bearer":
        raise Unauthorized("Missing session token (Authorization: Bearer ...)")
    claims = read_session_token(bearer.credentials, secret=state.settings.resolved_jwt_secret())
    if claims is None:
        raise Unauthorized("Invalid or expired session token")
    context = AccountContext(uuid.UUID(claims["sub"]), uuid.UUID(claims["org"]))
    async with state.sessions() as session:
        org = await orgs.get_org(session, context.org_id)
    request.state.org_slug = org.slug
    if state.limiter is not None:
        owner = KeyOwner(org.id, org.slug, org.domain, org.rate_limit, "session", context.account_id, "")
        await state.limiter.hit_org(request, owner, state.settings)
    return context


CurrentAccount = Annotated[AccountContext, Depends(current_account)]


async def auth_ip_limit(request: Request, state: State) -> None:
    """/auth/*: LEHNZ_AUTH_RATE_LIMIT per client IP."""
    if state.limiter is not None:
        await state.limiter.hit_ip(request)


AuthIpLimit = Depends(auth_ip_limit)
