"""The real-time state recommend reads per request: one script call against real Redis."""

from __future__ import annotations

import uuid
from typing import Any

from app import redis_keys
from app.queue import create_redis
from app.recommend import realtime


def _event(user_id: str, item_id: str, at: float) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "user_id": user_id, "item_id": item_id, "event_name": "view",
            "event_family": "view", "occurred_at": at, "context": {"session_id": "s1"}}


async def _with_activity(redis: Any, org_id: str, user_id: str, items: list[str]) -> None:
    events = [_event(user_id, item, 1_700_000_000.0 + n) for n, item in enumerate(items)]
    await realtime.record_activity(redis, org_id, {user_id: events}, keep=50)


async def test_user_state_reads_recent_activity_even_after_redis_forgot_the_script(redis: Any, settings: Any) -> None:
    org_id = str(uuid.uuid4())
    await _with_activity(redis, org_id, "u1", ["a", "b", "c"])
    # What a Redis restart (or SCRIPT FLUSH) does: the script must be loaded again, transparently.
    await redis.script_flush()
    unbounded = create_redis(settings.redis_url, socket_timeout=None)  # the api's request-path client
    try:
        for client in (redis, unbounded):
            user_id, recent = await realtime.user_state(client, org_id, "u1", limit=2)
            assert user_id == "u1"
            assert [a.item_id for a in recent] == ["c", "b"]  # newest first, limited
            await redis.script_flush()
        assert await realtime.user_state(redis, org_id, "nobody", limit=5) == ("nobody", [])
    finally:
        await unbounded.aclose()
        await redis.delete(redis_keys.recent(org_id, "u1"))


async def test_user_state_of_a_stitched_id_is_the_canonical_users_activity(redis: Any) -> None:
    org_id = str(uuid.uuid4())
    await _with_activity(redis, org_id, "member-7", ["x", "y"])
    await redis.hset(redis_keys.aliases(org_id), "anon-1", "member-7")
    try:
        user_id, recent = await realtime.user_state(redis, org_id, "anon-1", limit=10)
        assert user_id == "member-7"
        assert [a.item_id for a in recent] == ["y", "x"]
    finally:
        await redis.delete(redis_keys.aliases(org_id), redis_keys.recent(org_id, "member-7"))

