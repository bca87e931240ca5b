"""Fixtures of the dashboard tests: an api app whose per-IP auth limit is out of the way (every test
signs up), and signed-in browser-like clients (a cookie jar, the CSRF token, the first key pair)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from app.settings import Settings

PASSWORD = "correct horse battery"


@dataclass
class Account:
    """A signed-up account with a cookie session in `http` (as a browser holds it)."""

    http: httpx.AsyncClient
    email: str
    csrf: str
    org_id: str
    tenant_id: str
    key_id: str
    publishable_key: str
    secret_key: str

    @property
    def pk(self) -> dict[str, str]:
        return {"X-API-KEY": self.publishable_key}

    @property
    def sk(self) -> dict[str, str]:
        return {"X-API-KEY": self.secret_key}

    @property
    def csrf_header(self) -> dict[str, str]:
        return {"X-CSRF-Token": self.csrf}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def dashboard_app(settings: Settings) -> AsyncIterator[FastAPI]:
    from app.main import create_app

    application = create_app(settings.model_copy(update={"auth_rate_limit": "100000/minute"}))
    async with application.router.lifespan_context(application):
        yield application


def client_for(app: FastAPI, base_url: str = "http://testserver") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url=base_url)


async def sign_up(http: httpx.AsyncClient, *, org_name: str = "Acme Shop") -> Account:
    email = f"ops-{uuid.uuid4().hex[:10]}@example.com"
    registered = await http.post(
        "/auth/register", json={"email": email, "password": PASSWORD, "org_name": org_name}
    )
    assert registered.status_code == 201, registered.text
    created = registered.json()["data"]
    login = await http.post("/auth/login", json={"email": email, "password": PASSWORD, "session": "cookie"})
    assert login.status_code == 200, login.text
    return Account(
        http=http,
        email=email,
        csrf=login.json()["data"]["csrf_token"],
        org_id=created["org_id"],
        tenant_id=created["tenant_id"],
        key_id=created["key_id"],
        publishable_key=created["publishable_key"],
        secret_key=created["secret_key"],
    )


@pytest.fixture
def signed_in(dashboard_app: FastAPI) -> Callable[..., Any]:
    """`async with signed_in() as account:` a new account and org, signed in with a cookie session."""

    @contextlib.asynccontextmanager
    async def _make(**kwargs: Any) -> AsyncIterator[Account]:
        async with client_for(dashboard_app) as http:
            yield await sign_up(http, **kwargs)

    return _make
