"""API keys (API.md section 1) and CORS.

Keys are stored hashed, compared in constant time, never logged and never shown again after the
response that made them; each key type reaches only its own endpoints; a revoked pair is 401.
Browsers may call events ingest and recommend with the publishable key from any origin; every
other endpoint sends no CORS headers at all, so no page can call it with a secret key.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from app import redis_keys, security
from app.api.auth import KeyCache
from app.logs import JsonFormatter
from tests.factories import OrgKeys, event, item, user
from tests.waiting import eventually

ITEMS = "/v1/ingest/items/upsert"
USERS = "/v1/ingest/users/upsert"
EVENTS = "/v1/ingest/events/ingest"
RECOMMEND = "/v1/recommend"
PASSWORD = "correct horse battery staple 9"

# (method, path, body): every endpoint that takes an X-API-KEY, by the key type it requires.
SECRET = [
    ("POST", ITEMS, item("k")),
    ("POST", USERS, user("k")),
    ("POST", "/v1/models/train", None),
    ("GET", "/v1/models/status", None),
    ("GET", "/v1/analytics/recommendations", None),
    ("DELETE", "/v1/users/someone", None),
]
PUBLISHABLE = [("POST", EVENTS, event("k", "view", "i")), ("POST", RECOMMEND, {"strategy": "popular"})]
SESSION = [
    ("GET", "/v1/keys", None),
    ("POST", "/v1/keys", None),
    ("DELETE", f"/v1/keys/{uuid.uuid4()}", None),
]


def _ip() -> str:
    n = uuid.uuid4().int
    return f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}"


async def _call(client: Any, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    return await client.request(method, path, headers=headers, **({"json": body} if body is not None else {}))


async def _register(client: Any) -> dict[str, Any]:
    email = f"keys-{uuid.uuid4().hex[:10]}@example.com"
    registered = await client.post(
        "/auth/register", json={"email": email, "password": PASSWORD, "org_name": "Keys"}
    )
    assert registered.status_code == 201, registered.text
    login = await client.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    token = login.json()["data"]["token"]
    return {
        **registered.json()["data"],
        "email": email,
        "token": token,
        "bearer": {"Authorization": f"Bearer {token}"},
    }


def _secrets_of(pair: dict[str, Any]) -> list[str]:
    """A key, and the part of it that is never displayed again (everything after the shown prefix)."""
    found = []
    for name in ("publishable_key", "secret_key"):
        key = pair[name]
        found += [key, key[len(security.display_prefix(key)) :]]
    return found


# --- at rest --------------------------------------------------------------------------------


async def test_keys_and_passwords_are_stored_only_as_hashes(app_with: Any, db: Any, redis: Any) -> None:
    async with app_with(client_ip=_ip()) as client:
        account = await _register(client)
        second = (await client.post("/v1/keys", headers=account["bearer"])).json()["data"]
    secrets = _secrets_of(account) + _secrets_of(second) + [PASSWORD]
    async with db() as session:
        rows = [dict(r._mapping) for r in (await session.execute(text("SELECT * FROM api_keys"))).all()]
        rows += [dict(r._mapping) for r in (await session.execute(text("SELECT * FROM accounts"))).all()]
        ours = (
            await session.execute(
                text("SELECT key_type, key_hash, prefix FROM api_keys WHERE org_id = :o"),
                {"o": uuid.UUID(account["org_id"])},
            )
        ).all()
    for row in rows:  # every column of every row, whoever's
        for value in row.values():
            assert not any(secret in str(value) for secret in secrets), row
    stored = {(r.key_type, r.key_hash, r.prefix) for r in ours}
    assert stored == {
        (
            kind,
            hashlib.sha256(pair[f"{kind}_key"].encode()).hexdigest(),
            security.display_prefix(pair[f"{kind}_key"]),
        )
        for pair in (account, second)
        for kind in ("publishable", "secret")
    }
    # Nor in Redis (the rate limiter and the key cache's epoch are keyed by org, not by key).
    async for name in redis.scan_iter(count=1000):
        assert not any(secret.encode() in name for secret in secrets), name
        if await redis.type(name) == b"string":
            value = await redis.get(name) or b""
            assert not any(secret.encode() in value for secret in secrets), name


# --- compared in constant time --------------------------------------------------------------


def test_keys_are_compared_in_constant_time() -> None:
    assert "hmac.compare_digest(" in inspect.getsource(security.keys_match)
    # The lookup finds a row by the key's hash; the match is then confirmed with keys_match.
    assert "security.keys_match(" in inspect.getsource(KeyCache.owner)
    key = security.new_key("secret")
    assert security.keys_match(key, security.hash_key(key))
    assert not security.keys_match(key[:-1] + ("A" if key[-1] != "A" else "B"), security.hash_key(key))


def _near_misses(key: str) -> Iterator[str]:
    last = "A" if key[-1] != "A" else "B"
    yield key[:-1] + last  # the last character differs
    yield key[:-1]  # one short
    yield key + "A"  # one long
    yield key.swapcase()
    yield ("lehnz_pk_" if key.startswith("lehnz_sk_") else "lehnz_sk_") + key[
        len("lehnz_sk_") :
    ]  # other type


async def test_a_key_differing_in_its_last_character_is_401(client: Any, org: OrgKeys) -> None:
    assert (await client.get("/v1/models/status", headers=org.sk)).status_code == 200
    for wrong in _near_misses(org.secret_key):
        response = await client.get("/v1/models/status", headers={"X-API-KEY": wrong})
        assert response.status_code == 401, wrong
    for wrong in _near_misses(org.publishable_key):
        response = await client.post(RECOMMEND, json={"strategy": "popular"}, headers={"X-API-KEY": wrong})
        assert response.status_code == 401, wrong


# --- never logged -----------------------------------------------------------------------------


class _Records(logging.Handler):
    """Every record as logged, before any formatter masks anything."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        parts = []
        for record in self.records:
            parts.append(record.getMessage())
            parts.extend(repr(v) for k, v in vars(record).items() if k not in ("msg", "args", "exc_info"))
            if record.exc_info:
                parts.append(logging.Formatter().formatException(record.exc_info))
        return "\n".join(parts)


