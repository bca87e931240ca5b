"""The only module that enqueues jobs: job names, payload shapes, and Redis-down -> 503.

Jobs are arq jobs (the worker is an arq worker), serialised with orjson: payloads are plain
JSON data. An ingest enqueue is one Redis round trip: the job body, its place in the queue and
its place in the org's pending set are written in one MULTI/EXEC, so a 202 is never given for a
half-written job.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from arq.connections import ArqRedis, RedisSettings
from arq.constants import job_key_prefix
from arq.jobs import serialize_job
from redis.exceptions import RedisError

from app import redis_keys
from app.errors import ServiceUnavailable

INGEST_KINDS = ("items", "users", "events")
# A job waiting longer than this (Postgres down for a month) is still not dropped by arq.
_INGEST_EXPIRES_MS = 30 * 24 * 3600 * 1000


def job_serializer(obj: Any) -> bytes:
    # Payloads are plain JSON; `default` only catches what arq itself stores, such as the
    # exception of a failed job, which must never make the worker crash while recording it.
    return orjson.dumps(obj, default=repr)


def job_deserializer(raw: bytes) -> Any:
    return orjson.loads(raw)


def ingest_function(kind: str) -> str:
    return f"ingest_{kind}"


def redis_settings(url: str) -> RedisSettings:
    """For the arq worker, which owns its own pool."""
    return RedisSettings.from_dsn(url)


def create_redis(url: str) -> ArqRedis:
    """One lazily-connecting pool per process for the queue, real-time state and rate limits.

    Lazy on purpose: an api replica must start (and keep serving recommendations from memory)
    while Redis is away; calls then fail fast instead of hanging a request.
    """
    redis = ArqRedis.from_url(url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=15)
    redis.job_serializer = job_serializer
    redis.job_deserializer = job_deserializer
    redis.default_queue_name = redis_keys.INGEST_QUEUE
    return redis


class Queue:
    def __init__(self, redis: ArqRedis) -> None:
        self.redis = redis

    async def enqueue_ingest(self, kind: str, org_id: str, records: list[dict[str, Any]]) -> str:
        """Durably queue one request's records as one job; raise ServiceUnavailable if Redis is away."""
        job_id = uuid.uuid4().hex
        now_ms = int(time.time() * 1000)
        body = serialize_job(
            ingest_function(kind), (), {"org_id": org_id, "records": records}, None, now_ms,
            serializer=job_serializer,
        )
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.psetex(job_key_prefix + job_id, _INGEST_EXPIRES_MS, body)
                pipe.zadd(redis_keys.INGEST_QUEUE, {job_id: now_ms})
                pipe.zadd(redis_keys.pending(org_id), {job_id: now_ms})
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable() from exc
        return job_id

    async def enqueue_erasure(self, org_id: str, user_id: str) -> str:
        requested_at = time.time()
        try:
            # Real-time state goes at once (API.md: "removed from real-time strategies at once");
            # the tombstone makes the worker drop events of this user received before now.
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(redis_keys.erased(org_id), user_id, requested_at)
                pipe.delete(redis_keys.recent(org_id, user_id))
                await pipe.execute()
            job = await self.redis.enqueue_job(
                "erase_user",
                org_id=org_id,
                user_id=user_id,
                requested_at=requested_at,
                _queue_name=redis_keys.INGEST_QUEUE,
                _expires=_INGEST_EXPIRES_MS // 1000,
            )
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable() from exc
        assert job is not None
        return job.job_id

    async def enqueue_train(self, org_id: str, *, reason: str) -> str:
        """Coalesced: while a train of this org is pending, asking again returns the same job id."""
        job_id = redis_keys.train_job_id(org_id)
        try:
            await self.redis.enqueue_job(
                "train_org", org_id=org_id, reason=reason, _job_id=job_id, _queue_name=redis_keys.TRAIN_QUEUE
            )
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable() from exc
        return job_id

    async def enqueue_served(self, rows: list[dict[str, Any]]) -> None:
        """The served-recommendation log, flushed in batches by the api (never on the request path)."""
        await self.redis.enqueue_job(
            "persist_served", rows=rows, _queue_name=redis_keys.INGEST_QUEUE, _expires=_INGEST_EXPIRES_MS // 1000
        )

    async def queue_depth(self, org_id: str) -> int:
        return int(await self.redis.zcard(redis_keys.pending(org_id)))

    async def is_training(self, org_id: str) -> bool:
        return bool(await self.redis.exists(redis_keys.training(org_id)))

    async def dead_letters(self, *, limit: int = 100) -> list[dict[str, Any]]:
        return [orjson.loads(raw) for raw in await self.redis.lrange(redis_keys.DEAD_LETTER, 0, limit - 1)]

    async def replay_dead_letters(self, *, limit: int = 1000) -> int:
        """Queue parked jobs again, oldest first (after the cause was fixed); returns how many."""
        replayed = 0
        while replayed < limit:
            raw = await self.redis.lpop(redis_keys.DEAD_LETTER)
            if raw is None:
                break
            entry = orjson.loads(raw)
            function, kwargs = entry["function"], entry["kwargs"]
            try:
                if function.startswith("ingest_"):
                    await self.enqueue_ingest(function.removeprefix("ingest_"), kwargs["org_id"], kwargs["records"])
                else:
                    await self.redis.enqueue_job(function, **kwargs, _queue_name=redis_keys.INGEST_QUEUE,
                                                 _expires=_INGEST_EXPIRES_MS // 1000)
            except Exception:
                await self.redis.lpush(redis_keys.DEAD_LETTER, raw)  # never lose it on the way back
                raise
            replayed += 1
        return replayed
