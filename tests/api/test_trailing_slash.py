"""A trailing slash never turns into a redirect: `POST /v1/recommend/` is `POST /v1/recommend`.

Starlette answers a path that only matches with the slash added or removed with a 307 whose
Location is built from the request's Host header (and a storefront's POST may not follow it).
Every route is served the same with and without the slash instead, and an unknown path is a
404 envelope either way; nothing answers a redirect or echoes the Host header.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jwt
import orjson
from fastapi import FastAPI
from sqlalchemy import select
from starlette.routing import BaseRoute, Mount

from app.main import PUBLISHABLE_PATHS, create_app
from app.settings import Settings
from app.storage.tables import Event
from tests.factories import OrgKeys

EVIL_HOST = "evil.example"
_PARAMETER = re.compile(r"{([^}:]+)(?::[^}]+)?}")


@contextlib.asynccontextmanager
async def _app(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    limits = {"rate_limit": "1000000/minute", "auth_rate_limit": "1000000/minute"}
    application = create_app(settings.model_copy(update=limits))
    async with application.router.lifespan_context(application):
        client_ip = f"10.77.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False, client=(client_ip, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield application, http


def _routes(routes: list[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route, also those of included routers (FastAPI keeps an included router whole; ours
    carry their prefix themselves, none is added when including them)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _routes(included.routes)
        else:
            yield route


def _operations(application: FastAPI) -> list[tuple[str, str]]:
    """(method, concrete path) of every route the app has, with sample values for its parameters."""
    samples = {"user_id": "someone", "key_id": str(uuid.uuid4()), "item_id": "sku-1"}
    found = []
    for route in _routes(application.router.routes):
        path = getattr(route, "path", "/")
        if isinstance(route, Mount) or path == "/":  # "/": the dashboard's own redirect, no slash variant
            continue
        path = _PARAMETER.sub(lambda m: samples.get(m.group(1), "x"), path)
        found.extend((method, path) for method in sorted(getattr(route, "methods", None) or {"GET"}))
    return found


def _session_token(settings: Settings, org: OrgKeys, account_id: str) -> str:
    """A fresh, valid session token per request (a sign-out of one cannot refuse the next)."""
    now = int(time.time())
    claims = {"sub": account_id, "org": org.org_id, "iat": now, "exp": now + 600, "typ": "session",
              "jti": uuid.uuid4().hex}
    return jwt.encode(claims, settings.resolved_jwt_secret(), algorithm="HS256")


async def _account_of(db: Any, org: OrgKeys) -> str:
    from app import security
    from app.storage import accounts

    async with db() as session, session.begin():
        account = await accounts.create_account(
            session, email=f"slash-{uuid.uuid4().hex[:10]}@example.com",
            password_hash=security.dummy_password_hash(), org_id=uuid.UUID(org.org_id),
        )
        return str(account.id)


def _comparable(response: httpx.Response) -> tuple[Any, ...]:
    """What must be the same with and without the slash: the status, the kind of body, and for
    an envelope its success and message."""
    media = response.headers.get("content-type", "").split(";")[0]
    if media == "application/json" and response.content:
        body = orjson.loads(response.content)
        if isinstance(body, dict) and "success" in body:
            return response.status_code, media, body["success"], body["message"]
    return response.status_code, media


async def test_every_route_answers_the_same_with_and_without_a_trailing_slash(
    settings: Settings, org: OrgKeys, db: Any
) -> None:
    account_id = await _account_of(db, org)
    async with _app(settings) as (application, http):
        operations = _operations(application)
        assert {("POST", "/v1/recommend"), ("POST", "/v1/ingest/events/ingest"), ("GET", "/v1/keys"),
                ("DELETE", "/v1/users/someone"), ("GET", "/readyz")} <= set(operations)
        for method, path in operations:
            key = org.pk if path in PUBLISHABLE_PATHS else org.sk
            answers = []
            for variant in (path.rstrip("/") or "/", path.rstrip("/") + "/"):
                headers = {**key, "Authorization": f"Bearer {_session_token(settings, org, account_id)}",
                           "Host": EVIL_HOST, "Content-Type": "application/json"}
                response = await http.request(method, variant, headers=headers, content=b"{}")
                assert not 300 <= response.status_code < 400, (method, variant, response.status_code)
                assert "location" not in response.headers, (method, variant)
                assert EVIL_HOST not in response.text, (method, variant)
                answers.append(_comparable(response))
            assert answers[0] == answers[1], (method, path, answers)


async def test_the_hot_routes_serve_with_the_slash(client: Any, org: OrgKeys, db: Any, drain: Any) -> None:
    response = await client.post("/v1/recommend/", json={"strategy": "popular"}, headers=org.pk)
    assert response.status_code == 200 and response.json()["data"]["strategy"] == "popular"
    view = {"user_id": "u", "event_family": "engagement", "event_name": "view", "item_id": "i"}
    response = await client.post("/v1/ingest/events/ingest/", json=view, headers=org.pk)
    assert response.status_code == 202 and response.json()["data"] == {"accepted": 1}
    # The browser's preflight for the slashed path gets the CORS answer of the endpoint too.
    preflight = await client.options("/v1/recommend/", headers={
        "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-api-key",
    })
    assert preflight.status_code == 200 and "access-control-allow-origin" in preflight.headers
    await drain()
    async with db() as session:
        stored = (await session.scalars(select(Event.item_id).where(Event.org_id == uuid.UUID(org.org_id)))).all()
    assert stored == ["i"]


async def test_unknown_paths_are_a_404_envelope_with_or_without_the_slash(client: Any) -> None:
    for path in ("/v1/nope", "/v1/nope/", "/v1/recommendations/", "/v1/ingest/", "/v1/recommend/x/"):
        response = await client.post(path, json={}, headers={"Host": EVIL_HOST})
        assert response.status_code == 404, path
        assert response.json() == {"success": False, "message": "Not found", "data": None, "error": "Not found"}


async def test_an_id_ending_in_a_slash_keeps_it(client: Any, org: OrgKeys, db: Any, drain: Any) -> None:
    """`DELETE /v1/users/a/` erases the user "a/" (ids may hold `/`), never the user "a"."""
    views = [{"user_id": u, "event_family": "engagement", "event_name": "view", "item_id": "i"} for u in ("a", "a/")]
    assert (await client.post("/v1/ingest/events/ingest", json=views, headers=org.pk)).status_code == 202
    await drain()
    response = await client.delete("/v1/users/a/", headers=org.sk)
    assert response.status_code == 202 and response.json()["data"]["user_id"] == "a/"
    await drain()
    async with db() as session:
        users = (await session.scalars(select(Event.user_id).where(Event.org_id == uuid.UUID(org.org_id)))).all()
    assert users == ["a"]


async def test_the_access_log_names_the_route_a_slashed_request_reached(
    app_with: Any, org: OrgKeys, caplog: Any
) -> None:
    with caplog.at_level(logging.INFO, logger="lehnz.access"):
        async with app_with(access_log=True) as client:
            response = await client.post("/v1/recommend/", json={"strategy": "popular"}, headers=org.pk)
    assert response.status_code == 200
    lines = [r for r in caplog.records if r.name == "lehnz.access"]
    assert [(r.route, r.status) for r in lines] == [("/v1/recommend", 200)]  # type: ignore[attr-defined]
