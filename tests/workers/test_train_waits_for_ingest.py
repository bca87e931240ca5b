"""A train learns from everything accepted before it was asked for (issue #15.3).

`POST /v1/models/train` right after a 202 for events: the train waits for the org's ingest jobs
queued before it started, then loads. A train asked for while another of the org runs (which
may have read the data already) is followed by one more train.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Self

import pytest
from arq.constants import job_key_prefix

from app import redis_keys
from tests.factories import OrgKeys, event, item
from tests.waiting import eventually
from workers import training
from workers.main import build_workers, close_context, open_context

EVENTS = [
    event("ada", "view", "a"), event("ada", "purchase", "a"), event("ben", "view", "b"), event("ben", "click", "c"),
]


class _Workers:
    """The worker's two arq workers in burst mode, run one at a time on a context of their own."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    async def __aenter__(self) -> Self:
        self.ctx, self.redis, _ = await open_context(self.settings)
        self.ingest, self.train = build_workers(self.settings, self.ctx, self.redis, burst=True)
        return self

    async def __aexit__(self, *_: object) -> None:
        await close_context(self.ctx)  # the workers share its Redis pool (as in workers/main.py)


@pytest.fixture
def train_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="lehnz.worker.training")
    return caplog


def _waiting(caplog: pytest.LogCaptureFixture, org: OrgKeys) -> bool:
    return any("waits for" in r.getMessage() and org.org_id in r.getMessage() for r in caplog.records)


async def _until_waiting_or_done(run: asyncio.Task[Any], caplog: pytest.LogCaptureFixture, org: OrgKeys) -> None:
    async def check() -> bool:
        return run.done() or _waiting(caplog, org)

    await eventually(check, timeout=60)
    assert not run.done(), "the train ran without waiting for the events queued before it"


async def test_a_train_queued_right_after_events_learns_from_them(
    client: Any, org: OrgKeys, settings: Any, redis: Any, train_log: pytest.LogCaptureFixture
) -> None:
    assert (await client.post("/v1/ingest/items/upsert", json=[item(i) for i in "abc"], headers=org.sk)).status_code == 202
    assert (await client.post("/v1/ingest/events/ingest", json=EVENTS, headers=org.pk)).status_code == 202
    assert (await client.post("/v1/models/train", headers=org.sk)).status_code == 202
    assert (await client.get("/v1/models/status", headers=org.sk)).json()["data"]["queue_depth"] == 2

    async with _Workers(settings) as workers:
        # Only the train worker runs at first: no ingest job is persisted until the train waits.
        train = asyncio.create_task(workers.train.async_run())
        await _until_waiting_or_done(train, train_log, org)
        assert await redis.exists(redis_keys.training(org.org_id)), "status does not say the train started"
        await asyncio.wait_for(workers.ingest.async_run(), timeout=60)
        await asyncio.wait_for(train, timeout=120)

    status = (await client.get("/v1/models/status", headers=org.sk)).json()["data"]
    assert status["queue_depth"] == 0
    assert status["model"] is not None, status
    assert (status["model"]["items"], status["model"]["users"], status["model"]["interactions"]) == (3, 2, 4)
    assert int(await redis.hget(redis_keys.NEW_DATA, org.org_id) or 0) == 0  # the train took what it waited for


async def test_a_train_waits_only_for_ingest_queued_before_it_started(org: OrgKeys, redis: Any) -> None:
    """Steady traffic cannot hold a train back, and a job that is never persisted holds it only so long.
    (The org's pending set is what the api writes on each 202 and the worker clears once persisted.)"""
    pending = redis_keys.pending(org.org_id)
    try:
        assert await training.wait_for_queued_ingest(redis, org.org_id, reason="test") == 0  # nothing queued
        await redis.zadd(pending, {"job-1": 1000})
        waiting = asyncio.create_task(training.wait_for_queued_ingest(redis, org.org_id, reason="test"))

        async def started() -> bool:
            return waiting.done() or bool(await redis.exists(redis_keys.training(org.org_id)))

        await eventually(started, timeout=10)
        assert not waiting.done()
        await redis.zadd(pending, {"job-2": 2000})  # queued after the train started
        await redis.zrem(pending, "job-1")  # persisted
        assert await asyncio.wait_for(waiting, timeout=10) == 1

        began = asyncio.get_running_loop().time()
        assert await training.wait_for_queued_ingest(redis, org.org_id, reason="test", timeout_s=0.3) == 1
        assert 0.3 <= asyncio.get_running_loop().time() - began < 5  # job-2 never persists: bounded wait
    finally:
        await redis.delete(pending, redis_keys.training(org.org_id))


async def _schedule(settings: Any, redis: Any, org: OrgKeys) -> bool:
    """Run the scheduler once (with no interval due); whether it queued a train of this org.
    Other tests' orgs with data and no model are queued too: their trains are dropped here."""
    ctx, _, _ = await open_context(settings.model_copy(update={"train_interval_s": 3600}))
    try:
        await training.schedule_training(ctx)
    finally:
        await close_context(ctx)
    ours = redis_keys.train_job_id(org.org_id)
    for job_id in await redis.zrange(redis_keys.TRAIN_QUEUE, 0, -1):
        if job_id.decode() != ours:
            await redis.zrem(redis_keys.TRAIN_QUEUE, job_id)
            await redis.delete(job_key_prefix + job_id.decode())
    return bool(await redis.exists(job_key_prefix + ours))


async def test_a_train_asked_for_while_one_runs_is_followed_by_another(
    client: Any, org: OrgKeys, settings: Any, redis: Any, train_log: pytest.LogCaptureFixture
) -> None:
    await client.post("/v1/ingest/items/upsert", json=[item(i) for i in "abc"], headers=org.sk)
    await client.post("/v1/ingest/events/ingest", json=EVENTS[:2], headers=org.pk)
    await client.post("/v1/models/train", headers=org.sk)
    async with _Workers(settings) as workers:
        train = asyncio.create_task(workers.train.async_run())
        await _until_waiting_or_done(train, train_log, org)  # the train runs (it waits for ingest)
        # Events and a train request while it runs: coalesced into the running job, so 202 with its id.
        await client.post("/v1/ingest/events/ingest", json=EVENTS[2:], headers=org.pk)
        again = await client.post("/v1/models/train", headers=org.sk)
        assert again.status_code == 202 and again.json()["data"]["job_id"] == redis_keys.train_job_id(org.org_id)
        await asyncio.wait_for(workers.ingest.async_run(), timeout=60)
        await asyncio.wait_for(train, timeout=120)

    assert await _schedule(settings, redis, org), "the train asked for while one ran was dropped"
    async with _Workers(settings) as workers:
        await asyncio.wait_for(workers.train.async_run(), timeout=120)
    status = (await client.get("/v1/models/status", headers=org.sk)).json()["data"]
    assert status["model"]["interactions"] == 4
    assert not await _schedule(settings, redis, org), "the request was not taken by the train that followed"
