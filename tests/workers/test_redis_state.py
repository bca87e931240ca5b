"""The org state kept in Redis (app/storage/redis_state) against the real Redis: an org's
signals as the worker and `lehnz import` write them, and `forget_org` deleting every key of the
org by name and nothing of another org's."""

from __future__ import annotations

import uuid
from typing import Any

from app import redis_keys
from app.storage.redis_state import signals
from app.storage.redis_state.forget import forget_org, org_keys


async def _write_everything(redis: Any, org_id: str) -> None:
    """One key of every kind an org has (what a busy org leaves in Redis)."""
    async with redis.pipeline(transaction=True) as pipe:
        signals.data_persisted(pipe, org_id, catalog_changed=True, new_data=5)
        signals.model_trained(pipe, org_id, version="v1", consumed_new_data=0, duration_s=1.5,
                              quality={"chosen": {"ndcg_at_10": 0.2}, "personalized_vs_popular": 1.7})
        pipe.zadd(redis_keys.pending(org_id), {"job-1": 1})
        pipe.hset(redis_keys.aliases(org_id), "anon", "member")
        pipe.hset(redis_keys.erased(org_id), "gone", 1.0)
        pipe.set(redis_keys.training(org_id), "api")
        pipe.hset(redis_keys.key_last_used(org_id), "pair", 1)
        for user in ("u1", "u2", "u3"):
            pipe.zadd(redis_keys.recent(org_id, user), {"{}": 1})
        pipe.set(redis_keys.rate_limit("org", f"{org_id}:900:1"), 3)
        await pipe.execute()


async def test_the_new_data_counter_counts_what_was_persisted_and_a_train_consumes_what_it_saw(redis: Any) -> None:
    org_id = str(uuid.uuid4())
    try:
        async with redis.pipeline(transaction=True) as pipe:
            signals.data_persisted(pipe, org_id, catalog_changed=False, new_data=7)
            signals.data_persisted(pipe, org_id, catalog_changed=True, new_data=3)
            await pipe.execute()
        assert await signals.new_data_of(redis, org_id) == 10
        assert int(await redis.get(redis_keys.catalog_version(org_id))) == 1  # only the catalog change
        seen = await signals.new_data_of(redis, org_id)
        async with redis.pipeline(transaction=True) as pipe:
            signals.data_persisted(pipe, org_id, catalog_changed=False, new_data=4)  # while it trained
            signals.model_trained(pipe, org_id, version="v1", consumed_new_data=seen, duration_s=2.0, quality=None)
            await pipe.execute()
        assert (await signals.new_data_by_org(redis))[org_id] == 4  # counts for the next train
        assert await redis.get(redis_keys.model_version(org_id)) == b"v1"
        assert await redis.sismember(redis_keys.SERVING_ORGS, org_id)
    finally:
        await forget_org(redis, org_id)


async def test_forget_org_deletes_every_key_of_the_org_and_nothing_of_another(redis: Any) -> None:
    leaving, staying = str(uuid.uuid4()), str(uuid.uuid4())
    await _write_everything(redis, leaving)
    await _write_everything(redis, staying)
    before = {key async for key in redis.scan_iter(match=f"*{staying}*")}
    try:
        removed = await forget_org(redis, leaving)
        assert removed >= len(org_keys(leaving)) + 3 + 1  # fixed keys, three users, one window
        assert [key async for key in redis.scan_iter(match=f"*{leaving}*")] == []
        assert await signals.is_deleted(redis, leaving)
        assert not await redis.sismember(redis_keys.SERVING_ORGS, leaving)
        assert leaving not in await signals.new_data_by_org(redis)
        assert not [f for f in await redis.hkeys(redis_keys.TRAIN_STATS) if f.decode().startswith(leaving)]
        # The other org keeps everything.
        assert {key async for key in redis.scan_iter(match=f"*{staying}*")} == before
        assert (await signals.new_data_by_org(redis))[staying] == 5
        assert await forget_org(redis, leaving) == 0  # a second run (an interrupted delete) finds nothing left
    finally:
        await forget_org(redis, staying)
        await redis.srem(redis_keys.DELETED_ORGS, leaving, staying)
