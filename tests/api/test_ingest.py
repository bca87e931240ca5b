"""Ingestion over HTTP (API.md sections 2 and 4), persisted by a real worker into real Postgres."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from app import redis_keys
from app.storage.tables import Event, IdentityAlias, Item, ServedRecommendation, User
from tests.factories import OrgKeys, event, item, user

ITEMS = "/v1/ingest/items/upsert"
USERS = "/v1/ingest/users/upsert"
EVENTS = "/v1/ingest/events/ingest"


async def count(db: Any, table: Any, org: OrgKeys, *where: Any) -> int:
    async with db() as session:
        return int(
            await session.scalar(
                select(func.count()).select_from(table).where(table.org_id == uuid.UUID(org.org_id), *where)
            )
        )


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


async def test_a_job_run_twice_stores_once(settings: Any, org: OrgKeys, db: Any, redis: Any, drain: Any) -> None:
    """The same queued payload persisted twice (arq re-running a job) stores each event once."""
    from app.queue import Queue

    records = [
        {"event_id": str(uuid.uuid4()), "user_id": "u", "event_family": "engagement", "event_name": "view",
         "item_id": f"i{i}", "previous_user_id": None, "recommendation_id": None, "context": None,
         "occurred_at": 1.7e9 + i, "received_at": 1.7e9 + i}
        for i in range(10)
    ]
    queue = Queue(redis)
    await queue.enqueue_ingest("events", org.org_id, records)
    await queue.enqueue_ingest("events", org.org_id, records)
    await drain()
    assert await count(db, Event, org) == 10
    assert await redis.zcard(redis_keys.pending(org.org_id)) == 0
    recent = await redis.zcard(redis_keys.recent(org.org_id, "u"))
    assert recent == 10


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


async def test_delete_user_erases_events_aliases_and_realtime_state(
    client: Any, org: OrgKeys, db: Any, redis: Any, drain: Any
) -> None:
    await client.post(EVENTS, json=[event("anon", "view", "a"), event("gone", "view", "b")], headers=org.pk)
    await client.post(USERS, json=user("gone"), headers=org.sk)
    await drain()
    await client.post(EVENTS, json=event("gone", "identify", previous_user_id="anon"), headers=org.pk)
    await client.post(EVENTS, json=event("stays", "view", "a"), headers=org.pk)
    await drain()
    response = await client.delete("/v1/users/gone", headers=org.sk)
    assert response.status_code == 202
    assert await redis.exists(redis_keys.recent(org.org_id, "gone")) == 0  # at once, before the worker
    await drain()
    assert await count(db, Event, org, Event.user_id.in_(["gone", "anon"])) == 0
    assert await count(db, Event, org, Event.user_id == "stays") == 1
    assert await count(db, User, org) == 0
    assert await count(db, IdentityAlias, org) == 0


async def test_jobs_accepted_before_an_erasure_but_run_after_it_do_not_bring_the_user_back(
    client: Any, org: OrgKeys, db: Any, redis: Any, drain: Any
) -> None:
    """A job accepted before the DELETE can run after it (a retry after a Postgres blip, or a
    slower job beside the erasure on a worker running several at once)."""
    from app.queue import Queue

    assert (await client.post(USERS, json=user("gone"), headers=org.sk)).status_code == 202
    await drain()
    assert (await client.delete("/v1/users/gone", headers=org.sk)).status_code == 202
    await drain()
    assert await count(db, User, org) == 0
    before = float(await redis.hget(redis_keys.erased(org.org_id), "gone")) - 1.0
    queue = Queue(redis)
    await queue.enqueue_ingest("users", org.org_id, [
        {"user_id": "gone", "status": "active", "attributes": {"email": "gone@example.com"},
         "created_at": 1.7e9, "received_at": before},
    ])
    await queue.enqueue_ingest("events", org.org_id, [
        {"event_id": str(uuid.uuid4()), "user_id": "gone", "event_family": "engagement", "event_name": "view",
         "item_id": "i", "previous_user_id": None, "recommendation_id": None, "context": None,
         "occurred_at": 1.7e9, "received_at": before},
        # Linking the erased id to another user would bring it back too.
        {"event_id": str(uuid.uuid4()), "user_id": "someone", "event_family": "system", "event_name": "identify",
         "item_id": None, "previous_user_id": "gone", "recommendation_id": None, "context": None,
         "occurred_at": 1.7e9, "received_at": before},
    ])
    await drain()
    assert await count(db, User, org) == 0 and await count(db, Event, org) == 0
    assert await count(db, IdentityAlias, org) == 0
    assert await redis.zcard(redis_keys.pending(org.org_id)) == 0  # the jobs are done, not parked
    # The shopper signs up again after the erasure: stored as usual (the old profile, created
    # before the erasure, never comes back: tests/workers/test_erasure_late_data.py).
    signup = user("gone", created_at=datetime.now(UTC).isoformat())
    assert (await client.post(USERS, json=signup, headers=org.sk)).status_code == 202
    await drain()
    assert await count(db, User, org) == 1


async def test_erasure_scrubs_the_users_records_from_parked_jobs_and_keeps_the_rest(
    client: Any, org: OrgKeys, other_org: OrgKeys, redis: Any, drain: Any
) -> None:
    def record(user_id: str, **extra: Any) -> dict[str, Any]:
        return {"event_id": str(uuid.uuid4()), "user_id": user_id, "event_family": "engagement",
                "event_name": "view", "item_id": "i", "previous_user_id": None, "recommendation_id": None,
                "context": None, "occurred_at": 1.7e9, "received_at": 1.7e9, **extra}

    def served(org_id: str, user_id: str) -> dict[str, Any]:
        return {"org_id": org_id, "recommendation_id": str(uuid.uuid4()), "strategy": "popular",
                "mode": "popularity", "user_id": user_id, "context_item_id": None, "item_ids": ["i"],
                "model_version": None, "served_at": 1.7e9}

    def parked(function: str, **kwargs: Any) -> dict[str, Any]:
        return {"job_id": str(uuid.uuid4()), "function": function, "kwargs": kwargs, "error": "x", "tries": 1}

    events_job = parked("ingest_events", org_id=org.org_id, records=[record("gone"), record("stays")])
    linked_job = parked("ingest_events", org_id=org.org_id, records=[record("x", previous_user_id="gone")])
    users_job = parked("ingest_users", org_id=org.org_id, records=[
        {"user_id": "gone", "status": "active", "attributes": {}, "created_at": 1.7e9, "received_at": 1.7e9}])
    served_job = parked("persist_served", rows=[served(org.org_id, "gone"), served(other_org.org_id, "gone")])
    other_job = parked("ingest_events", org_id=other_org.org_id, records=[record("gone")])  # another org's "gone"
    jobs = [events_job, linked_job, users_job, served_job, other_job]
    await redis.rpush(redis_keys.DEAD_LETTER, *(orjson.dumps(j) for j in jobs))
    try:
        assert (await client.delete("/v1/users/gone", headers=org.sk)).status_code == 202
        await drain()
        left = {e["job_id"]: e for e in map(orjson.loads, await redis.lrange(redis_keys.DEAD_LETTER, 0, -1))}
        assert [r["user_id"] for r in left[events_job["job_id"]]["kwargs"]["records"]] == ["stays"]
        assert linked_job["job_id"] not in left and users_job["job_id"] not in left  # nothing left of them
        rows = left[served_job["job_id"]]["kwargs"]["rows"]
        assert [r["user_id"] for r in rows] == [None, "gone"]  # the other org's "gone" is someone else
        assert left[other_job["job_id"]] == other_job
    finally:
        for raw in await redis.lrange(redis_keys.DEAD_LETTER, 0, -1):
            if orjson.loads(raw)["job_id"] in {j["job_id"] for j in jobs}:
                await redis.lrem(redis_keys.DEAD_LETTER, 1, raw)


async def test_a_served_batch_racing_an_org_deletion_lands_the_other_orgs_rows(
    org: OrgKeys, other_org: OrgKeys, db: Any, redis: Any, drain: Any
) -> None:
    import asyncio

    from sqlalchemy import delete, text

    from app.queue import Queue
    from app.storage.tables import Org
    from tests.waiting import eventually

    def row(owner: OrgKeys) -> dict[str, Any]:
        return {"org_id": owner.org_id, "recommendation_id": str(uuid.uuid4()), "strategy": "popular",
                "mode": "popularity", "user_id": None, "context_item_id": None, "item_ids": ["a"],
                "model_version": None, "served_at": time.time()}

    rows = [row(org), row(other_org)]
    parked = await redis.llen(redis_keys.DEAD_LETTER)
    deleting = db()
    await deleting.execute(delete(Org).where(Org.id == uuid.UUID(org.org_id)))  # not committed yet
    try:
        await Queue(redis).enqueue_served(rows)
        persisting = asyncio.create_task(drain())

        async def insert_waits_on_the_delete() -> bool:
            async with db() as session:
                return bool(await session.scalar(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%INSERT INTO served_recommendations%'")))

        await eventually(insert_waits_on_the_delete, timeout=10)
        await deleting.commit()
        await persisting
    finally:
        await deleting.close()
    assert await redis.llen(redis_keys.DEAD_LETTER) == parked
    async with db() as session:
        assert await session.get(ServedRecommendation, (uuid.UUID(other_org.org_id),
                                                        uuid.UUID(rows[1]["recommendation_id"]))) is not None


async def test_concurrent_rewrites_of_the_dead_letter_list_compose(redis: Any) -> None:
    """Two erasures scrubbing the same parked job at once: both users' records go."""
    import asyncio

    from app.queue import Queue

    job_id = str(uuid.uuid4())
    entry = {"job_id": job_id, "function": "ingest_events", "kwargs": {"records": ["a", "b", "c"]}}
    await redis.rpush(redis_keys.DEAD_LETTER, orjson.dumps(entry))

    def without(letter: str) -> Any:
        def change(e: dict[str, Any]) -> dict[str, Any] | None:
            records = e["kwargs"]["records"]
            if e["job_id"] != job_id or letter not in records:
                return None
            return {**e, "kwargs": {"records": [r for r in records if r != letter]}}
        return change

    queue = Queue(redis)
    await asyncio.gather(queue.rewrite_dead_letters(without("a")), queue.rewrite_dead_letters(without("b")))
    [left] = [e for e in map(orjson.loads, await redis.lrange(redis_keys.DEAD_LETTER, 0, -1)) if e["job_id"] == job_id]
    assert left["kwargs"]["records"] == ["c"]
    await redis.lrem(redis_keys.DEAD_LETTER, 1, orjson.dumps(left))