async def test_no_key_password_or_token_is_ever_logged(app_with: Any, drain: Any, settings: Any) -> None:
    stream = io.StringIO()
    formatted = logging.StreamHandler(stream)
    formatted.setFormatter(JsonFormatter())
    formatted.setLevel(logging.DEBUG)
    raw = _Records()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(formatted)
    root.addHandler(raw)
    root.setLevel(logging.DEBUG)
    wrong_key, wrong_password = "lehnz_sk_" + uuid.uuid4().hex, "not my passphrase at all"
    try:
        async with app_with(access_log=True, client_ip=_ip()) as client:
            account = await _register(client)
            pk, sk = {"X-API-KEY": account["publishable_key"]}, {"X-API-KEY": account["secret_key"]}
            second = (await client.post("/v1/keys", headers=account["bearer"])).json()["data"]
            await client.get("/v1/keys", headers=account["bearer"])
            await client.post(ITEMS, json=[item("a"), item("b")], headers=sk)
            await client.post(EVENTS, json=[event("u", "view", "a"), event("u", "purchase", "b")], headers=pk)
            await client.post(EVENTS, json={"bad": "event"}, headers=pk)  # 400
            await client.post(RECOMMEND, json={"strategy": "personalized", "user_id": "u"}, headers=pk)
            await client.get("/v1/models/status", headers=sk)
            await client.post(ITEMS, json=item("c"), headers=pk)  # 403
            await client.post(EVENTS, json=event("u", "view", "a"), headers={"X-API-KEY": wrong_key})  # 401
            await client.post(
                EVENTS, json=event("u", "view", "a"), headers={"X-API-KEY": f"Bearer {sk['X-API-KEY']}"}
            )
            await client.get("/v1/keys", headers={"Authorization": f"Bearer {account['token']}x"})  # 401
            await client.post(
                "/auth/login", json={"email": account["email"], "password": wrong_password}
            )  # 401
            await client.post(
                "/auth/register", json={"email": account["email"], "password": PASSWORD, "org_name": "Again"}
            )  # 409
            await client.delete(f"/v1/keys/{second['key_id']}", headers=account["bearer"])
            await client.post(
                EVENTS, json=event("u", "view", "a"), headers={"X-API-KEY": second["publishable_key"]}
            )
        async with app_with(
            access_log=True, rate_limit="1/day", auth_rate_limit="1/day", client_ip=_ip()
        ) as limited:
            for _ in range(2):  # 429 on the org limit and on the per-IP auth limit
                await limited.post(RECOMMEND, json={"strategy": "popular"}, headers=pk)
                await limited.post("/auth/login", json={"email": account["email"], "password": PASSWORD})
        await drain()
    finally:
        root.removeHandler(formatted)
        root.removeHandler(raw)
        root.setLevel(previous)

    output, records = stream.getvalue(), raw.text()
    assert '"lehnz.access"' in output and '"status":429' in output and '"status":401' in output
    secrets = [
        *_secrets_of(account),
        *_secrets_of(second),
        account["token"],
        PASSWORD,
        wrong_password,
        wrong_key,
        settings.resolved_jwt_secret(),
    ]
    for secret in secrets:
        assert secret not in output, secret[:12]
        assert secret not in records, secret[:12]  # not even masked: it never reached a logger


