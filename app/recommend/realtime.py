"""Per-user recent activity in Redis: written by the worker, read by the real-time strategies.

One sorted set per (org, user): member = a compact JSON entry that starts with the event id,
score = the interaction's unix time (so late events land in order). Trimmed to the newest N
entries. Writes are idempotent by event id: an event stored before (a retried job, a re-sent
batch) is written as stored and only if the set does not hold its id yet, whatever else
differs (a client's retry of an event without `timestamp` gets a later receive time), so no
event is ever counted twice.

The alias map (per org, alias user id -> canonical user id) lives here too: identity stitching
writes it, requests and the ingest worker resolve ids through it, and an erasure removes the
user's ids from it and their activity (activity_forgotten, aliases_forgotten).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

from app import redis_keys

# `type: ignore[misc]` on an awaited command: redis-py types an async reply as Awaitable[T] | T.

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
        "id": record["event_id"],  # first: _RECORD reads it from the front of a member
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
# its time parsing 3,000 replies on the client. Each user's entries come in two runs: events
# stored for the first time by this job (no Redis write can have preceded their commit, so
# they are added as they are) and events stored before (a retry), added only when no entry
# of the same event id is there. That entry has the same time (the stored one), so only the
# entries within a millisecond of it are compared: the common case costs no read at all.
_RECORD = """
local keep, ttl, at = tonumber(ARGV[1]), tonumber(ARGV[2]), 3
local function event_id(member) return string.match(member, '^{"id":"([^"]*)"') end
for k = 1, #KEYS do
    local fresh, repeated = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
    at = at + 2
    if fresh > 0 then
        redis.call('ZADD', KEYS[k], unpack(ARGV, at, at + 2 * fresh - 1))
        at = at + 2 * fresh
    end
    for j = at, at + 2 * repeated - 1, 2 do
        local score, id, held = tonumber(ARGV[j]), event_id(ARGV[j + 1]), false
        for _, near in ipairs(redis.call('ZRANGEBYSCORE', KEYS[k], score - 0.001, score + 0.001)) do
            if event_id(near) == id then
                held = true
                break
            end
        end
        if not held then redis.call('ZADD', KEYS[k], score, ARGV[j + 1]) end
    end
    at = at + 2 * repeated
    redis.call('ZREMRANGEBYRANK', KEYS[k], 0, -(keep + 1))
    redis.call('EXPIRE', KEYS[k], ttl)
end
return #KEYS
"""
# Users per script call: bounds the Lua argument stack and how long one call holds Redis.
_USERS_PER_CALL = 500


async def record_activity(
    redis: Redis,
    org_id: str,
    by_user: dict[str, list[dict[str, Any]]],
    *,
    keep: int,
    repeated: Collection[str] = frozenset(),
) -> None:
    """Write these events (grouped by canonical user) into the users' recent activity.

    Idempotent by event id: an event listed in `repeated` (stored before this job: pass it as
    stored, with its stored time) is added only if the user's activity does not hold it, so a
    retry never counts an event twice; an event id that comes twice in `by_user` is written once.
    """
    script = redis.register_script(_RECORD)
    users = list(by_user.items())
    seen: set[str] = set()
    for start in range(0, len(users), _USERS_PER_CALL):
        keys: list[str] = []
        args: list[Any] = [keep, RECENT_TTL_S]
        for user_id, records in users[start:start + _USERS_PER_CALL]:
            fresh: list[Any] = []
            again: list[Any] = []
            for record in records:
                event_id = record["event_id"]
                if event_id in seen:
                    continue
                seen.add(event_id)
                (again if event_id in repeated else fresh).extend((record["occurred_at"], encode(record)))
            keys.append(redis_keys.recent(org_id, user_id))
            args.extend((len(fresh) // 2, len(again) // 2, *fresh, *again))
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


def identities_stitched(pipe: Pipeline, org_id: str, aliases: dict[str, str], *, keep: int) -> None:
    """After identifies were committed (alias -> canonical user; the ingest worker and `lehnz
    import`): the alias map that resolve_user reads, and each alias's recent activity merged
    into its canonical user's."""
    by_canonical: dict[str, list[str]] = {}
    for alias_id, canonical_id in aliases.items():
        by_canonical.setdefault(canonical_id, []).append(alias_id)
    for canonical_id, alias_ids in by_canonical.items():
        pipe.hset(redis_keys.aliases(org_id), mapping=dict.fromkeys(alias_ids, canonical_id))
        merge_users(pipe, org_id, into=canonical_id, sources=alias_ids, keep=keep)


def activity_forgotten(pipe: Pipeline, org_id: str, user_ids: Iterable[str]) -> None:
    """An erasure: the users' recent activity goes (on the caller's pipeline, with the tombstones)."""
    pipe.delete(*(redis_keys.recent(org_id, user_id) for user_id in user_ids))


def aliases_forgotten(pipe: Pipeline, org_id: str, user_ids: Iterable[str]) -> None:
    """An erasure: these ids leave the alias map (on the caller's pipeline)."""
    pipe.hdel(redis_keys.aliases(org_id), *user_ids)


async def canonical_ids(redis: Redis, org_id: str, user_ids: list[str]) -> list[str | None]:
    """The canonical id each of `user_ids` was stitched into, None where it is not an alias; one HMGET."""
    resolved = await redis.hmget(redis_keys.aliases(org_id), user_ids)  # type: ignore[misc]
    return [None if c is None else c.decode() if isinstance(c, bytes) else str(c) for c in resolved]


async def resolve_user(redis: Redis, org_id: str, user_id: str) -> str:
    canonical = await redis.hget(redis_keys.aliases(org_id), user_id)  # type: ignore[misc]
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
    keys_and_args = (redis_keys.aliases(org_id), redis_keys.recent(org_id, user_id), user_id, str(limit))
    try:
        canonical_raw, members = await redis.evalsha(_USER_STATE_SHA, 2, *keys_and_args)  # type: ignore[misc]
    except NoScriptError:  # a Redis that has not seen the script yet (or restarted and forgot it)
        await redis.script_load(_USER_STATE)
        canonical_raw, members = await redis.evalsha(_USER_STATE_SHA, 2, *keys_and_args)  # type: ignore[misc]
    if not canonical_raw:  # Lua false arrives as None
        return user_id, [decode(m) for m in members or []]
    canonical = canonical_raw.decode() if isinstance(canonical_raw, bytes) else str(canonical_raw)
    return canonical, await read_recent(redis, org_id, canonical, limit=limit)
