"""The operator reads the dashboard is built on (GET /v1/org, /v1/overview, /v1/items, /v1/users,
/v1/users/{id}, /v1/strategies): envelope, auth, paging, search, and org isolation."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from app import redis_keys
from app.recommend import registry
from tests.dashboard.conftest import client_for
from tests.factories import event, item, user
from tests.waiting import eventually

OPERATOR_READS = [
    "/v1/org",
    "/v1/overview",
    "/v1/items",
    "/v1/items/a-1",
    "/v1/users",
    "/v1/users/u-1",
]


def _envelope(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"success", "message", "data", "error"}
    assert body["success"] is (status < 400)
    return body["data"] if status < 400 else body


async def _world(account: Any, drain: Any, prefix: str) -> None:
    """Five items (one inactive, one deleted), two upserted users, events of three users."""
    items = [
        item(
            f"{prefix}-1", attributes={"title": "Red Canvas Tote", "image_url": "https://img.example/1.jpg"}
        ),
        item(f"{prefix}-2", attributes={"title": "Blue Wool Scarf"}),
        item(f"{prefix}-3", attributes={"title": "Green tote bag"}),
        item(f"{prefix}-4", status="inactive", attributes={"title": "Old Tote"}),
        item(f"{prefix}-5", status="deleted"),
        item(f"{prefix}/with/slash", attributes={"title": "Slashed"}),
    ]
    assert (
        await account.http.post("/v1/ingest/items/upsert", json=items, headers=account.sk)
    ).status_code == 202
    users = [user("u-1", attributes={"plan": "gold"}), user("zz-upserted-only")]
    assert (
        await account.http.post("/v1/ingest/users/upsert", json=users, headers=account.sk)
    ).status_code == 202
    now = datetime.now(UTC)
    three_days_ago = (now - timedelta(days=3)).isoformat()
    events = [
        event("u-1", "view", f"{prefix}-1"),
        event("u-1", "purchase", f"{prefix}-2", context={"order_id": "o1", "price": 10}),
        event("u-2", "view", f"{prefix}-1", timestamp=three_days_ago),
        event("anon-9", "view", f"{prefix}-3"),
        event("u-2", "identify", previous_user_id="anon-9"),
    ]
    assert (
        await account.http.post("/v1/ingest/events/ingest", json=events, headers=account.pk)
    ).status_code == 202
    await drain()


async def test_every_operator_read_wants_a_secret_key_or_a_session(
    signed_in: Any, dashboard_app: Any
) -> None:
    async with signed_in() as account, client_for(dashboard_app) as bare:
        for path in OPERATOR_READS:
            assert (await account.http.get(path)).status_code in (200, 404), path  # the cookie session
            assert _envelope(await bare.get(path), 401)["message"].startswith("Missing X-API-KEY"), path
            wrong_type = _envelope(await bare.get(path, headers=account.pk), 403)
            assert wrong_type["message"] == "This endpoint requires a secret (lehnz_sk_...) key", path
            assert (await bare.get(path, headers=account.sk)).status_code in (200, 404), path
            forged = await bare.get(path, headers={"Cookie": "lehnz_session=not-a-token"})
            assert _envelope(forged, 401)["message"] == "Invalid or expired session token", path


async def test_org_settings_show_the_org_the_account_and_the_rate_limit_usage(signed_in: Any) -> None:
    async with signed_in(org_name="Glow Beauty") as account:
        first = _envelope(await account.http.get("/v1/org"))
        second = _envelope(await account.http.get("/v1/org"))
        assert first["tenant_id"] == account.tenant_id and first["org_id"] == account.org_id
        assert first["name"] == "Glow Beauty" and first["domain"] == "commerce"
        assert first["account"] == {"account_id": first["account"]["account_id"], "email": account.email}
        limit = first["rate_limit"]
        assert limit["limit"] == "1000/15minutes" and limit["source"] == "deployment"
        assert limit["requests"] == 1000 and limit["window_s"] == 900
        assert 1 <= limit["used"] < second["rate_limit"]["used"]  # each request counts, as the headers say
        assert limit["remaining"] == 1000 - limit["used"] and 0 < limit["reset_s"] <= 900
        by_key = _envelope(await account.http.get("/v1/org", headers=account.sk))
        assert by_key["account"] is None and by_key["tenant_id"] == account.tenant_id


async def test_overview_counts_the_catalog_by_status_and_events_per_hour_and_day(
    signed_in: Any, drain: Any, redis: Any
) -> None:
    async with signed_in() as account, signed_in() as other:
        empty = _envelope(await account.http.get("/v1/overview"))
        assert empty["catalog"] == {"active": 0, "inactive": 0, "deleted": 0}
        assert empty["events"]["last_24h"] == empty["events"]["last_7d"] == 0
        assert len(empty["events"]["hourly"]) == 24 and len(empty["events"]["daily"]) == 7
        assert empty["serving_model_version"] is None and empty["dead_letters"] == 0

        await _world(account, drain, "a")
        data = _envelope(await account.http.get("/v1/overview"))
        assert data["catalog"] == {"active": 4, "inactive": 1, "deleted": 1}
        events = data["events"]
        assert events["last_24h"] == 4 and events["last_7d"] == 5
        assert (
            sum(h["events"] for h in events["hourly"]) == 4 and sum(d["events"] for d in events["daily"]) == 5
        )
        now = datetime.now(UTC)
        assert events["hourly"][-1]["hour"] == now.strftime("%Y-%m-%dT%H:00:00Z")
        assert events["hourly"][-1]["events"] == 4
        assert events["daily"][-1]["day"] == now.date().isoformat()
        assert events["daily"][-4] == {"day": (now - timedelta(days=3)).date().isoformat(), "events": 1}
        # The other org's overview sees none of it.
        theirs = _envelope(await other.http.get("/v1/overview"))
        assert (
            theirs["catalog"] == {"active": 0, "inactive": 0, "deleted": 0}
            and theirs["events"]["last_7d"] == 0
        )

        # Dead letters are one list for every org: each overview counts its own org's entries.
        parked = orjson.dumps(
            {
                "function": "ingest_items",
                "kwargs": {"org_id": account.org_id, "records": []},
                "error": "test",
                "parked_at": time.time(),
            }
        )
        await redis.rpush(redis_keys.DEAD_LETTER, parked)
        try:
            assert _envelope(await account.http.get("/v1/overview"))["dead_letters"] == 1
            assert _envelope(await other.http.get("/v1/overview"))["dead_letters"] == 0
        finally:
            await redis.lrem(redis_keys.DEAD_LETTER, 1, parked)

        assert (await account.http.post("/v1/models/train", headers=account.csrf_header)).status_code == 202
        await drain()
        trained = _envelope(await account.http.get("/v1/models/status"))["model"]["version"]
        # Once this api process serves the org (its first recommendation loads it, if the sync loop
        # has not yet), the overview names the version it serves.
        served = await account.http.post("/v1/recommend", json={"strategy": "popular"}, headers=account.pk)
        assert served.status_code == 200

        async def serving() -> Any:
            return _envelope(await account.http.get("/v1/overview"))["serving_model_version"] == trained

        await eventually(serving, timeout=15, interval=0.1)


async def test_items_are_searched_by_id_or_title_and_paged_by_key(signed_in: Any, drain: Any) -> None:
    async with signed_in() as account, signed_in() as other:
        await _world(account, drain, "a")
        http = account.http

        listed = _envelope(await http.get("/v1/items", params={"limit": 4}))
        ids = [i["item_id"] for i in listed["items"]]
        assert ids == ["a-1", "a-2", "a-3", "a-4"]
        assert listed["pagination"] == {"limit": 4, "after": None, "next_after": "a-4", "has_next": True}
        assert listed["items"][0]["attributes"]["title"] == "Red Canvas Tote"
        assert listed["items"][3]["status"] == "inactive"
        rest = _envelope(await http.get("/v1/items", params={"limit": 4, "after": "a-4"}))
        assert [i["item_id"] for i in rest["items"]] == ["a-5", "a/with/slash"]
        assert rest["pagination"]["has_next"] is False and rest["pagination"]["next_after"] is None

        totes = _envelope(await http.get("/v1/items", params={"q": "TOTE"}))
        assert [i["item_id"] for i in totes["items"]] == [
            "a-1",
            "a-3",
            "a-4",
        ]  # case-insensitive, in the title
        active_totes = _envelope(await http.get("/v1/items", params={"q": "tote", "status": "active"}))
        assert [i["item_id"] for i in active_totes["items"]] == ["a-1", "a-3"]
        by_id = _envelope(await http.get("/v1/items", params={"q": "a/with"}))
        assert [i["item_id"] for i in by_id["items"]] == ["a/with/slash"]
        wildcard = _envelope(await http.get("/v1/items", params={"q": "%"}))  # a literal %, not a wildcard
        assert wildcard["items"] == []

        for bad in ({"limit": 0}, {"limit": 101}, {"status": "gone"}, {"q": "x" * 257}, {"after": ""}):
            refused = _envelope(await http.get("/v1/items", params=bad), 400)
            assert refused["error"][0]["field"] in ("limit", "status", "q", "after"), bad
        assert _envelope(await http.get("/v1/items", params={"q": "a\x00"}), 400)["error"] == "nul_character"

        assert _envelope(await other.http.get("/v1/items"))["items"] == []
        assert _envelope(await other.http.get("/v1/items", params={"q": "tote"}))["items"] == []


async def test_one_item_by_id_and_only_in_its_own_org(signed_in: Any, drain: Any) -> None:
    async with signed_in() as account, signed_in() as other:
        await _world(account, drain, "a")
        found = _envelope(await account.http.get("/v1/items/a-1"))
        assert found["item_id"] == "a-1" and found["status"] == "active" and found["item_type"] == "product"
        assert found["attributes"]["image_url"] == "https://img.example/1.jpg"
        assert found["created_at"].endswith("Z") and found["updated_at"].endswith("Z")
        assert _envelope(await account.http.get("/v1/items/a/with/slash"))["item_id"] == "a/with/slash"
        assert (
            _envelope(await account.http.get("/v1/items/nope"), 404)["message"]
            == "No item with this id in your catalog"
        )
        assert (await other.http.get("/v1/items/a-1")).status_code == 404


async def test_users_are_every_id_the_org_knows_searched_by_prefix(signed_in: Any, drain: Any) -> None:
    async with signed_in() as account, signed_in() as other:
        await _world(account, drain, "a")
        http = account.http
        listed = _envelope(await http.get("/v1/users"))
        by_id = {u["user_id"]: u for u in listed["users"]}
        assert list(by_id) == ["anon-9", "u-1", "u-2", "zz-upserted-only"]
        assert by_id["u-1"]["upserted"] is True and by_id["u-1"]["attributes"] == {"plan": "gold"}
        assert by_id["u-1"]["events"] == 2 and by_id["u-1"]["last_event_at"] is not None
        assert (
            by_id["u-2"]["upserted"] is False
            and by_id["u-2"]["status"] is None
            and by_id["u-2"]["events"] == 2
        )
        assert by_id["zz-upserted-only"]["events"] == 0 and by_id["zz-upserted-only"]["last_event_at"] is None

        first = _envelope(await http.get("/v1/users", params={"limit": 2}))
        assert [u["user_id"] for u in first["users"]] == ["anon-9", "u-1"]
        assert first["pagination"]["next_after"] == "u-1" and first["pagination"]["has_next"] is True
        second = _envelope(await http.get("/v1/users", params={"limit": 2, "after": "u-1"}))
        assert [u["user_id"] for u in second["users"]] == ["u-2", "zz-upserted-only"]
        assert second["pagination"]["has_next"] is False

        assert [
            u["user_id"] for u in _envelope(await http.get("/v1/users", params={"q": "u-"}))["users"]
        ] == ["u-1", "u-2"]
        page = _envelope(await http.get("/v1/users", params={"q": "u-", "after": "u-1"}))
        assert [u["user_id"] for u in page["users"]] == ["u-2"]
        assert (
            _envelope(await http.get("/v1/users", params={"q": "zz"}))["users"][0]["user_id"]
            == "zz-upserted-only"
        )
        assert _envelope(await http.get("/v1/users", params={"q": "nobody"}))["users"] == []
        assert _envelope(await other.http.get("/v1/users"))["users"] == []


async def test_a_users_activity_follows_identity_stitching(signed_in: Any, drain: Any) -> None:
    async with signed_in() as account, signed_in() as other:
        await _world(account, drain, "a")
        activity = _envelope(await account.http.get("/v1/users/u-2"))
        assert activity["canonical_id"] == "u-2" and activity["aliases"] == ["anon-9"]
        names = [(e["user_id"], e["event_name"], e["item_id"]) for e in activity["events"]]
        # Newest first: the anonymous view and the identify of today, then the view of three days ago.
        assert names[-1] == ("u-2", "view", "a-1")
        assert set(names[:-1]) == {("anon-9", "view", "a-3"), ("u-2", "identify", None)}
        assert activity["user"]["user_id"] == "u-2" and activity["user"]["upserted"] is False
        # Real-time state (Redis), as the session strategies read it: the stitched history.
        assert {a["item_id"] for a in activity["recent"]} == {"a-1", "a-3"}

        stitched = _envelope(await account.http.get("/v1/users/anon-9"))
        assert stitched["canonical_id"] == "u-2" and len(stitched["events"]) == len(activity["events"])

        limited = _envelope(await account.http.get("/v1/users/u-2", params={"limit": 1}))
        assert len(limited["events"]) == 1
        assert _envelope(await account.http.get("/v1/users/u-2", params={"limit": 0}), 400)

        # One path, two operations: GET reads the user, DELETE (erasure) stays as it was.
        put = await account.http.put("/v1/users/u-2", headers=account.sk)
        assert put.status_code == 405 and put.headers["allow"] == "DELETE, GET, HEAD"

        theirs = _envelope(await other.http.get("/v1/users/u-2"))
        assert theirs["events"] == [] and theirs["recent"] == [] and theirs["aliases"] == []
        assert theirs["user"]["events"] == 0


async def test_strategies_lists_the_registry(client: Any) -> None:
    listed = _envelope(await client.get("/v1/strategies"))
    assert [s["name"] for s in listed] == list(registry.REGISTRY)
    assert len(listed) == 14
    personalized = next(s for s in listed if s["name"] == "personalized")
    assert personalized == {
        "name": "personalized",
        "requires": "user_id",
        "fallback": "trending",
        "mode": "behavioral",
        "summary": registry.REGISTRY["personalized"].summary,
        "default": True,
    }


async def test_the_new_endpoints_are_documented_with_clean_ids_and_the_envelope(client: Any) -> None:
    document = (await client.get("/openapi.json")).json()
    expected = {
        ("get", "/v1/org"): "get_org",
        ("get", "/v1/overview"): "get_overview",
        ("get", "/v1/items"): "list_items",
        ("get", "/v1/items/{item_id}"): "get_item",
        ("get", "/v1/users"): "list_users",
        ("get", "/v1/users/{user_id}"): "get_user",
        ("get", "/v1/strategies"): "list_strategies",
        ("post", "/auth/logout"): "logout",
    }
    for (method, path), operation_id in expected.items():
        operation = document["paths"][path][method]
        assert operation["operationId"] == operation_id
        ok = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        assert ok.startswith("#/components/schemas/Envelope_")
        if path != "/v1/strategies":
            assert "401" in operation["responses"], path
    schemes = document["components"]["securitySchemes"]
    assert schemes["SessionCookie"]["in"] == "cookie" and schemes["SessionCookie"]["name"] == "lehnz_session"
    # The account endpoints declare the cookie next to the bearer token; the operator reads declare
    # only the key (the dashboard's cookie is no API credential: docs/dashboard.md).
    assert {"SessionCookie": []} in document["paths"]["/v1/keys"]["get"]["security"]
    assert document["paths"]["/v1/overview"]["get"]["security"] == [{"APIKeyHeader": []}]
