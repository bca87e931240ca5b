"""Faults with real processes: killed workers, Redis and Postgres outages, failed trains."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from app import redis_keys
from app.queue import Queue, create_redis
from app.storage.db import create_engine, create_session_factory
from app.storage.tables import Event, ServedRecommendation
from tests.factories import OrgKeys, create_org, event, item
from tests.recommend.conftest import build_world
from tests.waiting import eventually

pytestmark = pytest.mark.slow
EVENTS = "/v1/ingest/events/ingest"
# The scenario: Postgres away for 30 s while traffic continues.
OUTAGE_S = float(os.environ.get("LEHNZ_TEST_OUTAGE_S", "30"))


async def _stored(sessions: Any, org_id: str) -> int:
    async with sessions() as session:
        return int(await session.scalar(
            select(func.count(func.distinct(Event.event_id))).where(Event.org_id == uuid.UUID(org_id))
        ) or 0)


async def _rows(sessions: Any, org_id: str) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Event).where(
            Event.org_id == uuid.UUID(org_id))) or 0)


def _records(n: int, *, user: str = "u") -> list[dict[str, Any]]:
    return [
        {"event_id": str(uuid.uuid4()), "user_id": f"{user}{i % 97}", "event_family": "engagement",
         "event_name": "view", "item_id": f"i{i % 500}", "previous_user_id": None, "recommendation_id": None,
         "context": {"session_id": f"s{i % 50}"}, "occurred_at": 1.79e9 + i, "received_at": 1.79e9 + i}
        for i in range(n)
    ]


async def test_worker_killed_mid_batch_stores_every_accepted_event_exactly_once(
    own_redis: Any, org: OrgKeys, db: Any, worker_process: Any
) -> None:
    redis = create_redis(own_redis.url)
    queue = Queue(redis)
    total = 0
    for _ in range(40):
        await queue.enqueue_ingest("events", org.org_id, _records(1000))
        total += 1000
    worker = worker_process(LEHNZ_REDIS_URL=own_redis.url)

    async def some_but_not_all() -> bool:
        return 0 < await _rows(db, org.org_id) < total

    await eventually(some_but_not_all, timeout=60, interval=0.005)
    worker.kill()  # SIGKILL: jobs in flight die with their transactions
    worker.wait(timeout=10)
    at_kill = await _rows(db, org.org_id)
    assert at_kill < total

    worker_process(LEHNZ_REDIS_URL=own_redis.url)

    async def all_stored() -> bool:
        return await _rows(db, org.org_id) >= total and await redis.zcard(redis_keys.pending(org.org_id)) == 0

    await eventually(all_stored, timeout=90, interval=0.2)
    assert await _rows(db, org.org_id) == await _stored(db, org.org_id) == total
    await redis.aclose()


async def test_redis_stopped_means_503_and_nothing_half_written(
    own_redis: Any, app_with: Any, org: OrgKeys, db: Any, drain: Any
) -> None:
    async with app_with(redis_url=own_redis.url) as client:
        accepted = []
        for n in range(3):
            batch = [event(f"u{n}", "view", f"i{k}") for k in range(10)]
            assert (await client.post(EVENTS, json=batch, headers=org.pk)).status_code == 202
            accepted.append(batch)
        own_redis.stop()
        refused = await client.post(EVENTS, json=[event("lost", "view", "x")] * 5, headers=org.pk)
        assert refused.status_code == 503
        assert refused.json()["success"] is False and refused.json()["data"] is None
        assert refused.headers.get("Retry-After")
        own_redis.start()

        async def accepting() -> bool:
            response = await client.post(EVENTS, json=event("back", "view", "y"), headers=org.pk)
            return response.status_code == 202

        await eventually(accepting, timeout=10)
    redis = create_redis(own_redis.url)
    # Every job in the queue is whole: a body for each pending id, nothing else.
    pending = await redis.zrange(redis_keys.pending(org.org_id), 0, -1)
    assert len(pending) == 4
    for job_id in pending:
        assert await redis.exists(f"arq:job:{job_id.decode()}") == 1
    await redis.aclose()
    await drain(redis_url=own_redis.url)
    assert await _stored(db, org.org_id) == 31
    async with db() as session:
        lost = await session.scalar(select(func.count()).select_from(Event).where(
            Event.org_id == uuid.UUID(org.org_id), Event.user_id == "lost"))
    assert lost == 0


async def test_redis_crash_with_jobs_queued_loses_nothing_accepted(
    own_redis: Any, app_with: Any, org: OrgKeys, db: Any, drain: Any
) -> None:
    async with app_with(redis_url=own_redis.url) as client:
        for n in range(20):
            batch = [event(f"u{n}", "view", f"i{k}") for k in range(50)]
            assert (await client.post(EVENTS, json=batch, headers=org.pk)).status_code == 202
    own_redis.kill()  # SIGKILL right after the last 202: the AOF is all there is
    own_redis.start()
    await drain(redis_url=own_redis.url)
    assert await _stored(db, org.org_id) == 1000


@pytest.mark.timeout(OUTAGE_S + 120)
async def test_postgres_outage_keeps_accepting_and_everything_lands_after(
    own_postgres: Any, own_redis: Any, app_with: Any, worker_process: Any
) -> None:
    engine = create_engine(own_postgres.url, pool_size=1)
    sessions = create_session_factory(engine)
    org = await create_org(sessions, name="outage")
    accepted = 0
    async with app_with(database_url=own_postgres.url, redis_url=own_redis.url) as client:
        assert (await client.post(EVENTS, json=event("warm", "view", "w"), headers=org.pk)).status_code == 202
        accepted += 1
        worker_process(LEHNZ_DATABASE_URL=own_postgres.url, LEHNZ_REDIS_URL=own_redis.url)
        await eventually(lambda: _stored(sessions, org.org_id), timeout=30)
        await engine.dispose()

        own_postgres.stop()
        outage_ends = time.monotonic() + OUTAGE_S
        n = 0
        while time.monotonic() < outage_ends:  # events keep arriving while the database is away
            batch = [event(f"u{n}", "view", f"i{k}") for k in range(20)]
            response = await client.post(EVENTS, json=batch, headers=org.pk)
            assert response.status_code == 202, response.text
            accepted += 20
            n += 1
            await asyncio.sleep(0.1)  # pacing of the traffic, not synchronisation
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and {e["field"]: e["issue"] for e in ready.json()["error"]}["database"].startswith("unavailable")
        status_redis = create_redis(own_redis.url)
        assert await status_redis.zcard(redis_keys.pending(org.org_id)) > 0  # the queue grows

        own_postgres.start()
        engine = create_engine(own_postgres.url, pool_size=1)
        sessions = create_session_factory(engine)

        async def landed() -> bool:
            return await _stored(sessions, org.org_id) == accepted

        await eventually(landed, timeout=90, interval=0.25)
        assert await _rows(sessions, org.org_id) == accepted
        assert (await client.get("/readyz")).status_code == 200
        await status_redis.aclose()
    await engine.dispose()


async def _five_items_served(client: Any, org: OrgKeys, own_redis: Any, drain: Any) -> str | None:
    """Five items viewed by twenty users, trained and served by an app on `own_redis`
    (user u<n> viewed p<n % 5>)."""

    async def drain_own() -> None:
        await drain(redis_url=own_redis.url)

    return await build_world(client, org, drain_own, items=[item(f"p{k}") for k in range(5)],
                             events=[event(f"u{n}", "view", f"p{n % 5}") for n in range(20)])


async def test_redis_outage_keeps_recommendations_serving_from_memory(
    own_redis: Any, app_with: Any, org: OrgKeys, drain: Any, db: Any
) -> None:
    async with app_with(redis_url=own_redis.url) as client:
        version = await _five_items_served(client, org, own_redis, drain)
        own_redis.stop()
        degraded = _sample("lehnz_recommend_realtime_unavailable_total")
        served = await client.post("/v1/recommend", json={"strategy": "personalized", "user_id": "u1"},
                                   headers=org.pk)
        assert served.status_code == 200 and served.json()["data"]["model_version"] == version
        assert served.json()["data"]["results"]
        assert _sample("lehnz_recommend_realtime_unavailable_total") == degraded + 1
        assert (await client.post(EVENTS, json=event("u", "view", "p1"), headers=org.pk)).status_code == 503
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and {e["field"]: e["issue"] for e in ready.json()["error"]}["redis"].startswith("unavailable")
        own_redis.start()

        async def accepting() -> bool:
            return (await client.post(EVENTS, json=event("u", "view", "p1"), headers=org.pk)).status_code == 202

        await eventually(accepting, timeout=10)

        # The recommendation served during the outage waited in the api's buffer: it reaches
        # the served log (analytics) once Redis is back.
        recommendation_id = uuid.UUID(served.json()["data"]["recommendation_id"])

        async def logged() -> bool:
            await drain(redis_url=own_redis.url)
            async with db() as session:
                return await session.get(ServedRecommendation, (uuid.UUID(org.org_id), recommendation_id)) is not None

        await eventually(logged, timeout=15, interval=0.2)


def _sample(name: str) -> float:
    from app.metrics import REGISTRY

    return REGISTRY.get_sample_value(name) or 0.0


async def test_rows_added_while_a_batch_is_being_sent_are_all_sent(redis: Any) -> None:
    """A full buffer pushes out its oldest rows: if they are the batch in flight, they were sent
    anyway, and the rows added meanwhile must not be removed in their place."""
    from app.recommend.served_log import ServedLog

    waiting, gate, sent = asyncio.Event(), asyncio.Event(), []

    class SlowRedisQueue(Queue):  # the real queue, its first enqueue held back until `gate`
        async def enqueue_served(self, rows: list[dict[str, Any]]) -> None:
            waiting.set()
            await gate.wait()
            sent.extend(row["n"] for row in rows)
            await super().enqueue_served(rows)

    served_log = ServedLog(SlowRedisQueue(redis), max_rows=3)
    for n in range(3):
        served_log.add({"n": n, "org_id": str(uuid.uuid4())})
    flushing = asyncio.create_task(served_log.flush())
    await waiting.wait()  # the flush took its batch and waits at the gate
    for n in (3, 4):
        served_log.add({"n": n, "org_id": str(uuid.uuid4())})
    gate.set()
    await flushing
    assert sent == [0, 1, 2, 3, 4]


async def test_the_served_log_buffer_is_bounded_while_redis_is_away_and_counts_what_it_drops() -> None:
    from app.recommend.served_log import ServedLog

    away = create_redis("redis://127.0.0.1:1/0", socket_timeout=1)
    served_log = ServedLog(Queue(away), max_rows=3)
    dropped = _sample("lehnz_served_log_dropped_total")
    try:
        for n in range(5):
            served_log.add({"n": n})
        with pytest.raises(Exception):  # noqa: B017 - whatever redis-py raises for a refused connection
            await served_log.flush()
    finally:
        await away.aclose()
    assert _sample("lehnz_served_log_dropped_total") == dropped + 2
    assert _sample("lehnz_served_log_buffered") == 3


async def test_stalled_redis_delays_only_one_recommendation_per_cool_down(
    own_redis: Any, app_with: Any, org: OrgKeys, drain: Any
) -> None:
    # The request path's Redis client has no socket timeout (app/queue.py): every call on it
    # must carry its own bound, or a Redis that stops answering would hang recommendations;
    # and after one call times out, the next ones skip Redis for a moment (app/breaker.py)
    # instead of each waiting out its 0.25 s.
    async with app_with(redis_url=own_redis.url) as client:
        version = await _five_items_served(client, org, own_redis, drain)
        own_redis.pause()
        try:
            # personalized reads the user's real-time state; 25 requests also outlast the rate
            # limiter's local lease (10 requests at the default limit), so its check meets the stall.
            bodies = [{"strategy": "personalized", "user_id": f"u{n}"} for n in range(3)]
            bodies += [{"strategy": "popular"}] * 25
            started = time.monotonic()
            for body in bodies:
                served = await asyncio.wait_for(
                    client.post("/v1/recommend", json=body, headers=org.pk),
                    timeout=3,  # the bounds are 0.25 s each; without them this would never return
                )
                assert served.status_code == 200 and served.json()["data"]["model_version"] == version
                assert served.json()["data"]["results"]
            # Without the breakers: 28 x 0.25 s at least (every request waits for the limiter).
            assert time.monotonic() - started < 3.5
        finally:
            own_redis.resume()

        async def real_time_again() -> bool:  # connections cut by the timeouts are replaced
            served = await client.post("/v1/recommend", json={"strategy": "recently-viewed", "user_id": "u1"},
                                       headers=org.pk)
            first = served.json()["data"]["results"][0]  # u1's only view, read from Redis
            return served.status_code == 200 and (first["item_id"], first["reason"]) == ("p1", "recently_viewed")

        await eventually(real_time_again, timeout=10)


@pytest.mark.parametrize("breakage", ["nan_weights", "unwritable_store"])
async def test_failed_train_keeps_the_previous_model_and_records_last_error(
    client: Any, org: OrgKeys, drain: Any, settings: Any, tmp_path: Any, breakage: str
) -> None:
    version = await build_world(client, org, drain, items=[item(f"p{k}") for k in range(4)],
                                events=[event(f"u{n}", "view", f"p{n % 4}") for n in range(12)])
    await client.post(EVENTS, json=event("late", "view", "p1"), headers=org.pk)
    await client.post("/v1/models/train", headers=org.sk)
    if breakage == "nan_weights":
        await drain(event_weights={**settings.event_weights, "view": float("nan")})
    else:
        blocker = tmp_path / "not-a-directory"
        blocker.write_text("")
        await drain(model_dir=blocker)
    status = (await client.get("/v1/models/status", headers=org.sk)).json()["data"]
    assert status["last_error"]
    assert status["model"]["version"] == version
    served = await client.post("/v1/recommend", json={"strategy": "popular"}, headers=org.pk)
    assert served.json()["data"]["model_version"] == version
    # and the next good train clears last_error
    await client.post("/v1/models/train", headers=org.sk)
    await drain()
    status = (await client.get("/v1/models/status", headers=org.sk)).json()["data"]
    assert status["last_error"] is None and status["model"]["version"] != version


async def test_replica_started_during_a_train_serves_the_same_version(
    client: Any, app_with: Any, org: OrgKeys, drain: Any
) -> None:
    first = await build_world(client, org, drain, items=[item(f"p{k}") for k in range(6)],
                              events=[event(f"u{n}", "view", f"p{n % 6}") for n in range(30)])
    await client.post(EVENTS, json=[event(f"v{n}", "view", "p2") for n in range(10)], headers=org.pk)
    await client.post("/v1/models/train", headers=org.sk)
    training = asyncio.create_task(drain())
    async with app_with() as replica:
        await training
        status = (await client.get("/v1/models/status", headers=org.sk)).json()["data"]
        second = status["model"]["version"]
        assert second != first

        async def both_serve_it() -> bool:
            versions = set()
            for http in (client, replica):
                response = await http.post("/v1/recommend", json={"strategy": "popular"}, headers=org.pk)
                versions.add(response.json()["data"]["model_version"])
            return versions == {second}

        await eventually(both_serve_it, timeout=5)
