"""Deleting every Redis key of an org, by name (lehnz org delete, app/offboarding.py).

The keys are the ones app/redis_keys.py names per org; the two families with one key per user
or per window (recent activity, rate-limit counters) are matched by their own prefix. If a new
kind of per-org key is added to redis_keys and not here, tests/cli/test_commands.py
(test_org_delete_removes_the_tenant_from_every_store, which scans for any key holding the id)
fails.
"""

from __future__ import annotations

from typing import Any

from arq.constants import job_key_prefix

from app import redis_keys
from app.storage.redis_state import signals

_BATCH = 1000


def org_keys(org_id: str) -> list[str]:
    """The org's keys with fixed names."""
    return [
        redis_keys.pending(org_id),
        redis_keys.aliases(org_id),
        redis_keys.erased(org_id),
        redis_keys.model_version(org_id),
        redis_keys.catalog_version(org_id),
        redis_keys.training(org_id),
        redis_keys.key_last_used(org_id),
    ]


async def forget_org(redis: Any, org_id: str) -> int:
    """Delete the org's jobs still queued, its signals and every key of its own; the number of
    keys (and jobs) removed. Idempotent: run again after an interruption, it finishes the job."""
    # Queued jobs first: a job left behind would fail on the missing org and be parked in the
    # dead-letter list. (One already running may still end there; nothing is lost by it.)
    queued = await redis.zrange(redis_keys.pending(org_id), 0, -1)
    ingest_jobs = [j.decode() if isinstance(j, bytes) else str(j) for j in queued]
    train_job = redis_keys.train_job_id(org_id)
    async with redis.pipeline(transaction=True) as pipe:
        if ingest_jobs:
            pipe.zrem(redis_keys.INGEST_QUEUE, *ingest_jobs)
        pipe.zrem(redis_keys.TRAIN_QUEUE, train_job)
        for job_id in [*ingest_jobs, train_job]:
            pipe.delete(job_key_prefix + job_id)
        pipe.hdel(redis_keys.SEARCH_REQUESTED, org_id)
        pipe.hdel(redis_keys.TRAIN_AGAIN, org_id)
        signals.org_deleted(pipe, org_id)  # api processes drop it from memory
        pipe.delete(*org_keys(org_id))
        results = await pipe.execute()
    removed = len(ingest_jobs) + int(results[-1])
    for pattern in (redis_keys.recent_of_org(org_id), redis_keys.org_rate_limits(org_id)):
        batch: list[Any] = []
        async for key in redis.scan_iter(match=pattern, count=_BATCH):
            batch.append(key)
            if len(batch) >= _BATCH:
                removed += await redis.delete(*batch)
                batch.clear()
        if batch:
            removed += await redis.delete(*batch)
    return removed