async def test_erasure_unties_the_served_log_from_the_user_and_keeps_the_counts(
    client: Any, app: Any, org: OrgKeys, db: Any, redis: Any, drain: Any
) -> None:
    from app.queue import Queue

    async def served_to() -> list[str | None]:
        """The served log's user ids, untied (None) ones first."""
        async with db() as session:
            rows = await session.scalars(select(ServedRecommendation.user_id).where(
                ServedRecommendation.org_id == uuid.UUID(org.org_id)))
            return sorted(rows, key=lambda user_id: (user_id is not None, user_id or ""))

    await client.post(ITEMS, json=[item("a"), item("b")], headers=org.sk)
    await drain()
    for user_id in ("gone", "stays"):
        response = await client.post("/v1/recommend", json={"strategy": "popular", "user_id": user_id},
                                     headers=org.pk)
        assert response.status_code == 200
    await app.state.lehnz.served_log.flush()

    def row(served_at: float) -> dict[str, Any]:
        return {"org_id": org.org_id, "recommendation_id": str(uuid.uuid4()), "strategy": "popular",
                "mode": "popularity", "user_id": "gone", "context_item_id": None, "item_ids": ["a"],
                "model_version": None, "served_at": served_at}

    # Served after the erasure request (the shopper came back): stays tied to them.
    await Queue(redis).enqueue_served([row(time.time() + 3600)])
    await drain()
    assert await served_to() == ["gone", "gone", "stays"]
    assert (await client.delete("/v1/users/gone", headers=org.sk)).status_code == 202
    await drain()
    assert await served_to() == [None, "gone", "stays"]
    # A row that sat in the api's buffer or the queue while the erasure ran loses the id too.
    erased_at = float(await redis.hget(redis_keys.erased(org.org_id), "gone"))
    await Queue(redis).enqueue_served([row(erased_at - 0.5)])
    await drain()
    assert await served_to() == [None, None, "gone", "stays"]
    totals = (await client.get("/v1/analytics/recommendations", headers=org.sk)).json()["data"]["totals"]
    assert totals["served"] == 3  # the future-dated row is outside the default window


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


