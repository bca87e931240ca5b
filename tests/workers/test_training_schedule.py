"""The training scheduler (arq cron): which orgs it queues, and coalescing per org."""

from __future__ import annotations

from typing import Any

from arq.constants import job_key_prefix

from app import redis_keys
from tests.factories import OrgKeys, event, item
from workers import training
from workers.main import close_context, open_context


async def _schedule(settings: Any, redis: Any, org: OrgKeys, **overrides: Any) -> None:
    ctx, _, _ = await open_context(settings.model_copy(update=overrides))
    try:
        await training.schedule_training(ctx)
    finally:
        await close_context(ctx)
    await _keep_only(redis, org)


async def _keep_only(redis: Any, org: OrgKeys) -> None:
    """Other tests' orgs also have data and no model: drop their queued trains (not ours)."""
    ours = redis_keys.train_job_id(org.org_id)
    for job_id in await redis.zrange(redis_keys.TRAIN_QUEUE, 0, -1):
        if job_id.decode() != ours:
            await redis.zrem(redis_keys.TRAIN_QUEUE, job_id)
            await redis.delete(job_key_prefix + job_id.decode())


async def _queued(redis: Any, org: OrgKeys) -> bool:
    return bool(await redis.exists(job_key_prefix + redis_keys.train_job_id(org.org_id)))


async def test_an_org_with_data_but_no_model_is_trained_on_startup(
    client: Any, org: OrgKeys, settings: Any, redis: Any, drain: Any
) -> None:
    await client.post("/v1/ingest/items/upsert", json=[item("a"), item("b")], headers=org.sk)
    await client.post("/v1/ingest/events/ingest", json=[event("u", "view", "a")], headers=org.pk)
    await drain()
    await redis.hdel(redis_keys.NEW_DATA, org.org_id)  # as after a bulk import done elsewhere
    assert not await _queued(redis, org)
    await _schedule(settings, redis, org)
    assert await _queued(redis, org)
    await drain()
    status = (await client.get("/v1/models/status", headers=org.sk)).json()["data"]
    assert status["model"] is not None and status["model"]["interactions"] == 1


async def test_the_scan_of_untrained_orgs_runs_once_per_worker_start_not_every_tick(
    client: Any, org: OrgKeys, settings: Any, redis: Any, drain: Any
) -> None:
    """arq calls every job with its own copy of the worker's ctx. The scheduler's "scan every
    org once per start" flag (a SELECT DISTINCT over all events) used to be set on that copy, so
    it ran on every tick; it lives in the shared WorkerContext now (workers/context.py)."""
    await client.post("/v1/ingest/items/upsert", json=[item("a")], headers=org.sk)
    await client.post("/v1/ingest/events/ingest", json=[event("u", "view", "a")], headers=org.pk)
    await drain()
    await redis.hdel(redis_keys.NEW_DATA, org.org_id)  # only the scan can find this org
    ctx, _, _ = await open_context(settings)
    try:
        await training.schedule_training({**ctx, "job_id": "tick-1"})  # as arq calls a cron job
        await _keep_only(redis, org)
        assert await _queued(redis, org)
        await _unqueue(redis, org)  # e.g. the train ran and failed: the next tick must not rescan
        await training.schedule_training({**ctx, "job_id": "tick-2"})
        await _keep_only(redis, org)
        assert not await _queued(redis, org)
    finally:
        await close_context(ctx)


async def _unqueue(redis: Any, org: OrgKeys) -> None:
    job_id = redis_keys.train_job_id(org.org_id)
    await redis.zrem(redis_keys.TRAIN_QUEUE, job_id)
    await redis.delete(job_key_prefix + job_id)


