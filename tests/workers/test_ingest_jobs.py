"""What the worker's ingest jobs do once accepted (app/queue.py, workers/ingest.py, workers/erasure.py):
each job stored once, erasures that late jobs and parked jobs cannot undo, the dead-letter list.
Real Postgres and Redis; jobs run by the real worker in burst mode (the drain fixture)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import pytest_asyncio
from sqlalchemy import select

from app import redis_keys
from app.storage.tables import Event, IdentityAlias, ServedRecommendation, User
from tests.factories import OrgKeys, count, event, item, user

ITEMS = "/v1/ingest/items/upsert"
USERS = "/v1/ingest/users/upsert"
EVENTS = "/v1/ingest/events/ingest"


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
            if e["job_id"] != job_id:
                return None  # other tests' entries (some parked malformed on purpose)
            records = e["kwargs"]["records"]
            if letter not in records:
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


@pytest_asyncio.fixture
async def only_our_dead_letters(redis: Any) -> AsyncIterator[None]:
    """The dead-letter list holds only what this test parks: what earlier tests left there (some
    park malformed jobs on purpose) is set aside, and put back in front afterwards."""
    aside = f"{redis_keys.DEAD_LETTER}:set-aside-{uuid.uuid4().hex}"
    if await redis.exists(redis_keys.DEAD_LETTER):
        await redis.rename(redis_keys.DEAD_LETTER, aside)
    try:
        yield
    finally:
        earlier = await redis.lrange(aside, 0, -1)
        if earlier:
            await redis.lpush(redis_keys.DEAD_LETTER, *reversed(earlier))
        await redis.delete(aside)


@pytest.mark.usefixtures("only_our_dead_letters")
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
