"""Erasure and late data: one rule on every path (app/erasure_rule.py).

What happened before an erasure never comes back, whenever and however it arrives (an offline
app flushing its queue, a storefront's outbox retrying, an old export); what is sent and
happens after it is new data. `lehnz import` is tested against the same rule in
tests/cli/test_import.py.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import select

from app import redis_keys
from app.storage import events as event_store
from app.storage.tables import Event, IdentityAlias, User
from tests.factories import OrgKeys, event, user

EVENTS = "/v1/ingest/events/ingest"
USERS = "/v1/ingest/users/upsert"


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


async def _erase(client: Any, org: OrgKeys, redis: Any, drain: Any, user_id: str) -> float:
    """DELETE the user, run the erasure; returns the erasure time (its tombstone)."""
    assert (await client.delete(f"/v1/users/{user_id}", headers=org.sk)).status_code == 202
    await drain()
    return float(await redis.hget(redis_keys.erased(org.org_id), user_id))


async def _events(db: Any, org: OrgKeys) -> list[tuple[str, str | None, str]]:
    async with db() as session:
        rows = await session.execute(
            select(Event.user_id, Event.item_id, Event.event_name).where(Event.org_id == uuid.UUID(org.org_id))
        )
        return sorted((r[0], r[1], r[2]) for r in rows)


async def test_events_from_before_an_erasure_sent_after_it_are_not_stored(
    client: Any, org: OrgKeys, db: Any, redis: Any, drain: Any
) -> None:
    history = [event("gone", "view", "a"), event("gone", "purchase", "b")]
    assert (await client.post(EVENTS, json=history, headers=org.pk)).status_code == 202
    await drain()
    erased_at = await _erase(client, org, redis, drain, "gone")

    late = [
        # The offline app's queue, flushed after the erasure: stamped before it.
        event("gone", "view", "a", timestamp=_iso(erased_at - 3600)),
        event("gone", "purchase", "b", timestamp=_iso(erased_at - 60)),
        # Linking the erased id from before the erasure would bring it back too.
        event("someone", "identify", previous_user_id="gone", timestamp=_iso(erased_at - 30)),
        # The shopper came back: no timestamp (now), or stamped after the erasure.
        event("gone", "view", "c"),
        event("gone", "click", "d", timestamp=_iso(erased_at + 0.5)),
        event("stays", "view", "a", timestamp=_iso(erased_at - 3600)),  # someone else's old event
    ]
    assert (await client.post(EVENTS, json=late, headers=org.pk)).status_code == 202
    await drain()
    assert await _events(db, org) == [("gone", "c", "view"), ("gone", "d", "click"), ("stays", "a", "view")]
    async with db() as session:
        links = await session.scalars(select(IdentityAlias).where(IdentityAlias.org_id == uuid.UUID(org.org_id)))
        assert links.all() == []
    recent = await redis.zrange(redis_keys.recent(org.org_id, "gone"), 0, -1)
    assert sorted(orjson.loads(m)["i"] for m in recent) == ["c", "d"]


async def test_a_profile_created_before_the_erasure_is_not_stored_but_a_new_signup_is(
    client: Any, org: OrgKeys, db: Any, redis: Any, drain: Any
) -> None:
    for user_id in ("gone", "back"):
        assert (await client.post(USERS, json=user(user_id), headers=org.sk)).status_code == 202
    await drain()
    erased = {user_id: await _erase(client, org, redis, drain, user_id) for user_id in ("gone", "back")}
    resync = [
        user("gone", created_at=_iso(erased["gone"] - 86400)),  # the shop's nightly sync, same old profile
        user("back", created_at=_iso(erased["back"] + 1)),  # an account made after the erasure
    ]
    assert (await client.post(USERS, json=resync, headers=org.sk)).status_code == 202
    await drain()
    async with db() as session:
        stored = (await session.scalars(select(User.user_id).where(User.org_id == uuid.UUID(org.org_id)))).all()
    assert stored == ["back"]


async def test_the_erasure_removes_what_happened_before_it_whenever_it_arrived(
    client: Any, org: OrgKeys, db: Any, redis: Any, drain: Any
) -> None:
    """An event stored after the erasure was requested but before its job ran (by a worker that
    read no tombstone for that id: an alias the erasure finds only when it runs) goes with it
    when it happened before the request."""
    assert (await client.delete("/v1/users/gone", headers=org.sk)).status_code == 202
    erased_at = float(await redis.hget(redis_keys.erased(org.org_id), "gone"))

    def stored(item_id: str, *, occurred_at: float) -> dict[str, Any]:
        return {"event_id": str(uuid.uuid4()), "user_id": "gone", "event_family": "engagement",
                "event_name": "view", "item_id": item_id, "previous_user_id": None, "recommendation_id": None,
                "context": None, "occurred_at": occurred_at, "received_at": erased_at + 1}

    async with db() as session, session.begin():
        await event_store.insert_events(session, uuid.UUID(org.org_id), [
            stored("before", occurred_at=erased_at - 60), stored("after", occurred_at=erased_at + 1),
        ])
    await drain()  # the erasure job
    assert await _events(db, org) == [("gone", "after", "view")]


async def test_parked_jobs_lose_the_records_from_before_the_erasure_whenever_received(
    client: Any, org: OrgKeys, redis: Any, drain: Any
) -> None:
    now = datetime.now(UTC).timestamp()
    later = now + 3600  # received (and parked) after the erasure below

    def record(item_id: str, occurred_at: float) -> dict[str, Any]:
        return {"event_id": str(uuid.uuid4()), "user_id": "gone", "event_family": "engagement",
                "event_name": "view", "item_id": item_id, "previous_user_id": None, "recommendation_id": None,
                "context": None, "occurred_at": occurred_at, "received_at": later}

    job = {"job_id": str(uuid.uuid4()), "function": "ingest_events", "error": "x", "tries": 1,
           "kwargs": {"org_id": org.org_id, "records": [record("old", now - 86400), record("new", later)]}}
    users_job = {"job_id": str(uuid.uuid4()), "function": "ingest_users", "error": "x", "tries": 1,
                 "kwargs": {"org_id": org.org_id, "records": [
                     {"user_id": "gone", "status": "active", "attributes": {}, "created_at": now - 86400,
                      "received_at": later}]}}
    await redis.rpush(redis_keys.DEAD_LETTER, orjson.dumps(job), orjson.dumps(users_job))
    try:
        assert (await client.delete("/v1/users/gone", headers=org.sk)).status_code == 202
        await drain()
        left = {e["job_id"]: e for e in map(orjson.loads, await redis.lrange(redis_keys.DEAD_LETTER, 0, -1))}
        assert [r["item_id"] for r in left[job["job_id"]]["kwargs"]["records"]] == ["new"]
        assert users_job["job_id"] not in left
    finally:
        for raw in await redis.lrange(redis_keys.DEAD_LETTER, 0, -1):
            if orjson.loads(raw)["job_id"] in (job["job_id"], users_job["job_id"]):
                await redis.lrem(redis_keys.DEAD_LETTER, 1, raw)


def test_the_rule_in_words() -> None:
    from app.erasure_rule import before_erasure

    at = 1_000.0
    assert not before_erasure(None, received_at=0, happened_at=0)  # never erased
    assert before_erasure(at, received_at=at - 1, happened_at=at + 1)  # sent before the erasure
    assert before_erasure(at, received_at=at + 1, happened_at=at - 1)  # happened before it, sent after
    assert not before_erasure(at, received_at=at + 1, happened_at=at + 1)  # new data
