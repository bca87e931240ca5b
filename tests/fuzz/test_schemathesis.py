"""schemathesis against our own OpenAPI document: every operation, with valid credentials.

For each operation schemathesis generates valid and invalid requests (its examples, coverage
and fuzzing phases). Each one goes through a real app (real Postgres and Redis, rate limits
raised out of the way) with the credential that operation takes: the publishable key for events
ingest and recommend, the secret key for the other X-API-KEY endpoints, a session token from a
registered account for /v1/keys. Every response must come back:

- without a 5xx,
- with a status (and content type, body schema and headers) documented for that operation,
- in the envelope `{success, message, data, error}` with `success` matching the status
  (/metrics is Prometheus text; /docs is not in the document),

and whatever was accepted with a 202 must then be persisted by the worker without being parked.

CI runs a bounded, derandomized number of examples per operation (LEHNZ_FUZZ_EXAMPLES, default
25: about a minute for the file). The nightly-style longer run (timeouts scale with it):

    LEHNZ_FUZZ_EXAMPLES=500 pytest tests/fuzz/test_schemathesis.py tests/fuzz/test_properties.py
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from app import redis_keys
from app.main import create_app
from app.settings import Settings
from tests.fuzz.support import parked_errors

EXAMPLES = int(os.environ.get("LEHNZ_FUZZ_EXAMPLES", "25"))
# One operation: 25 generated requests plus schemathesis's coverage cases take a few seconds.
TIMEOUT_S = max(120, EXAMPLES * 2)

PUBLISHABLE = {("POST", "/v1/ingest/events/ingest"), ("POST", "/v1/recommend")}
# No 5xx; only documented statuses, content types, bodies and headers; 405 (with Allow) for a
# method an operation does not have. Not used: the checks that judge semantics the document
# cannot express (a schema-valid email that is not an email is a 400, by design) or that resend
# requests outside this harness (ignored_auth, use_after_free, ...).
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
    checks.unsupported_method,
]
NOT_ENVELOPED = {"/metrics"}  # Prometheus text exposition


def _document() -> dict[str, Any]:
    """The document the app serves at /openapi.json (building it needs no database or Redis;
    `test_the_fuzzed_document_is_the_one_the_app_serves` proves they are the same)."""
    app = create_app(
        Settings(database_url="postgresql+asyncpg://openapi-only/none", redis_url="redis://openapi-only")
    )
    return app.openapi()


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT)


@dataclass
class Target:
    """The fuzzed app (its own instance, rate limits out of the way) and one credential per kind."""

    http: httpx.AsyncClient
    loop: asyncio.AbstractEventLoop
    org_id: str
    publishable: dict[str, str]
    secret: dict[str, str]
    bearer: dict[str, str]

    def credentials(self, method: str, path: str, security: list[dict[str, Any]]) -> dict[str, str]:
        schemes = {name for requirement in security for name in requirement}
        if "HTTPBearer" in schemes:
            return self.bearer
        if "APIKeyHeader" in schemes:
            return self.publishable if (method, path) in PUBLISHABLE else self.secret
        return {}

    def send(self, case: Any) -> httpx.Response:
        """Exactly the bytes schemathesis would send, through our ASGI client.

        schemathesis runs its tests synchronously, while the app (its engine, Redis pool and
        background tasks) lives on the session's event loop: the request runs there, to completion.
        """
        operation = case.operation
        auth = self.credentials(
            operation.method.upper(), operation.path, operation.definition.raw.get("security", [])
        )
        kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=auth)
        prepared = requests.Request(
            method=kwargs["method"],
            url=kwargs["url"],
            headers=kwargs.get("headers"),
            params=kwargs.get("params"),
            json=kwargs.get("json"),
            data=kwargs.get("data"),
            cookies=kwargs.get("cookies"),
        ).prepare()
        body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
        request = self.http.request(
            prepared.method or "GET", prepared.url or "", headers=dict(prepared.headers), content=body
        )
        return self.loop.run_until_complete(request)


@pytest_asyncio.fixture(scope="module")
async def target(settings: Settings) -> AsyncIterator[Target]:
    application = create_app(
        settings.model_copy(
            update={
                "rate_limit": "100000000/minute",
                "auth_rate_limit": "100000000/minute",
            }
        )
    )
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            email, password = f"fuzz-{uuid.uuid4().hex[:10]}@example.com", "fuzzing passphrase 1"
            registered = await http.post(
                "/auth/register", json={"email": email, "password": password, "org_name": "Fuzz"}
            )
            assert registered.status_code == 201, registered.text
            account = registered.json()["data"]
            login = await http.post("/auth/login", json={"email": email, "password": password})
            assert login.status_code == 200, login.text
            yield Target(
                http=http,
                loop=asyncio.get_running_loop(),
                org_id=account["org_id"],
                publishable={"X-API-KEY": account["publishable_key"]},
                secret={"X-API-KEY": account["secret_key"]},
                bearer={"Authorization": f"Bearer {login.json()['data']['token']}"},
            )


def assert_enveloped(path: str, response: httpx.Response) -> None:
    if path in NOT_ENVELOPED:
        return
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = orjson.loads(response.content)
    assert isinstance(body, dict) and set(body) == {"success", "message", "data", "error"}, body
    assert body["success"] is (response.status_code < 400), (response.status_code, body)
    assert isinstance(body["message"], str) and body["message"]
    if body["success"]:
        assert body["error"] is None, body
    else:
        assert body["data"] is None and body["error"], body


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@pytest.mark.timeout(TIMEOUT_S)
def test_every_operation_answers_in_the_envelope_with_a_documented_status(case: Any, target: Target) -> None:
    response = target.send(case)
    case.validate_response(
        response,
        checks=CHECKS,
    )
    assert_enveloped(case.operation.path, response)


async def test_the_fuzzed_document_is_the_one_the_app_serves(client: Any) -> None:
    served = await client.get("/openapi.json")
    assert served.status_code == 200
    assert served.json() == orjson.loads(orjson.dumps(DOCUMENT))


async def test_everything_the_fuzzer_got_accepted_is_persistable(
    target: Target, drain: Any, redis: Any
) -> None:
    """Whatever the api accepted with a 202 while fuzzing, the worker persists: nothing parked."""
    await drain()
    assert await redis.zcard(redis_keys.pending(target.org_id)) == 0
    assert await parked_errors(redis, target.org_id) == []
    status = await target.http.get("/v1/models/status", headers=target.secret)
    assert status.status_code == 200 and status.json()["data"]["last_error"] is None, status.text
