"""Accounts, sessions and key management over HTTP (API.md section 7)."""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

from tests.factories import event
from tests.waiting import eventually


def _ip() -> str:
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"


def _email() -> str:
    return f"ops-{uuid.uuid4().hex[:10]}@example.com"


async def _register(client: Any, ip: str, email: str, password: str = "correct horse battery") -> dict[str, Any]:
    response = await client.post(
        "/auth/register",
        json={"email": email, "password": password, "org_name": "Acme Shop"},
        headers={"X-Forwarded-For": ip},
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]


async def _login(client: Any, ip: str, email: str, password: str = "correct horse battery") -> Any:
    return await client.post("/auth/login", json={"email": email, "password": password},
                             headers={"X-Forwarded-For": ip})


async def test_register_login_and_manage_keys(app_with: Any) -> None:
    ip, email = _ip(), _email()
    async with app_with(trusted_proxies=["127.0.0.1"]) as client:
        created = await _register(client, ip, email)
        assert created["publishable_key"].startswith("lehnz_pk_")
        assert created["secret_key"].startswith("lehnz_sk_")
        assert created["tenant_id"].startswith("acme-shop")
        sk = {"X-API-KEY": created["secret_key"]}
        assert (await client.get("/v1/models/status", headers=sk)).status_code == 200

        login = await _login(client, ip, email)
        assert login.status_code == 200
        token = login.json()["data"]["token"]
        bearer = {"Authorization": f"Bearer {token}"}

        listed = (await client.get("/v1/keys", headers=bearer)).json()["data"]
        assert [k["key_id"] for k in listed] == [created["key_id"]]
        assert created["publishable_key"].startswith(listed[0]["publishable_key_prefix"])
        assert created["secret_key"] not in str(listed) and "secret" not in str(listed).lower()

        new = await client.post("/v1/keys", headers=bearer)
        assert new.status_code == 201
        pair = new.json()["data"]
        assert pair["secret_key"].startswith("lehnz_sk_")
        listed = (await client.get("/v1/keys", headers=bearer)).json()["data"]
        assert len(listed) == 2 and pair["secret_key"] not in str(listed)

        revoke = await client.delete(f"/v1/keys/{created['key_id']}", headers=bearer)
        assert revoke.status_code == 200 and revoke.json()["data"]["revoked"] is True

        async def refused() -> bool:
            return (await client.get("/v1/models/status", headers=sk)).status_code == 401

        started = time.monotonic()
        await eventually(refused, timeout=1.0)
        assert time.monotonic() - started <= 1.0
        # the new pair still works; the revoked one cannot be revoked twice
        assert (await client.get("/v1/models/status", headers={"X-API-KEY": pair["secret_key"]})).status_code == 200
        assert (await client.delete(f"/v1/keys/{created['key_id']}", headers=bearer)).status_code == 404


async def test_revocation_reaches_another_replica_within_a_second(app_with: Any) -> None:
    ip, email = _ip(), _email()
    async with app_with(trusted_proxies=["127.0.0.1"]) as first, app_with() as second:
        created = await _register(first, ip, email)
        pk = {"X-API-KEY": created["publishable_key"]}
        assert (await second.post("/v1/ingest/events/ingest", json=event("u", "view", "i"),
                                  headers=pk)).status_code == 202  # now cached on the second replica
        token = (await _login(first, ip, email)).json()["data"]["token"]
        await first.delete(f"/v1/keys/{created['key_id']}", headers={"Authorization": f"Bearer {token}"})

        async def refused() -> bool:
            response = await second.post("/v1/ingest/events/ingest", json=event("u", "view", "i"), headers=pk)
            return response.status_code == 401

        await eventually(refused, timeout=1.0)


async def test_wrong_password_and_unknown_email_are_indistinguishable(app_with: Any) -> None:
    ip, email = _ip(), _email()
    async with app_with(trusted_proxies=["127.0.0.1"], auth_rate_limit="100/minute") as client:
        await _register(client, ip, email)
        wrong, unknown = [], []
        for _ in range(3):
            started = time.perf_counter()
            a = await _login(client, ip, email, password="not the password")
            wrong.append(time.perf_counter() - started)
            started = time.perf_counter()
            b = await _login(client, ip, _email(), password="not the password")
            unknown.append(time.perf_counter() - started)
            assert a.status_code == b.status_code == 401
            assert (a.json()["message"], a.json()["error"]) == (b.json()["message"], b.json()["error"])
        # Both paths run the password KDF: neither is an order of magnitude cheaper.
        assert statistics.median(unknown) > 0.5 * statistics.median(wrong)
        assert statistics.median(wrong) > 0.5 * statistics.median(unknown)


async def test_duplicate_email_and_weak_password(app_with: Any) -> None:
    ip, email = _ip(), _email()
    async with app_with(trusted_proxies=["127.0.0.1"]) as client:
        await _register(client, ip, email)
        again = await client.post("/auth/register", json={"email": email.upper(), "password": "x" * 12,
                                                          "org_name": "Other"}, headers={"X-Forwarded-For": ip})
        assert again.status_code == 409
        weak = await client.post("/auth/register", json={"email": _email(), "password": "short", "org_name": "O"},
                                 headers={"X-Forwarded-For": ip})
        assert weak.status_code == 400 and weak.json()["error"][0]["field"] == "password"


async def test_session_endpoints_refuse_missing_or_bad_tokens(client: Any) -> None:
    assert (await client.get("/v1/keys")).status_code == 401
    assert (await client.get("/v1/keys", headers={"Authorization": "Bearer nope"})).status_code == 401
    assert (await client.post("/v1/keys", headers={"Authorization": "Basic abc"})).status_code == 401


async def test_auth_routes_are_limited_per_ip(app_with: Any) -> None:
    blocked_ip, other_ip = _ip(), _ip()
    async with app_with(trusted_proxies=["127.0.0.1"], auth_rate_limit="3/day") as client:
        statuses = []
        for _ in range(4):
            response = await _login(client, blocked_ip, _email())
            statuses.append(response.status_code)
        assert statuses == [401, 401, 401, 429]
        assert response.headers["Retry-After"].isdigit()
        assert response.headers["RateLimit-Limit"] == "3" and response.headers["RateLimit-Remaining"] == "0"
        assert response.json()["success"] is False
        assert (await _login(client, other_ip, _email())).status_code == 401


async def test_the_auth_limit_is_shared_by_every_api_instance(app_with: Any) -> None:
    """The per-IP count lives in Redis (slowapi's limiter on our Redis), not in one process."""
    ip = _ip()
    options = {"trusted_proxies": ["127.0.0.1"], "auth_rate_limit": "4/day"}
    async with app_with(**options) as first, app_with(**options) as second:
        remaining = []
        for n in range(4):
            response = await _login(first if n % 2 else second, ip, _email())
            assert response.status_code == 401
            remaining.append(response.headers["RateLimit-Remaining"])
        assert remaining == ["3", "2", "1", "0"]
        assert (await _login(first, ip, _email())).status_code == 429
        assert (await _login(second, ip, _email())).status_code == 429


async def test_forwarded_for_is_ignored_from_untrusted_peers(app_with: Any) -> None:
    async with app_with(auth_rate_limit="2/day", client_ip=_ip()) as client:
        statuses = [(await _login(client, _ip(), _email())).status_code for _ in range(3)]
    # Every request claimed a different X-Forwarded-For; the peer is not a trusted proxy, so
    # they all count against the peer's own address.
    assert statuses == [401, 401, 429]