# --- never shown again ---------------------------------------------------------------------------


async def test_the_secret_key_is_never_returned_after_the_response_that_made_it(app_with: Any) -> None:
    async with app_with(client_ip=_ip()) as client:
        account = await _register(client)
        secrets = [
            account["secret_key"],
            account["secret_key"][len(security.display_prefix(account["secret_key"])) :],
            security.hash_key(account["secret_key"]),
            security.hash_key(account["publishable_key"]),
        ]
        bearer, sk, pk = (
            account["bearer"],
            {"X-API-KEY": account["secret_key"]},
            {"X-API-KEY": account["publishable_key"]},
        )
        responses = [
            await client.get("/v1/keys", headers=bearer),
            await client.post("/v1/keys", headers=bearer),
            await client.post("/auth/login", json={"email": account["email"], "password": PASSWORD}),
            await client.post(
                "/auth/register", json={"email": account["email"], "password": PASSWORD, "org_name": "Keys"}
            ),
            await client.get("/v1/models/status", headers=sk),
            await client.post("/v1/models/train", headers=sk),
            await client.get("/v1/analytics/recommendations", headers=sk),
            await client.post(ITEMS, json=item("x"), headers=sk),
            await client.post(EVENTS, json=event("u", "view", "x"), headers=pk),
            await client.post(RECOMMEND, json={"strategy": "popular"}, headers=pk),
            await client.get("/openapi.json"),
            await client.get("/docs"),
            await client.get("/metrics"),
            await client.get("/readyz"),
            await client.get("/healthz"),
        ]
        new_pair = responses[1].json()["data"]
        responses.append(await client.delete(f"/v1/keys/{new_pair['key_id']}", headers=bearer))
        responses.append(await client.get("/v1/keys", headers=bearer))
    assert [r.status_code for r in responses[:4]] == [200, 201, 200, 409]
    for response in responses:
        seen = response.text + "".join(f"{k}: {v}" for k, v in response.headers.items())
        assert not any(secret in seen for secret in secrets), response.request.url


# --- each key type on its own endpoints ------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), SECRET)
async def test_a_publishable_key_is_403_on_every_secret_endpoint(
    client: Any, org: OrgKeys, redis: Any, method: str, path: str, body: Any
) -> None:
    response = await _call(client, method, path, body, org.pk)
    assert response.status_code == 403 and response.json()["success"] is False, response.text
    assert await redis.zcard(redis_keys.pending(org.org_id)) == 0
    assert await redis.hget(redis_keys.erased(org.org_id), "someone") is None


@pytest.mark.parametrize(("method", "path", "body"), PUBLISHABLE)
async def test_a_secret_key_is_403_on_every_publishable_endpoint(
    client: Any, org: OrgKeys, redis: Any, method: str, path: str, body: Any
) -> None:
    response = await _call(client, method, path, body, org.sk)
    assert response.status_code == 403 and response.json()["success"] is False, response.text
    assert await redis.zcard(redis_keys.pending(org.org_id)) == 0


