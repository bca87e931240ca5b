"""Per-user recent activity in Redis: written by the worker, read by the real-time strategies.

One sorted set per (org, user): member = a compact JSON entry that includes the event id (so
re-applying a retried job adds nothing), score = the interaction's unix time (so late events
land in order). Trimmed to the newest N entries.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

from app import redis_keys

# An anonymous visitor who never comes back should not cost Redis memory forever.
RECENT_TTL_S = 90 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Activity:
    item_id: str
    event_name: str
    event_family: str
    timestamp: float
    order_id: str | None
    session_id: str | None
    price: float | None


def encode(record: dict[str, Any]) -> bytes:
    context = record.get("context") or {}
    entry = {
        "id": record["event_id"],
        "i": record["item_id"],
        "e": record["event_name"],
        "f": record["event_family"],
        "t": record["occurred_at"],
        "o": _text_or_none(context.get("order_id")),
        "s": _text_or_none(context.get("session_id")),
        "p": _number_or_none(context.get("price")),
    }
    return orjson.dumps(entry)


def decode(raw: bytes | str) -> Activity:
    entry = orjson.loads(raw)
    return Activity(
        item_id=entry["i"],
        event_name=entry["e"],
        event_family=entry["f"],
        timestamp=float(entry["t"]),
        order_id=entry.get("o"),
        session_id=entry.get("s"),
        price=entry.get("p"),
    )


# For every user key: add the entries, keep the newest `keep`, refresh the TTL. One command for
# a whole job instead of three per user: a 1,000-event job touching 1,000 users spent most of
# its time parsing 3,000 replies on the client.
_RECORD = """
local keep, ttl, at = tonumber(ARGV[1]), tonumber(ARGV[2]), 3
for k = 1, #KEYS do
    local n = tonumber(ARGV[at])
    redis.call('ZADD', KEYS[k], unpack(ARGV, at + 1, at + 2 * n))
    redis.call('ZREMRANGEBYRANK', KEYS[k], 0, -(keep + 1))
    redis.call('EXPIRE', KEYS[k], ttl)
    at = at + 1 + 2 * n
end
return #KEYS
"""
# Users per script call: bounds the Lua argument stack and how long one call holds Redis.
_USERS_PER_CALL = 500


async def record_activity(
    redis: Redis, org_id: str, by_user: dict[str, list[dict[str, Any]]], *, keep: int
) -> None:
    """Write these events (grouped by canonical user) into the users' recent activity."""
    script = redis.register_script(_RECORD)
    users = list(by_user.items())
    for start in range(0, len(users), _USERS_PER_CALL):
        keys: list[str] = []
        args: list[Any] = [keep, RECENT_TTL_S]
        for user_id, records in users[start:start + _USERS_PER_CALL]:
            keys.append(redis_keys.recent(org_id, user_id))
            args.append(len(records))
            for record in records:
                args.append(record["occurred_at"])
                args.append(encode(record))
        await script(keys=keys, args=args)


def merge_users(pipe: Pipeline, org_id: str, *, into: str, sources: Iterable[str], keep: int) -> None:
    """Identity stitching: the anonymous ids' recent activity becomes the real user's."""
    target = redis_keys.recent(org_id, into)
    source_keys = [redis_keys.recent(org_id, s) for s in sources if s != into]
    if not source_keys:
        return
    pipe.zunionstore(target, [target, *source_keys], aggregate="MAX")
    pipe.zremrangebyrank(target, 0, -(keep + 1))
    pipe.expire(target, RECENT_TTL_S)
    pipe.delete(*source_keys)


async def resolve_user(redis: Redis, org_id: str, user_id: str) -> str:
    canonical = await redis.hget(redis_keys.aliases(org_id), user_id)
    if canonical is None:
        return user_id
    return canonical.decode() if isinstance(canonical, bytes) else str(canonical)


async def read_recent(redis: Redis, org_id: str, user_id: str, *, limit: int = 50) -> list[Activity]:
    """Newest first. `user_id` must already be canonical (see resolve_user)."""
    raw = await redis.zrevrange(redis_keys.recent(org_id, user_id), 0, limit - 1)
    return [decode(member) for member in raw]


def _text_or_none(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)[:256]


def _number_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


# The canonical id (if the user was stitched into another) or, if not, the user's own recent
# activity: one command, where a pipeline of HGET + ZREVRANGE cost twice the client-side work.
# A stitched user's activity is read by a second call: a script must declare every key it
# touches, and the canonical user's key is not known before the HGET.
_USER_STATE = """
local canonical = redis.call('HGET', KEYS[1], ARGV[1])
if canonical then return {canonical, false} end
return {false, redis.call('ZREVRANGE', KEYS[2], 0, tonumber(ARGV[2]) - 1)}
"""
_USER_STATE_SHA = hashlib.sha1(_USER_STATE.encode()).hexdigest()


async def user_state(redis: Redis, org_id: str, user_id: str, *, limit: int) -> tuple[str, list[Activity]]:
    """(canonical user id, recent activity newest first) in one round trip (two after a stitch)."""
    keys_and_args = (redis_keys.aliases(org_id), redis_keys.recent(org_id, user_id), user_id, limit)
    try:
        canonical_raw, members = await redis.evalsha(_USER_STATE_SHA, 2, *keys_and_args)
    except NoScriptError:  # a Redis that has not seen the script yet (or restarted and forgot it)
        await redis.script_load(_USER_STATE)
        canonical_raw, members = await redis.evalsha(_USER_STATE_SHA, 2, *keys_and_args)
    if not canonical_raw:  # Lua false arrives as None
        return user_id, [decode(m) for m in members or []]
    canonical = canonical_raw.decode() if isinstance(canonical_raw, bytes) else str(canonical_raw)
    return canonical, await read_recent(redis, org_id, canonical, limit=limit)
