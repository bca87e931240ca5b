"""Per-org rate limits shared across keys and replicas (API.md section 3)."""

from __future__ import annotations

import uuid
from typing import Any

from app.key_epoch import announce_key_change
from app.storage import orgs
from tests.factories import OrgKeys, create_org, event
from tests.waiting import eventually

EVENTS = "/v1/ingest/events/ingest"


async def _second_pair(db: Any, org: OrgKeys) -> dict[str, str]:
    async with db() as session, session.begin():
        pair = await orgs.add_key_pair(session, uuid.UUID(org.org_id))
    return {"X-API-KEY": pair.publishable_key}


async def test_one_bucket_for_all_keys_of_an_org(app_with: Any, db: Any, org: OrgKeys, other_org: OrgKeys) -> None:
    second = await _second_pair(db, org)
    async with app_with(rate_limit="4/day") as client:
        remaining = []
        for n in range(4):
            response = await client.post(EVENTS, json=event("u", "view", "i"), headers=org.pk if n % 2 else second)
            assert response.status_code == 202
            assert response.headers["RateLimit-Limit"] == "4"
            assert 0 < int(response.headers["RateLimit-Reset"]) <= 86400
            remaining.append(int(response.headers["RateLimit-Remaining"]))
        assert remaining == [3, 2, 1, 0]
        limited = await client.post(EVENTS, json=event("u", "view", "i"), headers=org.pk)
        assert limited.status_code == 429
        assert limited.json()["success"] is False and limited.json()["data"] is None
        assert int(limited.headers["Retry-After"]) == int(limited.headers["RateLimit-Reset"]) > 0
        assert "x-ratelimit-limit" not in limited.headers
        # another org is not affected
        other = await client.post(EVENTS, json=event("u", "view", "i"), headers=other_org.pk)
        assert other.status_code == 202 and other.headers["RateLimit-Remaining"] == "3"


async def test_the_window_resets(app_with: Any, org: OrgKeys) -> None:
    async with app_with(rate_limit="2/2second") as client:
        async def exhausted() -> bool:
            return (await client.post(EVENTS, json=event("u", "view", "i"), headers=org.pk)).status_code == 429

        await eventually(exhausted, timeout=5)

        async def accepted_again() -> bool:
            return (await client.post(EVENTS, json=event("u", "view", "i"), headers=org.pk)).status_code == 202

        await eventually(accepted_again, timeout=5)


async def test_two_api_instances_share_the_counters(app_with: Any, org: OrgKeys) -> None:
    async with app_with(rate_limit="6/day") as first, app_with(rate_limit="6/day") as second:
        seen = []
        for n in range(6):
            replica = first if n % 2 else second
            response = await replica.post(EVENTS, json=event("u", "view", "i"), headers=org.pk)
            seen.append(int(response.headers["RateLimit-Remaining"]))
        assert seen == [5, 4, 3, 2, 1, 0]
        assert (await first.post(EVENTS, json=event("u", "view", "i"), headers=org.pk)).status_code == 429
        assert (await second.post(EVENTS, json=event("u", "view", "i"), headers=org.pk)).status_code == 429


async def test_per_org_override_applies_within_a_second(app_with: Any, db: Any, redis: Any) -> None:
    org = await create_org(db, name="override")
    async with app_with(rate_limit="1000/hour") as client:
        first = await client.post(EVENTS, json=event("u", "view", "i"), headers=org.pk)
        assert first.headers["RateLimit-Limit"] == "1000"
        async with db() as session, session.begin():
            await orgs.set_rate_limit(session, uuid.UUID(org.org_id), "50/hour")
        await announce_key_change(redis)

        async def overridden() -> bool:
            response = await client.post(EVENTS, json=event("u", "view", "i"), headers=org.pk)
            return response.headers["RateLimit-Limit"] == "50"

        await eventually(overridden, timeout=1.0)


async def test_every_authenticated_response_carries_the_headers(client: Any, org: OrgKeys) -> None:
    for method, path, headers, body in (
        ("post", "/v1/recommend", org.pk, {"strategy": "popular"}),
        ("get", "/v1/models/status", org.sk, None),
        ("post", EVENTS, org.pk, {"bad": "event"}),  # a 400 still counts and still says so
    ):
        response = await getattr(client, method)(path, headers=headers, **({"json": body} if body else {}))
        assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"} <= set(response.headers), path


async def test_with_redis_unreachable_reads_fail_open_and_writes_say_503(app_with: Any, org: OrgKeys) -> None:
    async with app_with(redis_url="unix:///nonexistent/lehnz-redis.sock") as client:
        recommend = await client.post("/v1/recommend", json={"strategy": "popular"}, headers=org.pk)
        assert recommend.status_code == 200  # served from memory, not rate limited
        assert "ratelimit-limit" not in recommend.headers
        ingest = await client.post(EVENTS, json=event("u", "view", "i"), headers=org.pk)
        assert ingest.status_code == 503
        assert ingest.json()["success"] is False and "retry" in ingest.json()["message"].lower()
        login = await client.post("/auth/login", json={"email": "a@b.co", "password": "whatever-pass"})
        assert login.status_code == 503  # the auth limit fails closed
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and {e["field"]: e["issue"] for e in ready.json()["error"]}["redis"].startswith("unavailable")


async def test_large_limits_are_counted_in_leases_with_exact_headers(
    app_with: Any, org: OrgKeys, redis: Any
) -> None:
    """Most requests under a large limit make no Redis call: a replica reserves 1% at a time."""
    async with app_with(rate_limit="2000/day") as client:
        remaining = []
        for _ in range(25):
            response = await client.post("/v1/recommend", json={"strategy": "popular"}, headers=org.pk)
            remaining.append(int(response.headers["RateLimit-Remaining"]))
    assert remaining == list(range(1999, 1974, -1))
    counters = [key async for key in redis.scan_iter(f"lehnz:ratelimit:org:{org.org_id}:*")]
    assert len(counters) == 1
    assert int(await redis.get(counters[0])) == 40  # two leases of 20


async def test_a_leased_limit_still_stops_at_the_limit_across_replicas(app_with: Any, org: OrgKeys) -> None:
    async with app_with(rate_limit="200/day") as first, app_with(rate_limit="200/day") as second:
        accepted = 0
        for n in range(230):
            replica = first if n % 2 else second
            response = await replica.post("/v1/recommend", json={"strategy": "popular"}, headers=org.pk)
            accepted += response.status_code == 200
    # Leases of 2 per replica: the shared limit holds to within one lease per replica.
    assert 198 <= accepted <= 200