async def test_keys_and_session_tokens_are_not_interchangeable(app_with: Any) -> None:
    async with app_with(client_ip=_ip()) as client:
        account = await _register(client)
        for method, path, body in SECRET + PUBLISHABLE:  # a session token is not an API key
            for headers in (account["bearer"], {"X-API-KEY": account["token"]}):
                assert (await _call(client, method, path, body, headers)).status_code == 401, path
        for method, path, body in SESSION:  # and an API key is not a session
            for key in (account["publishable_key"], account["secret_key"]):
                for headers in ({"X-API-KEY": key}, {"Authorization": f"Bearer {key}"}):
                    assert (await _call(client, method, path, body, headers)).status_code == 401, path


async def test_a_revoked_pair_is_401_everywhere(app_with: Any) -> None:
    async with app_with(client_ip=_ip()) as client:
        account = await _register(client)
        pk, sk = {"X-API-KEY": account["publishable_key"]}, {"X-API-KEY": account["secret_key"]}
        assert (await client.get("/v1/models/status", headers=sk)).status_code == 200
        revoked = await client.delete(f"/v1/keys/{account['key_id']}", headers=account["bearer"])
        assert revoked.status_code == 200

        async def refused() -> bool:
            return (await client.get("/v1/models/status", headers=sk)).status_code == 401

        await eventually(refused, timeout=1.0)
        for method, path, body in SECRET:
            assert (await _call(client, method, path, body, sk)).status_code == 401, path
        for method, path, body in PUBLISHABLE:
            assert (await _call(client, method, path, body, pk)).status_code == 401, path
        # The session still manages keys: a new pair works at once.
        fresh = (await client.post("/v1/keys", headers=account["bearer"])).json()["data"]
        assert (
            await client.get("/v1/models/status", headers={"X-API-KEY": fresh["secret_key"]})
        ).status_code == 200


# --- CORS -------------------------------------------------------------------------------------------

ORIGIN = "https://shop.example"
PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "x-api-key,content-type",
}


def _cors_headers(response: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


@pytest.mark.parametrize(
    ("path", "body"), [(EVENTS, event("u", "view", "i")), (RECOMMEND, {"strategy": "popular"})]
)
async def test_browsers_may_call_events_and_recommend_from_any_origin(
    client: Any, org: OrgKeys, path: str, body: dict[str, Any]
) -> None:
    preflight = await client.options(path, headers=PREFLIGHT)
    assert preflight.status_code == 200
    allowed = _cors_headers(preflight)
    assert allowed["access-control-allow-origin"] in ("*", ORIGIN)
    assert "POST" in allowed["access-control-allow-methods"]
    assert {"x-api-key", "content-type"} <= {
        h.strip().lower() for h in allowed["access-control-allow-headers"].split(",")
    }
    assert "access-control-allow-credentials" not in allowed  # keys travel in a header, never cookies

    actual = await client.post(path, json=body, headers={**org.pk, "Origin": ORIGIN})
    assert actual.status_code in (200, 202)
    headers = _cors_headers(actual)
    assert headers["access-control-allow-origin"] in ("*", ORIGIN)
    exposed = {h.strip().lower() for h in headers["access-control-expose-headers"].split(",")}
    assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "retry-after"} <= exposed
    assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"} <= {
        k.lower() for k in actual.headers
    }
    # A storefront can read its errors too (e.g. a 401 after a key rotation).
    refused = await client.post(path, json=body, headers={"X-API-KEY": "lehnz_pk_revoked", "Origin": ORIGIN})
    assert refused.status_code == 401 and _cors_headers(refused)["access-control-allow-origin"] in (
        "*",
        ORIGIN,
    )


def _every_other_operation(document: dict[str, Any]) -> list[tuple[str, str]]:
    browser = {("post", EVENTS), ("post", RECOMMEND)}
    return [
        (method.upper(), path.replace("{user_id}", "someone").replace("{key_id}", str(uuid.uuid4())))
        for path, operations in document["paths"].items()
        for method in operations
        if (method, path) not in browser
    ]


