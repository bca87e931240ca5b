"""A train someone asks for runs before the scheduler's backlog (app/queue.py, enqueue_train).

After a restart the scheduler queues every org with events and no model at once; a person who
then presses "Train now" (or runs `lehnz train`) must not wait for all of them. arq takes the
jobs of a queue in the order of their score, so the order of the sorted set is the order of
the trains."""

from __future__ import annotations

import uuid
from typing import Any

from arq.constants import job_key_prefix

from app import redis_keys
from app.queue import Queue


async def _order(redis: Any, org_ids: list[str]) -> list[str]:
    jobs = {redis_keys.train_job_id(o): o for o in org_ids}
    queued = [j.decode() if isinstance(j, bytes) else j for j in await redis.zrange(redis_keys.TRAIN_QUEUE, 0, -1)]
    return [jobs[j] for j in queued if j in jobs]


async def _forget(redis: Any, org_ids: list[str]) -> None:
    jobs = [redis_keys.train_job_id(o) for o in org_ids]
    await redis.zrem(redis_keys.TRAIN_QUEUE, *jobs)
    await redis.delete(*(job_key_prefix + j for j in jobs))


async def test_asked_trains_go_ahead_of_the_scheduled_ones(redis: Any) -> None:
    queue = Queue(redis)
    backlog = [str(uuid.uuid4()) for _ in range(3)]
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    everyone = [*backlog, first, second]
    try:
        for org_id in backlog:
            await queue.enqueue_train(org_id, reason="no model yet")
        await queue.enqueue_train(first, reason="api", asked=True)
        await queue.enqueue_train(second, reason="cli", asked=True)
        order = await _order(redis, everyone)  # (ties within a millisecond go by job id)
        assert set(order[:2]) == {first, second} and set(order[2:]) == set(backlog)
        # The job is kept as arq would run it: the payload is there, with a life of its own.
        ttl = await redis.pttl(job_key_prefix + redis_keys.train_job_id(first))
        assert 0 < ttl <= 24 * 3600 * 1000
    finally:
        await _forget(redis, everyone)


async def test_asking_for_a_train_the_scheduler_queued_moves_it_to_the_front_without_a_second_job(
    redis: Any,
) -> None:
    queue = Queue(redis)
    backlog = [str(uuid.uuid4()) for _ in range(3)]
    try:
        for org_id in backlog:
            await queue.enqueue_train(org_id, reason="no model yet")
        last = backlog[-1]
        size = await redis.zcard(redis_keys.TRAIN_QUEUE)
        assert await queue.enqueue_train(last, reason="api", asked=True) == redis_keys.train_job_id(last)
        assert await redis.zcard(redis_keys.TRAIN_QUEUE) == size  # coalesced: the same job
        assert (await _order(redis, backlog))[0] == last
        # Asked again, or queued again by the scheduler: it stays in front.
        await queue.enqueue_train(last, reason="schedule")
        await queue.enqueue_train(last, reason="api", asked=True)
        assert (await _order(redis, backlog))[0] == last
    finally:
        await _forget(redis, backlog)
