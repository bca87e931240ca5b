"""Dashboard session tokens: a correctly signed token is not enough, its account must exist.

The token's claims are checked on every request against the accounts table (cached like API
keys, dropped from every replica's cache when keys change or an org is deleted): a `sub` or
`org` that is not a UUID, an unknown org, an account that no longer exists or that does not
own the org it names are all 401, never a 500 or a 404.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import pytest
from sqlalchemy import delete

from app.key_epoch import announce_key_change
from app.settings import Settings
from app.storage.tables import Account
from tests.waiting import eventually

PASSWORD = "correct horse battery staple 9"


def _ip() -> str:
    n = uuid.uuid4().int
    return f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}"


def _signed(settings: Settings, **claims: Any) -> dict[str, str]:
    """Authorization for a token signed with the server's own secret (so only its claims can be wrong)."""
    now = int(time.time())
    token = jwt.encode({"iat": now, "exp": now + 600, "typ": "session", **claims},
                       settings.resolved_jwt_secret(), algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


async def _register(client: Any) -> dict[str, Any]:
    email = f"tokens-{uuid.uuid4().hex[:10]}@example.com"
    registered = await client.post("/auth/register", json={"email": email, "password": PASSWORD, "org_name": "T"})
    assert registered.status_code == 201, registered.text
    login = await client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return {**registered.json()["data"], "bearer": {"Authorization": f"Bearer {login.json()['data']['token']}"}}


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "not-a-uuid"},
        {"org": "not-a-uuid"},
        {"sub": 12345},
        {"org": ["a", "list"]},
        {"org": str(uuid.uuid4())},  # an org that does not exist
        {"sub": str(uuid.uuid4())},  # an account that does not exist
    ],
    ids=["sub-not-uuid", "org-not-uuid", "sub-number", "org-list", "unknown-org", "unknown-account"],
)
async def test_a_signed_token_with_bad_claims_is_401(
    app_with: Any, settings: Settings, claims: dict[str, Any]
) -> None:
    async with app_with(client_ip=_ip()) as client:
        account = await _register(client)
        headers = _signed(settings, **{"sub": account["account_id"], "org": account["org_id"], **claims})
        for method, path in (("GET", "/v1/keys"), ("POST", "/v1/keys"), ("DELETE", f"/v1/keys/{uuid.uuid4()}")):
            response = await client.request(method, path, headers=headers)
            assert response.status_code == 401, (claims, method, response.text)
            assert response.json()["success"] is False
        # The real claims work: only the claims were wrong.
        good = _signed(settings, sub=account["account_id"], org=account["org_id"])
        assert (await client.get("/v1/keys", headers=good)).status_code == 200


async def test_a_token_naming_another_accounts_org_is_401(app_with: Any, settings: Settings) -> None:
    async with app_with(client_ip=_ip()) as client:
        mine, theirs = await _register(client), await _register(client)
        crossed = _signed(settings, sub=mine["account_id"], org=theirs["org_id"])
        assert (await client.get("/v1/keys", headers=crossed)).status_code == 401
        assert (await client.post("/v1/keys", headers=crossed)).status_code == 401


async def test_the_token_of_a_deleted_account_is_refused(app_with: Any, db: Any, redis: Any) -> None:
    async with app_with(client_ip=_ip()) as client:
        account = await _register(client)
        assert (await client.get("/v1/keys", headers=account["bearer"])).status_code == 200  # now cached
        async with db() as session, session.begin():
            await session.execute(delete(Account).where(Account.id == uuid.UUID(account["account_id"])))
        await announce_key_change(redis)  # what deleting an account must do (app/api/auth.py)

        async def refused() -> bool:
            return (await client.get("/v1/keys", headers=account["bearer"])).status_code == 401

        await eventually(refused, timeout=2.0)
        assert (await client.post("/v1/keys", headers=account["bearer"])).status_code == 401


async def test_a_deleted_accounts_token_is_refused_on_first_use(app_with: Any, db: Any) -> None:
    async with app_with(client_ip=_ip()) as client:
        account = await _register(client)
        async with db() as session, session.begin():
            await session.execute(delete(Account).where(Account.id == uuid.UUID(account["account_id"])))
        response = await client.get("/v1/keys", headers=account["bearer"])
        assert response.status_code == 401, response.text
        assert response.json()["message"] == "This session's account no longer exists; sign in again"


async def test_deleting_an_org_ends_its_sessions(app_with: Any, settings: Settings) -> None:
    from app.model_store import ModelStore
    from app.offboarding import delete_org
    from app.queue import create_redis
    from app.storage.db import create_engine, create_session_factory

    async with app_with(client_ip=_ip()) as client:
        account = await _register(client)
        assert (await client.get("/v1/keys", headers=account["bearer"])).status_code == 200  # now cached
        engine = create_engine(settings.database_url or "", pool_size=1)
        redis = create_redis(settings.redis_url or "")
        try:
            await delete_org(create_session_factory(engine), redis, ModelStore(settings.models_path),
                             account["tenant_id"])
        finally:
            await redis.aclose()
            await engine.dispose()

        async def refused() -> bool:
            return (await client.get("/v1/keys", headers=account["bearer"])).status_code == 401

        await eventually(refused, timeout=2.0)
