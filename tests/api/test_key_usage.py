"""Key pairs' "last used" notes (app/api/key_usage.py) against real Redis."""

from __future__ import annotations

import uuid
from typing import Any

from app import redis_keys
from app.api.key_usage import KeyUsage, last_used


async def test_notes_reach_redis_on_flush(redis: Any) -> None:
    org_id, pair_id = uuid.uuid4(), uuid.uuid4()
    usage = KeyUsage(redis)
    usage.touch(org_id, pair_id)
    assert await last_used(redis, org_id) == {}  # only noted in memory until the flush
    await usage.flush()
    assert set(await last_used(redis, org_id)) == {str(pair_id)}
    await redis.delete(redis_keys.key_last_used(str(org_id)))


async def test_a_note_taken_before_the_org_was_deleted_does_not_bring_its_hash_back(redis: Any) -> None:
    """lehnz org delete removes every key of the org; an api process that noted a use just before
    flushes a few seconds later. The write must see the org is gone (the failure CI once showed)."""
    org_id, pair_id = uuid.uuid4(), uuid.uuid4()
    usage = KeyUsage(redis)
    usage.touch(org_id, pair_id)
    await redis.sadd(redis_keys.DELETED_ORGS, str(org_id))  # what offboarding does, in its transaction
    try:
        await usage.flush()
        assert await redis.exists(redis_keys.key_last_used(str(org_id))) == 0
    finally:
        await redis.srem(redis_keys.DELETED_ORGS, str(org_id))