async def test_a_poison_job_is_parked_then_replayed_without_loss(
    org: OrgKeys, redis: Any, db: Any, drain: Any
) -> None:
    """A job failing for a reason retrying cannot fix goes to the dead-letter list, whole."""
    from app.queue import Queue

    queue = Queue(redis)
    records = [
        {"event_id": str(uuid.uuid4()), "user_id": "u", "event_family": "engagement", "event_name": "view",
         "item_id": "i", "previous_user_id": None, "recommendation_id": None, "context": None,
         "occurred_at": 1.79e9, "received_at": 1.79e9}
    ]
    missing_org = str(uuid.uuid4())  # no such org: a foreign-key violation, not transient
    before = await redis.llen(redis_keys.DEAD_LETTER)
    await queue.enqueue_ingest("events", missing_org, records)
    await drain()
    assert await redis.llen(redis_keys.DEAD_LETTER) == before + 1
    parked = (await queue.dead_letters(limit=before + 1))[-1]
    assert parked["function"] == "ingest_events" and parked["kwargs"]["records"] == records
    assert "ForeignKeyViolation" in parked["error"] or "foreign key" in parked["error"].lower()
    assert await redis.zcard(redis_keys.pending(missing_org)) == 0
    # The operator fixes the cause (here: moves the payload to a real org) and replays.
    fixed = dict(parked, kwargs={**parked["kwargs"], "org_id": org.org_id})
    await redis.rpop(redis_keys.DEAD_LETTER)
    await redis.rpush(redis_keys.DEAD_LETTER, orjson.dumps(fixed))
    assert await queue.replay_dead_letters() >= 1
    await drain()
    assert await count(db, Event, org) == 1


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