async def test_new_data_triggers_a_retrain_only_after_the_interval(
    client: Any, org: OrgKeys, settings: Any, redis: Any, drain: Any
) -> None:
    await client.post("/v1/ingest/items/upsert", json=[item("a")], headers=org.sk)
    await client.post("/v1/ingest/events/ingest", json=[event("u", "view", "a")], headers=org.pk)
    await drain()
    await client.post("/v1/models/train", headers=org.sk)
    await drain()
    assert int(await redis.hget(redis_keys.NEW_DATA, org.org_id) or 0) == 0  # the train consumed it
    await client.post("/v1/ingest/events/ingest", json=[event("v", "view", "a")] * 3, headers=org.pk)
    await drain()
    assert int(await redis.hget(redis_keys.NEW_DATA, org.org_id)) == 3

    await _schedule(settings, redis, org, train_interval_s=3600)
    assert not await _queued(redis, org), "retrained before the interval"
    await _schedule(settings, redis, org, train_interval_s=0, train_min_new_events=10)
    assert not await _queued(redis, org), "retrained with fewer new events than required"
    await _schedule(settings, redis, org, train_interval_s=0)
    assert await _queued(redis, org)
    # Asking again while one is pending is coalesced into the same job.
    assert (await client.post("/v1/models/train", headers=org.sk)).json()["data"]["job_id"] == \
        redis_keys.train_job_id(org.org_id)
    await drain()
    assert not await _queued(redis, org)


async def test_an_erasure_makes_the_org_due_for_a_retrain_whatever_the_threshold(
    client: Any, org: OrgKeys, settings: Any, redis: Any, drain: Any
) -> None:
    await client.post("/v1/ingest/items/upsert", json=[item("a"), item("b")], headers=org.sk)
    await client.post("/v1/ingest/events/ingest", json=[event("gone", "view", "a"), event("stays", "view", "b")],
                      headers=org.pk)
    await drain()
    await client.post("/v1/models/train", headers=org.sk)
    await drain()
    assert (await client.get("/v1/models/status", headers=org.sk)).json()["data"]["model"]["interactions"] == 2
    assert (await client.delete("/v1/users/gone", headers=org.sk)).status_code == 202
    await drain(train_min_new_events=1000)  # one erased event is far below the threshold
    await _schedule(settings, redis, org, train_interval_s=0, train_min_new_events=1000)
    assert await _queued(redis, org)
    await drain()
    model = (await client.get("/v1/models/status", headers=org.sk)).json()["data"]["model"]
    assert model["interactions"] == 1  # the erased user's event has left the model


async def test_a_train_whose_worker_died_is_released_for_another_worker(
    org: OrgKeys, settings: Any, redis: Any
) -> None:
    """arq keeps a job "in progress" for the whole train timeout; a dead worker's heartbeat
    lapses after 30 s and the scheduler frees the job (not one that has just started)."""
    from arq.constants import in_progress_key_prefix

    in_progress = f"{in_progress_key_prefix}{redis_keys.train_job_id(org.org_id)}"
    full_ttl_ms = (settings.train_job_timeout_s + 10) * 1000
    await redis.psetex(in_progress, full_ttl_ms - 5_000, b"1")  # started 5 s ago, no beat yet
    assert await training.release_orphaned_trains(redis, settings) == []
    await redis.psetex(in_progress, full_ttl_ms - 120_000, b"1")  # two minutes in, beating
    await redis.set(redis_keys.training(org.org_id), "schedule", ex=training.HEARTBEAT_TTL_S)
    assert await training.release_orphaned_trains(redis, settings) == []
    await redis.delete(redis_keys.training(org.org_id))  # the worker died: no more beats
    assert await training.release_orphaned_trains(redis, settings) == [org.org_id]
    assert not await redis.exists(in_progress)


async def test_a_train_of_an_org_deleted_meanwhile_leaves_no_model_behind(
    client: Any, org: OrgKeys, settings: Any, redis: Any, db: Any, drain: Any
) -> None:
    import uuid

    from app.queue import Queue
    from app.storage import orgs

    await client.post("/v1/ingest/items/upsert", json=[item("a"), item("b")], headers=org.sk)
    await client.post("/v1/ingest/events/ingest", json=[event("u", "view", "a")], headers=org.pk)
    await drain()
    # A train queued (or running) when the org is deleted (`lehnz org delete`): its row goes.
    await Queue(redis).enqueue_train(org.org_id, reason="test")
    async with db() as session, session.begin():
        await orgs.delete_org(session, uuid.UUID(org.org_id))
    await drain()
    assert not (settings.models_path / org.org_id).exists()
    assert not await redis.exists(redis_keys.training(org.org_id))
    assert not await redis.exists(redis_keys.model_version(org.org_id))
