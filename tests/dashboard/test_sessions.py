"""The dashboard's cookie session (app/api/sessions.py): cookie flags, CSRF, sign-out, expiry, limits,
and how a session reaches recommend and the operator reads without loosening API-key types."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from http.cookies import SimpleCookie
from typing import Any

from fastapi import FastAPI

from app.api import sessions
from tests.dashboard.conftest import PASSWORD, client_for, sign_up
from tests.factories import event, item
from tests.waiting import eventually


def _set_cookies(response: Any) -> dict[str, str]:
    """name -> the raw Set-Cookie header of that cookie."""
    found = {}
    for header in response.headers.get_list("set-cookie"):
        name = header.split("=", 1)[0]
        found[name] = header
    return found


async def test_cookie_login_sets_an_httponly_strict_session_cookie_and_returns_no_token(
    dashboard_app: FastAPI,
) -> None:
    async with client_for(dashboard_app) as http:
        account = await sign_up(http)
        login = await http.post(
            "/auth/login", json={"email": account.email, "password": PASSWORD, "session": "cookie"}
        )
    assert login.status_code == 200
    body = login.json()["data"]
    assert body["token"] is None and body["token_type"] == "cookie"
    ttl = dashboard_app.state.lehnz.settings.jwt_ttl_s
    assert body["expires_in"] == ttl
    cookies = _set_cookies(login)
    session_cookie = cookies[sessions.SESSION_COOKIE].lower()
    assert "httponly" in session_cookie and "samesite=strict" in session_cookie
    assert "path=/" in session_cookie and f"max-age={ttl}" in session_cookie
    assert (
        "secure" not in session_cookie
    )  # plain http (a local `lehnz serve`): a Secure cookie would be dropped
    csrf_cookie = cookies[sessions.CSRF_COOKIE].lower()
    assert "httponly" not in csrf_cookie and "samesite=strict" in csrf_cookie
    parsed = SimpleCookie()
    parsed.load(cookies[sessions.CSRF_COOKIE])
    assert parsed[sessions.CSRF_COOKIE].value == body["csrf_token"]
    # The bearer login is unchanged: the token in the body, no cookie.
    async with client_for(dashboard_app) as http:
        bearer = await http.post("/auth/login", json={"email": account.email, "password": PASSWORD})
    assert bearer.json()["data"]["token"] and bearer.json()["data"]["token_type"] == "bearer"
    assert not bearer.headers.get_list("set-cookie")


async def test_the_session_cookie_is_secure_over_https(dashboard_app: FastAPI) -> None:
    async with client_for(dashboard_app, base_url="https://testserver") as http:
        account = await sign_up(http)
        login = await http.post(
            "/auth/login", json={"email": account.email, "password": PASSWORD, "session": "cookie"}
        )
    for header in _set_cookies(login).values():
        assert "; secure" in header.lower()


async def test_cookie_sessions_read_freely_but_change_state_only_with_the_csrf_token(signed_in: Any) -> None:
    async with signed_in() as account:
        http = account.http
        assert (await http.get("/v1/keys")).status_code == 200

        for headers in ({}, {"X-CSRF-Token": "forged"}, {"X-CSRF-Token": account.csrf + "x"}):
            refused = await http.post("/v1/keys", headers=headers)
            assert refused.status_code == 403, refused.text
            assert refused.json()["error"] == "csrf_token_missing_or_invalid"
            assert (await http.delete(f"/v1/keys/{account.key_id}", headers=headers)).status_code == 403
            assert (await http.post("/v1/models/train", headers=headers)).status_code == 403
        listed = (await http.get("/v1/keys")).json()["data"]
        assert len(listed) == 1 and listed[0]["revoked_at"] is None  # nothing was created or revoked

        created = await http.post("/v1/keys", headers=account.csrf_header)
        assert created.status_code == 201
        assert (await http.post("/v1/models/train", headers=account.csrf_header)).status_code == 202

        # A bearer client needs no CSRF token: a browser never sends Authorization on its own.
        token = (await http.post("/auth/login", json={"email": account.email, "password": PASSWORD})).json()[
            "data"
        ]
        http.cookies.clear()
        bearer = {"Authorization": f"Bearer {token['token']}"}
        assert (await http.post("/v1/keys", headers=bearer)).status_code == 201


async def test_sign_out_refuses_the_token_afterwards_wherever_it_was_copied(signed_in: Any) -> None:
    async with signed_in() as account:
        http = account.http
        token = http.cookies[sessions.SESSION_COOKIE]
        other = (await http.post("/auth/login", json={"email": account.email, "password": PASSWORD})).json()[
            "data"
        ]

        assert (await http.post("/auth/logout")).status_code == 403  # the cookie alone cannot sign out (CSRF)
        assert (await http.get("/v1/org")).status_code == 200

        out = await http.post("/auth/logout", headers=account.csrf_header)
        assert out.status_code == 200 and out.json()["data"] == {"signed_out": True}
        cleared = _set_cookies(out)
        assert "max-age=0" in cleared[sessions.SESSION_COOKIE].lower()
        assert "max-age=0" in cleared[sessions.CSRF_COOKIE].lower()
        assert sessions.SESSION_COOKIE not in http.cookies

        # The old token, put back by hand (a copied cookie), is refused on every kind of endpoint.
        http.cookies.set(sessions.SESSION_COOKIE, token)
        for method, path in (("GET", "/v1/org"), ("GET", "/v1/keys"), ("GET", "/v1/models/status")):
            refused = await http.request(method, path)
            assert refused.status_code == 401, (path, refused.text)
        recommend = await http.post(
            "/v1/recommend", json={"strategy": "popular"}, headers=account.csrf_header
        )
        assert recommend.status_code == 401
        http.cookies.clear()
        assert (await http.get("/v1/keys", headers={"Authorization": f"Bearer {token}"})).status_code == 401

        # Signing out ends that session only: another sign-in of the account still works, and a
        # bearer token can sign itself out too.
        bearer = {"Authorization": f"Bearer {other['token']}"}
        assert (await http.get("/v1/keys", headers=bearer)).status_code == 200
        assert (await http.post("/auth/logout", headers=bearer)).status_code == 200
        assert (await http.get("/v1/keys", headers=bearer)).status_code == 401


async def test_a_session_expires_after_the_configured_lifetime(app_with: Any) -> None:
    async with app_with(jwt_ttl_s=3, auth_rate_limit="1000/minute") as http:
        account = await sign_up(http)
        login = await http.post(
            "/auth/login", json={"email": account.email, "password": PASSWORD, "session": "cookie"}
        )
        assert "max-age=3" in _set_cookies(login)[sessions.SESSION_COOKIE].lower()
        token = login.cookies[sessions.SESSION_COOKIE]
        http.cookies.clear()
        # Sent by hand: the cookie's Max-Age ends with the token, but a copied token must be refused too.
        cookie = {"Cookie": f"{sessions.SESSION_COOKIE}={token}"}
        assert (await http.get("/v1/org", headers=cookie)).status_code == 200

        async def refused() -> bool:
            response = await http.get("/v1/org", headers=cookie)
            return response.status_code == 401 and "expired" in response.json()["message"]

        await eventually(refused, timeout=15, interval=0.2)


async def test_cookie_sign_in_is_under_the_per_ip_auth_limit(app_with: Any) -> None:
    async with app_with(auth_rate_limit="3/day", client_ip=f"10.9.{uuid.uuid4().int % 250}.7") as http:
        registered = await http.post(
            "/auth/register",
            json={
                "email": f"x-{uuid.uuid4().hex[:8]}@example.com",
                "password": PASSWORD,
                "org_name": "Limited",
            },
        )
        assert registered.status_code == 201
        body = {
            "email": f"nobody-{uuid.uuid4().hex[:6]}@example.com",
            "password": PASSWORD,
            "session": "cookie",
        }
        statuses = [(await http.post("/auth/login", json=body)).status_code for _ in range(3)]
    assert statuses == [401, 401, 429]


async def test_the_session_reaches_recommend_and_operator_reads_of_its_own_org_only(
    signed_in: Any, drain: Any
) -> None:
    async with signed_in(org_name="Shop A") as a, signed_in(org_name="Shop B") as b:
        await a.http.post("/v1/ingest/items/upsert", json=[item("a-1"), item("a-2")], headers=a.sk)
        await b.http.post("/v1/ingest/items/upsert", json=[item("b-1")], headers=b.sk)
        await drain()
        body = {"strategy": "new-arrivals", "limit": 10}

        answered = await a.http.post("/v1/recommend", json=body, headers=a.csrf_header)
        assert answered.status_code == 200, answered.text
        data = answered.json()["data"]
        assert data["tenant_id"] == a.tenant_id and sorted(data["recommended_items"]) == ["a-1", "a-2"]
        assert (await a.http.post("/v1/recommend", json=body)).status_code == 403  # no CSRF token

        # A key sent with the request wins over the cookie, and is held to its type as before.
        with_b_key = await a.http.post("/v1/recommend", json=body, headers={**b.pk, **a.csrf_header})
        assert with_b_key.json()["data"]["recommended_items"] == ["b-1"]
        assert (await a.http.post("/v1/recommend", json=body, headers=a.sk)).status_code == 403
        assert (await a.http.get("/v1/models/status", headers=a.pk)).status_code == 403
        assert (await a.http.get("/v1/overview", headers=a.pk)).status_code == 403

        status = await a.http.get("/v1/models/status")
        assert status.status_code == 200 and status.json()["data"]["stored"]["items"] == 2
        assert (await b.http.get("/v1/models/status")).json()["data"]["stored"]["items"] == 1
        # Nothing else takes the session: ingestion and erasure still need their keys.
        assert (
            await a.http.post("/v1/ingest/items/upsert", json=[item("x")], headers=a.csrf_header)
        ).status_code == 401
        events = await a.http.post(
            "/v1/ingest/events/ingest", json=event("u", "view", "a-1"), headers=a.csrf_header
        )
        assert events.status_code == 401


async def test_a_session_counts_against_the_org_rate_limit_like_its_keys(app_with: Any) -> None:
    async with app_with(rate_limit="4/hour", auth_rate_limit="1000/minute") as http:
        account = await sign_up(http)
        statuses = [
            (await http.get("/v1/models/status", headers=account.sk)).status_code,
            (await http.get("/v1/org")).status_code,
            (await http.get("/v1/keys")).status_code,
            (await http.post("/v1/recommend", json={"strategy": "popular"}, headers=account.pk)).status_code,
            (await http.get("/v1/overview")).status_code,
        ]
        usage = await http.get("/v1/org", headers=account.sk)
    assert statuses == [200, 200, 200, 200, 429]
    assert usage.status_code == 429 and usage.headers["RateLimit-Remaining"] == "0"


async def test_key_pairs_show_when_they_were_last_used(signed_in: Any) -> None:
    async with signed_in() as account:
        listed = (await account.http.get("/v1/keys")).json()["data"]
        assert listed[0]["last_used_at"] is None
        assert (
            await account.http.post("/v1/recommend", json={"strategy": "popular"}, headers=account.pk)
        ).status_code == 200

        async def used() -> Any:
            return (await account.http.get("/v1/keys")).json()["data"][0]["last_used_at"]

        last_used = await eventually(used, timeout=10, interval=0.2)
        assert abs(datetime.fromisoformat(last_used).timestamp() - time.time()) < 120


async def test_the_cookie_is_secure_behind_a_trusted_tls_proxy_only(app_with: Any) -> None:
    forwarded = {"X-Forwarded-Proto": "https"}
    async with app_with(trusted_proxies=["127.0.0.1"], auth_rate_limit="1000/minute") as http:
        account = await sign_up(http)
        body = {"email": account.email, "password": PASSWORD, "session": "cookie"}
        behind_proxy = await http.post("/auth/login", json=body, headers=forwarded)
    async with app_with(auth_rate_limit="1000/minute", client_ip="10.1.2.3") as http:
        spoofed = await http.post("/auth/login", json=body, headers=forwarded)
    assert "; secure" in _set_cookies(behind_proxy)[sessions.SESSION_COOKIE].lower()
    assert "; secure" not in _set_cookies(spoofed)[sessions.SESSION_COOKIE].lower()


def test_two_sign_ins_in_the_same_second_get_different_tokens() -> None:
    """Sign-out refuses a token by its digest: two sign-ins of one account must never share one."""
    from app import security

    account, org = uuid.uuid4(), uuid.uuid4()
    tokens = {
        security.issue_session_token(account_id=account, org_id=org, secret="s" * 48, ttl_s=60)
        for _ in range(5)
    }
    assert len(tokens) == 5
