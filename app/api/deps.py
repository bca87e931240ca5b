"""Annotated dependency aliases: ask for what you need by type (STYLE.md rule 1)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.api import sessions
from app.api.state import AppState
from app.errors import BadRequest, Unauthorized
from app.queue import IngestBatcher, Queue
from app.security import read_session_token
from app.settings import Settings
from app.storage.orgs import KeyOwner

_api_key = APIKeyHeader(name="X-API-KEY", auto_error=False, description="lehnz_pk_... or lehnz_sk_...")
_bearer = HTTPBearer(auto_error=False, description="session token from POST /auth/login")
_session_cookie = APIKeyCookie(
    name=sessions.SESSION_COOKIE,
    scheme_name="SessionCookie",
    auto_error=False,
    description="dashboard session (POST /auth/login with \"session\": \"cookie\"); state-changing requests "
    f"also need the {sessions.CSRF_HEADER} header",
)


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
    if state.key_usage is not None:
        state.key_usage.touch(owner.org_id, owner.pair_id)
    if state.limiter is not None:
        await state.limiter.hit_org(request, owner, state.settings)
    return owner


async def secret_org(request: Request, state: State, key: Annotated[str | None, Depends(_api_key)]) -> KeyOwner:
    return await _org_for(request, state, key, "secret")


SecretOrg = Annotated[KeyOwner, Depends(secret_org)]


async def operator_org(
    request: Request, state: State, key: Annotated[str | None, Depends(_api_key)]
) -> KeyOwner:
    """Operator endpoints the dashboard reads: a secret key, or (when no X-API-KEY is sent) the dashboard's
    session cookie of that org, rate limited like the org's keys. A key is always held to its type, and a
    bearer session token is still no API key. The cookie is read here, not declared as a security scheme:
    API clients use keys (docs/dashboard.md)."""
    cookie = request.cookies.get(sessions.SESSION_COOKIE) if key is None else None
    if cookie is None:
        return await _org_for(request, state, key, "secret")
    return (await _session(request, state, None, cookie)).owner


OperatorOrg = Annotated[KeyOwner, Depends(operator_org)]

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


# Publishable endpoints that also take the dashboard's session cookie (when no X-API-KEY is sent):
# the playground.
SESSION_PUBLISHABLE_PATHS = frozenset({"/v1/recommend"})


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
    key = request.headers.get("x-api-key")
    cookie = request.cookies.get(sessions.SESSION_COOKIE) if key is None else None
    if cookie is not None and request.scope["path"] in SESSION_PUBLISHABLE_PATHS:
        # The dashboard's playground: its own org's session cookie (CSRF-checked); a key is never
        # accepted for the wrong type.
        org = (await _session(request, state, None, cookie)).owner
    else:
        org = await _org_for(request, state, key, "publishable")
    return PublishableCall(org=org, body=await json_body(request), state=state)


PublishableJson = Annotated[PublishableCall, Depends(publishable_call)]


@dataclass(frozen=True)
class AccountContext:
    account_id: uuid.UUID
    org_id: uuid.UUID
    # The org as the rate limiter and the operator endpoints see it (key_type "session").
    owner: KeyOwner
    token: str = ""
    expires_at: float = 0.0


async def _session(
    request: Request,
    state: AppState,
    bearer: HTTPAuthorizationCredentials | None,
    cookie: str | None,
) -> AccountContext:
    """A dashboard session: `Authorization: Bearer <token>`, or the HttpOnly cookie (then state-changing
    requests need the CSRF header). Signed-out tokens are refused; rate limited per org."""
    secret = state.settings.resolved_jwt_secret()
    if bearer is not None:
        if bearer.scheme.lower() != "bearer":
            raise Unauthorized("Missing session token (Authorization: Bearer ...)")
        token = bearer.credentials
    elif cookie:
        token = cookie
    else:
        raise Unauthorized("Missing session token (Authorization: Bearer ... or the session cookie)")
    context = await _session_account(request, state, token)
    if bearer is None:
        sessions.check_csrf(request, token, secret=secret)
    if await sessions.is_signed_out(state.redis, token):
        raise Unauthorized("This session was signed out; sign in again")
    if state.limiter is not None:
        await state.limiter.hit_org(request, context.owner, state.settings)
    return context


async def _session_account(request: Request, state: AppState, token: str) -> AccountContext:
    """The token's account and org (signature, expiry and claims checked)."""
    claims = read_session_token(token, secret=state.settings.resolved_jwt_secret())
    if claims is None:
        raise Unauthorized("Invalid or expired session token")
    # 401 unless the claims name an account that still exists and owns the org (cached like keys).
    owner = await state.keys.session_owner(claims)
    request.state.org_slug = owner.org_slug
    account_id = owner.pair_id  # a session's owner carries its account id where a key's has its pair
    return AccountContext(account_id, owner.org_id, owner=owner, token=token, expires_at=float(claims["exp"]))


async def current_account(
    request: Request,
    state: State,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_session_cookie)],
) -> AccountContext:
    """A dashboard session (Authorization: Bearer <token from /auth/login>, or the session cookie with
    the CSRF header on state-changing requests), rate limited per org."""
    return await _session(request, state, bearer, cookie)


CurrentAccount = Annotated[AccountContext, Depends(current_account)]


async def auth_ip_limit(request: Request, state: State) -> None:
    """/auth/*: LEHNZ_AUTH_RATE_LIMIT per client IP."""
    if state.limiter is not None:
        await state.limiter.hit_ip(request)


AuthIpLimit = Depends(auth_ip_limit)
