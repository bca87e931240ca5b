"""Ingestion over HTTP (API.md sections 2 and 4), persisted by a real worker into real Postgres."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from app import redis_keys
from app.storage.tables import Event, IdentityAlias, Item, User
from tests.factories import OrgKeys, count, event, item, user

ITEMS = "/v1/ingest/items/upsert"
USERS = "/v1/ingest/users/upsert"
EVENTS = "/v1/ingest/events/ingest"


def assert_envelope(body: dict[str, Any], *, success: bool) -> None:
    assert set(body) == {"success", "message", "data", "error"}
    assert body["success"] is success
    assert isinstance(body["message"], str) and body["message"]


async def test_single_item_is_accepted_then_persisted(client: Any, org: OrgKeys, db: Any, drain: Any) -> None:
    response = await client.post(ITEMS, json=item("sku-1", attributes={"price": 9.5}), headers=org.sk)
    assert response.status_code == 202
    body = response.json()
    assert_envelope(body, success=True)
    assert body == {"success": True, "message": "items accepted", "data": {"accepted": 1}, "error": None}

    await drain()
    async with db() as session:
        row = await session.get(Item, (uuid.UUID(org.org_id), "sku-1"))
    assert row is not None and row.status == "active" and row.attributes == {"price": 9.5}


async def test_batch_of_users_and_events_is_persisted(client: Any, org: OrgKeys, db: Any, drain: Any) -> None:
    users = [user(f"u{i}") for i in range(5)]
    assert (await client.post(USERS, json=users, headers=org.sk)).json()["data"] == {"accepted": 5}
    events = [event(f"u{i % 5}", "view", f"sku-{i}") for i in range(40)]
    response = await client.post(EVENTS, json=events, headers=org.pk)
    assert response.status_code == 202 and response.json()["message"] == "events accepted"
    await drain()
    assert await count(db, User, org) == 5
    assert await count(db, Event, org) == 40


async def test_later_upsert_replaces_item_fields(client: Any, org: OrgKeys, db: Any, drain: Any) -> None:
    await client.post(ITEMS, json=item("sku-9", attributes={"brand": "A"}), headers=org.sk)
    await drain()
    await client.post(ITEMS, json=item("sku-9", status="inactive", item_type="article", attributes={"brand": "B"}),
                      headers=org.sk)
    await drain()
    async with db() as session:
        row = await session.get(Item, (uuid.UUID(org.org_id), "sku-9"))
    assert (row.status, row.item_type, row.attributes) == ("inactive", "article", {"brand": "B"})


async def test_batch_with_one_bad_record_queues_nothing_and_names_it(
    client: Any, org: OrgKeys, redis: Any
) -> None:
    batch = [item("a"), item("b", status="gone"), item("c"), {"item_id": "d"}]
    response = await client.post(ITEMS, json=batch, headers=org.sk)
    assert response.status_code == 400
    body = response.json()
    assert_envelope(body, success=False)
    fields = {e["field"] for e in body["error"]}
    assert "items[1].status" in fields
    assert {"items[3].item_type", "items[3].status"} <= fields
    assert not any(f.startswith(("items[0]", "items[2]")) for f in fields)
    assert await redis.zcard(redis_keys.pending(org.org_id)) == 0


async def test_event_without_previous_user_id_for_identify_is_400(client: Any, org: OrgKeys) -> None:
    response = await client.post(EVENTS, json=[event("u1", "view", "x"), event("u1", "identify")], headers=org.pk)
    assert response.status_code == 400
    assert response.json()["error"] == [
        {"field": "events[1]", "issue": "identify events require previous_user_id"}
    ]


@pytest.mark.parametrize(
    ("content", "content_type", "message_part"),
    [
        (b'{"item_id": "x",', "application/json", "Malformed JSON"),
        (b'{"item_id": "x"}', "text/plain", "Content-Type"),
        (b"", "application/json", "empty"),
        (b'"just a string"', "application/json", "object or an array"),
        (b'{"a": NaN}', "application/json", "Malformed JSON"),
    ],
)
async def test_unreadable_bodies_are_400_in_the_envelope(
    client: Any, org: OrgKeys, content: bytes, content_type: str, message_part: str
) -> None:
    response = await client.post(ITEMS, content=content, headers={**org.sk, "Content-Type": content_type})
    assert response.status_code == 400
    body = response.json()
    assert_envelope(body, success=False)
    assert message_part in body["message"]


async def test_batch_over_the_record_limit_is_413(client: Any, org: OrgKeys, redis: Any) -> None:
    response = await client.post(EVENTS, json=[event("u", "view", "i")] * 1001, headers=org.pk)
    assert response.status_code == 413
    assert_envelope(response.json(), success=False)
    assert "1000" in response.json()["message"]
    assert await redis.zcard(redis_keys.pending(org.org_id)) == 0


async def test_body_over_the_size_limit_is_413_before_parsing(client: Any, org: OrgKeys) -> None:
    big = orjson.dumps([item(f"i{i}", attributes={"blob": "x" * 6000}) for i in range(1000)])
    assert len(big) > 5 * 1024 * 1024
    response = await client.post(ITEMS, content=big, headers={**org.sk, "Content-Type": "application/json"})
    assert response.status_code == 413
    assert_envelope(response.json(), success=False)


async def test_chunked_body_over_the_size_limit_is_413(client: Any, org: OrgKeys) -> None:
    async def chunks() -> Any:
        for _ in range(7):
            yield b" " * (1024 * 1024)

    response = await client.post(ITEMS, content=chunks(), headers={**org.sk, "Content-Type": "application/json"})
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("path", "body", "key_kind"),
    [
        (ITEMS, item("x"), "pk"),
        (USERS, user("x"), "pk"),
        (EVENTS, event("u", "view", "x"), "sk"),
    ],
)
async def test_wrong_key_type_is_403(client: Any, org: OrgKeys, path: str, body: Any, key_kind: str) -> None:
    response = await client.post(path, json=body, headers=getattr(org, key_kind))
    assert response.status_code == 403
    assert_envelope(response.json(), success=False)


@pytest.mark.parametrize("headers", [{}, {"X-API-KEY": "lehnz_sk_not-a-real-key"}, {"X-API-KEY": ""}])
async def test_missing_or_unknown_key_is_401(client: Any, headers: dict[str, str]) -> None:
    response = await client.post(ITEMS, json=item("x"), headers=headers)
    assert response.status_code == 401
    assert_envelope(response.json(), success=False)


async def test_bearer_prefix_is_not_accepted(client: Any, org: OrgKeys) -> None:
    response = await client.post(ITEMS, json=item("x"), headers={"X-API-KEY": f"Bearer {org.secret_key}"})
    assert response.status_code == 401


async def test_same_event_id_twice_is_stored_once(client: Any, org: OrgKeys, db: Any, drain: Any) -> None:
    event_id = str(uuid.uuid4())
    one = event("u1", "purchase", "sku-1", event_id=event_id)
    await client.post(EVENTS, json=one, headers=org.pk)
    await client.post(EVENTS, json=[one, one], headers=org.pk)
    await drain()
    assert await count(db, Event, org, Event.event_id == uuid.UUID(event_id)) == 1


async def test_identify_merges_anonymous_history_into_the_user(
    client: Any, org: OrgKeys, db: Any, redis: Any, drain: Any
) -> None:
    await client.post(EVENTS, json=[event("anon-1", "view", "a"), event("anon-1", "view", "b")], headers=org.pk)
    await drain()
    await client.post(EVENTS, json=event("real", "identify", previous_user_id="anon-1"), headers=org.pk)
    await drain()
    members = await redis.zrange(redis_keys.recent(org.org_id, "real"), 0, -1)
    assert sorted(orjson.loads(m)["i"] for m in members) == ["a", "b"]
    assert await redis.exists(redis_keys.recent(org.org_id, "anon-1")) == 0
    # Events that arrive later under the anonymous id land on the real user too.
    await client.post(EVENTS, json=event("anon-1", "view", "c"), headers=org.pk)
    await drain()
    members = await redis.zrange(redis_keys.recent(org.org_id, "real"), 0, -1)
    assert sorted(orjson.loads(m)["i"] for m in members) == ["a", "b", "c"]


async def test_identity_chains_resolve_to_the_final_id(client: Any, org: OrgKeys, db: Any, drain: Any) -> None:
    await client.post(EVENTS, json=event("anon-2", "identify", previous_user_id="anon-1"), headers=org.pk)
    await drain()
    await client.post(EVENTS, json=event("real", "identify", previous_user_id="anon-2"), headers=org.pk)
    await drain()
    async with db() as session:
        rows = dict(
            (await session.execute(
                select(IdentityAlias.alias_id, IdentityAlias.canonical_id).where(
                    IdentityAlias.org_id == uuid.UUID(org.org_id))
            )).all()
        )
    assert rows == {"anon-1": "real", "anon-2": "real"}


async def test_identify_cycle_does_not_loop(client: Any, org: OrgKeys, db: Any, drain: Any) -> None:
    cycle = [event(f"u{(i + 1) % 50}", "identify", previous_user_id=f"u{i}", timestamp=f"2026-01-01T00:00:{i % 60:02d}Z")
             for i in range(50)]
    assert (await client.post(EVENTS, json=cycle, headers=org.pk)).status_code == 202
    await drain()
    async with db() as session:
        rows = dict(
            (await session.execute(
                select(IdentityAlias.alias_id, IdentityAlias.canonical_id).where(
                    IdentityAlias.org_id == uuid.UUID(org.org_id))
            )).all()
        )
    # Every alias resolves in one hop to an id that is not itself an alias.
    assert rows and all(canonical not in rows for canonical in rows.values())


async def test_two_orgs_never_see_each_others_data(
    client: Any, org: OrgKeys, other_org: OrgKeys, db: Any, drain: Any
) -> None:
    await client.post(ITEMS, json=item("shared-id", attributes={"owner": "a"}), headers=org.sk)
    await client.post(ITEMS, json=item("shared-id", attributes={"owner": "b"}), headers=other_org.sk)
    await drain()
    async with db() as session:
        a = await session.get(Item, (uuid.UUID(org.org_id), "shared-id"))
        b = await session.get(Item, (uuid.UUID(other_org.org_id), "shared-id"))
    assert a.attributes == {"owner": "a"} and b.attributes == {"owner": "b"}


async def test_unknown_path_and_method_use_the_envelope(client: Any) -> None:
    response = await client.get("/v1/nope")
    assert response.status_code == 404
    assert_envelope(response.json(), success=False)
    response = await client.get(ITEMS)
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert_envelope(response.json(), success=False)
    both = await client.put("/v1/keys")  # GET and POST share this path
    assert both.status_code == 405 and both.headers["Allow"] == "GET, HEAD, POST"


async def test_hostile_values_are_rejected_with_400(client: Any, org: OrgKeys) -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(40):
        node["x"] = {}
        node = node["x"]
    cases = [
        item("nul\x00id"),
        item("x", attributes={"k": "v\x00"}),
        item("x", attributes=deep),
        item("x" * 257),
        event("u", "view", "i", timestamp="2999-01-01T00:00:00Z"),
        event("u", "view", "i", timestamp="1969-01-01T00:00:00Z"),
        event("u", "View", "i"),
    ]
    for case in cases:
        path = EVENTS if "event_name" in case else ITEMS
        headers = org.pk if path == EVENTS else org.sk
        response = await client.post(path, json=case, headers=headers)
        assert response.status_code == 400, case
        assert_envelope(response.json(), success=False)


async def test_unexpected_error_is_a_500_envelope_that_leaks_nothing(settings: Any) -> None:
    import httpx

    from app.main import create_app

    application = create_app(settings)

    async def explode() -> None:
        raise RuntimeError("password=hunter2 at /srv/secret/path.py line 42")

    application.add_api_route("/boom", explode, methods=["GET"])
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.get("/boom")
    assert response.status_code == 500
    body = response.json()
    assert_envelope(body, success=False)
    assert body["error"] == "internal_error"
    assert "hunter2" not in response.text and "Traceback" not in response.text and "secret" not in response.text
    assert response.headers["x-request-id"] in body["message"]


async def test_concurrent_single_events_share_jobs_and_all_land(
    client: Any, org: OrgKeys, db: Any, redis: Any, drain: Any
) -> None:
    """Group commit: while one enqueue is in flight, the org's next requests gather into one job."""
    import asyncio

    responses = await asyncio.gather(*(
        client.post(EVENTS, json=event(f"u{n}", "view", f"i{n}"), headers=org.pk) for n in range(60)
    ))
    assert all(r.status_code == 202 and r.json()["data"] == {"accepted": 1} for r in responses)
    jobs = await redis.zcard(redis_keys.pending(org.org_id))
    assert 1 <= jobs < 60
    await drain()
    assert await count(db, Event, org) == 60
