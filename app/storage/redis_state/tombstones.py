"""Erasure tombstones: per org, user id -> unix time their erasure was asked for
(redis_keys.erased).

Written when DELETE /v1/users/{id} is accepted (app/queue.py, in one MULTI with the user's
real-time activity) and again by the erasure job for every id of the user, aliases included
(workers/erasure.py); they stay while the org exists. Records of an erased user from before
the erasure are dropped by the ingest worker (app/erasure_rule.py), served-log rows forget the
user, and `lehnz import` refuses to run without them (app/bulk_import/staging.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from app import redis_keys


def erased(pipe: Any, org_id: str, requested_at: Mapping[str, float]) -> None:
    """Tombstones for these user ids (user id -> time of the request), on the caller's pipeline."""
    pipe.hset(redis_keys.erased(org_id), mapping=dict(requested_at))


async def erasure_times(redis: Any, users: set[tuple[str, str]]) -> dict[tuple[str, str], float]:
    """(org id, user id) -> when that user's erasure was requested, for the erased ones among
    `users`; one round trip."""
    by_org: dict[str, list[str]] = defaultdict(list)
    for org_id, user_id in sorted(users):
        by_org[org_id].append(user_id)
    if not by_org:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for org_id, user_ids in by_org.items():
            pipe.hmget(redis_keys.erased(org_id), user_ids)
        replies = await pipe.execute()
    return {
        (org_id, user_id): float(at)
        for (org_id, user_ids), tombstones in zip(by_org.items(), replies, strict=True)
        for user_id, at in zip(user_ids, tombstones, strict=True)
        if at is not None
    }


async def of_org(redis: Any, org_id: str) -> dict[str, float]:
    """Every tombstone of the org: user id -> time of the request."""
    raw = await redis.hgetall(redis_keys.erased(org_id))
    return {user.decode(): float(at) for user, at in raw.items()}