async def test_no_other_endpoint_sends_cors_headers(client: Any, org: OrgKeys) -> None:
    document = (await client.get("/openapi.json")).json()
    operations = _every_other_operation(document)
    paths = {path for _, path in operations}
    assert {
        ITEMS,
        USERS,
        "/v1/models/train",
        "/v1/models/status",
        "/v1/analytics/recommendations",
        "/v1/users/someone",
        "/v1/keys",
        "/auth/register",
        "/auth/login",
    } <= paths
    for path in sorted(paths):
        preflight = await client.options(path, headers=PREFLIGHT)
        assert _cors_headers(preflight) == {}, (path, preflight.status_code, _cors_headers(preflight))
    for method, path in operations:
        for headers in (org.sk, org.pk, {}):
            body = {"json": {}} if method == "POST" else {}
            response = await client.request(method, path, headers={**headers, "Origin": ORIGIN}, **body)
            assert _cors_headers(response) == {}, (method, path, response.status_code)


async def test_the_cors_allow_list_is_not_widened_by_the_request(client: Any, org: OrgKeys) -> None:
    """A preflight asking for other methods or headers is not granted them."""
    for request_method, request_headers in (
        ("DELETE", "x-api-key"),
        ("POST", "authorization"),
        ("PUT", "x-api-key,content-type"),
    ):
        preflight = await client.options(
            RECOMMEND,
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": request_method,
                "Access-Control-Request-Headers": request_headers,
            },
        )
        allowed = _cors_headers(preflight)
        granted_methods = {
            m.strip() for m in allowed.get("access-control-allow-methods", "").split(",") if m.strip()
        }
        granted_headers = {
            h.strip().lower() for h in allowed.get("access-control-allow-headers", "").split(",")
        }
        assert granted_methods <= {"POST"}
        assert "authorization" not in granted_headers
        assert preflight.status_code in (200, 400)
    assert orjson.loads((await client.post(RECOMMEND, json={"strategy": "popular"}, headers=org.pk)).content)[
        "success"
    ]


@pytest.mark.parametrize(
    ("request_headers", "field", "named"),
    [
        ("x-api-key,content-type,x-shop-session", "Access-Control-Request-Headers", "x-shop-session"),
        ("authorization", "Access-Control-Request-Headers", "authorization"),
    ],
)
async def test_a_refused_preflight_says_what_was_refused_in_the_envelope(
    client: Any, request_headers: str, field: str, named: str
) -> None:
    preflight = await client.options(RECOMMEND, headers={**PREFLIGHT, "Access-Control-Request-Headers": request_headers})
    assert preflight.status_code == 400
    assert preflight.headers["content-type"].startswith("application/json")
    body = preflight.json()
    assert set(body) == {"success", "message", "data", "error"} and body["success"] is False
    assert [e["field"] for e in body["error"]] == [field]
    issue = body["error"][0]["issue"]
    assert named in issue and "X-API-KEY" in issue and "Content-Type" in issue  # what to send instead
    assert named in body["message"]


async def test_a_preflight_from_another_origin_or_for_another_method_is_refused_in_the_envelope(
    app_with: Any,
) -> None:
    async with app_with(cors_origins=[ORIGIN]) as client:
        stranger = await client.options(EVENTS, headers={**PREFLIGHT, "Origin": "https://elsewhere.example"})
        put = await client.options(EVENTS, headers={**PREFLIGHT, "Access-Control-Request-Method": "PUT"})
        both = await client.options(EVENTS, headers={
            **PREFLIGHT, "Origin": "https://elsewhere.example", "Access-Control-Request-Method": "PUT"})
        allowed = await client.options(EVENTS, headers=PREFLIGHT)
    assert allowed.status_code == 200
    for response, fields in ((stranger, ["Origin"]), (put, ["Access-Control-Request-Method"]),
                             (both, ["Origin", "Access-Control-Request-Method"])):
        assert response.status_code == 400 and response.json()["success"] is False
        assert [e["field"] for e in response.json()["error"]] == fields


async def test_the_headers_a_storefront_fetch_sends_are_allowed(client: Any) -> None:
    """The JSON Content-Type and the key, a request id, W3C trace context (browser APM agents add
    it to calls they are told to trace), and the CORS-safelisted headers."""
    sent = "content-type,x-api-key,x-request-id,traceparent,tracestate,accept,accept-language,content-language"
    for path in (EVENTS, RECOMMEND):
        preflight = await client.options(path, headers={**PREFLIGHT, "Access-Control-Request-Headers": sent})
        assert preflight.status_code == 200, preflight.text
        granted = {h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")}
        assert set(sent.split(",")) <= granted
