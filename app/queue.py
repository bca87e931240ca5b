"""The only module that enqueues jobs: job names, payload shapes, and Redis-down -> 503.

Jobs are arq jobs (the worker is an arq worker), serialised with orjson: payloads are plain
JSON data. An ingest enqueue is one Redis round trip: the job body, its place in the queue and
its place in the org's pending set are written by one Lua script, so a 202 is never given for
a half-written job.

This module owns the queues' state in Redis (key names in app/redis_keys.py): the two arq
queues, each org's pending set (its ingest jobs not yet persisted or parked: queue_depth; a
train waits for them) and the dead-letter list. The worker settles a job (job_settled, park)
on its own pipeline, with its other writes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from arq.connections import ArqRedis, RedisSettings
from arq.constants import health_check_key_suffix, in_progress_key_prefix, job_key_prefix
from arq.jobs import serialize_job
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from app import redis_keys
from app.errors import ServiceUnavailable
from app.recommend import realtime
from app.storage.redis_state import tombstones, train_flags

# The arq queues the worker consumes (workers/main.py).
INGEST_QUEUE = redis_keys.INGEST_QUEUE
TRAIN_QUEUE = redis_keys.TRAIN_QUEUE

INGEST_KINDS = ("items", "users", "events")
# A job waiting longer than this (Postgres down for a month) is still not dropped by arq.
_INGEST_EXPIRES_MS = 30 * 24 * 3600 * 1000
# A train someone asked for (POST /v1/models/train, `lehnz train`, the dashboard's "Train now")
# is queued this far in the past, so it runs before the scheduler's backlog (after a restart,
# every org with events and no model is due at once); among asked trains, by the time asked.
_ASKED_AHEAD_S = 365 * 24 * 3600
_TRAIN_EXPIRES_S = 24 * 3600  # arq's default life of a queued job; given, since the score is in the past

# `type: ignore` on redis calls: redis-py types an async reply as Awaitable[T] | T [misc], and
# values as str where it also takes floats and bytes [arg-type].


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


def create_redis(url: str, *, socket_timeout: float | None = 5) -> ArqRedis:
    """One lazily-connecting pool per process for the queue, real-time state and rate limits.

    Lazy on purpose: an api replica must start (and keep serving recommendations from memory)
    while Redis is away; calls then fail fast instead of hanging a request.

    `socket_timeout=None` is for callers that bound every call themselves (asyncio.timeout):
    redis-py wraps each command's write in asyncio.wait_for when a socket timeout is set, which
    in Python 3.11 is a task and an extra event-loop turn per command.
    """
    # One transparent retry on a dropped connection (e.g. after a Redis restart) instead of a
    # health-check PING per idle connection; every write we make is safe to repeat.
    redis = ArqRedis.from_url(
        url,
        socket_connect_timeout=2,
        socket_timeout=socket_timeout,
        retry=RedisRetry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError],
    )
    redis.job_serializer = job_serializer
    redis.job_deserializer = job_deserializer
    redis.default_queue_name = redis_keys.INGEST_QUEUE
    return redis


# The job body, its place in the queue and in the org's pending set, atomically, in one
# command: a 202 is never given for a half-written job. (arq's own enqueue_job takes a WATCH
# and a MULTI round trip; job ids here are fresh UUIDs, so there is nothing to watch.)
_ENQUEUE = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
return 1
"""


class Queue:
    def __init__(self, redis: ArqRedis) -> None:
        self.redis = redis
        self._enqueue = redis.register_script(_ENQUEUE)

    async def enqueue_ingest(self, kind: str, org_id: str, records: list[dict[str, Any]]) -> str:
        """Durably queue one request's records as one job; raise ServiceUnavailable if Redis is away."""
        job_id = uuid.uuid4().hex
        now_ms = int(time.time() * 1000)
        body = serialize_job(
            ingest_function(kind), (), {"org_id": org_id, "records": records}, None, now_ms,
            serializer=job_serializer,
        )
        try:
            await self._enqueue(
                keys=[job_key_prefix + job_id, redis_keys.INGEST_QUEUE, redis_keys.pending(org_id)],
                args=[body, _INGEST_EXPIRES_MS, now_ms, job_id],
            )
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable() from exc
        return job_id

    async def enqueue_erasure(self, org_id: str, user_id: str) -> str:
        requested_at = time.time()
        try:
            # Real-time state goes at once (API.md: "removed from real-time strategies at once");
            # the tombstone makes the worker drop events of this user received before now.
            async with self.redis.pipeline(transaction=True) as pipe:
                tombstones.erased(pipe, org_id, {user_id: requested_at})
                realtime.activity_forgotten(pipe, org_id, [user_id])
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

    async def enqueue_train(self, org_id: str, *, reason: str, search: bool = False, asked: bool = False) -> str:
        """Coalesced: while a train of this org is pending, asking again returns the same job id.
        While one runs (it may have read the org's data before this request), one more train
        follows it: the scheduler queues it (workers/training.py).
        `search`: the next train of the org runs the model search (also when it is already queued
        or running: the request waits in Redis for the train that takes it).
        `asked`: a person asked for it: it goes ahead of the scheduled trains (also when the
        scheduler had queued it already)."""
        job_id = redis_keys.train_job_id(org_id)
        ahead: dict[str, Any] = {}
        if asked:
            ahead = {"_defer_until": datetime.fromtimestamp(time.time() - _ASKED_AHEAD_S, UTC),
                     "_expires": _TRAIN_EXPIRES_S}
        try:
            if search:
                await train_flags.ask_for_search(self.redis, org_id)
            queued = await self.redis.enqueue_job(
                "train_org", org_id=org_id, reason=reason, _job_id=job_id, _queue_name=redis_keys.TRAIN_QUEUE,
                **ahead,
            )
            if queued is None and await self.redis.exists(in_progress_key_prefix + job_id):
                await train_flags.ask_to_train_again(self.redis, org_id)
            elif queued is None and asked:  # queued by the scheduler: moved to the front (XX: never re-added)
                score = (time.time() - _ASKED_AHEAD_S) * 1000
                await self.redis.zadd(redis_keys.TRAIN_QUEUE, {job_id: score}, xx=True, lt=True)
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
        return await train_flags.is_running(self.redis, org_id)

    async def train_worker_alive(self) -> bool:
        """A worker consumes the train queue: arq refreshes this health-check key every 30 s
        (workers/main.py) with a 31 s TTL, so a worker that is gone is noticed within 31 s."""
        return bool(await self.redis.exists(redis_keys.TRAIN_QUEUE + health_check_key_suffix))

    async def dead_letters(self, *, limit: int = 100) -> list[dict[str, Any]]:
        parked = await self.redis.lrange(redis_keys.DEAD_LETTER, 0, limit - 1)  # type: ignore[misc]
        return [orjson.loads(raw) for raw in parked]

    async def discard_dead_letters(
        self, *, org_id: str | None, keep_copy: Callable[[list[dict[str, Any]]], None] | None = None
    ) -> int:
        """Remove parked jobs, of one org (the `org_id` they carry) or all of them (org_id None);
        returns how many. `keep_copy` gets exactly those entries before any is removed (a failure
        there removes nothing). Removal is by value (LREM): a job parked meanwhile stays."""
        chosen: list[tuple[bytes, dict[str, Any]]] = []
        for raw in await self.redis.lrange(redis_keys.DEAD_LETTER, 0, -1):  # type: ignore[misc]
            entry = orjson.loads(raw)
            if org_id is None or str((entry.get("kwargs") or {}).get("org_id")) == org_id:
                chosen.append((raw, entry))
        if keep_copy is not None:
            keep_copy([entry for _, entry in chosen])
        removed = 0
        for raw, _ in chosen:
            count = await self.redis.lrem(redis_keys.DEAD_LETTER, 1, raw)  # type: ignore[arg-type, misc]
            removed += int(count)
        return removed

    async def rewrite_dead_letters(self, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> int:
        """Apply `change` to every parked job: None leaves it, {} removes it, else it is replaced.
        An entry is replaced only if it is still there; one replaced meanwhile (a concurrent
        rewrite, a replay) is read again and changed again, so `change` must be idempotent.
        Returns how many entries were changed."""
        replace = self.redis.register_script(_REPLACE_PARKED)
        changed = 0
        for _ in range(_REWRITE_PASSES):
            missed = False
            for raw in await self.redis.lrange(redis_keys.DEAD_LETTER, 0, -1):  # type: ignore[misc]
                new = change(orjson.loads(raw))
                if new is None:
                    continue
                if await replace(keys=[redis_keys.DEAD_LETTER], args=[raw, orjson.dumps(new) if new else b""]):
                    changed += 1
                else:
                    missed = True
            if not missed:
                break
        return changed

    async def replay_dead_letters(self, *, limit: int = 1000) -> int:
        """Queue parked jobs again, oldest first (after the cause was fixed); returns how many."""
        replayed = 0
        while replayed < limit:
            raw = await self.redis.lpop(redis_keys.DEAD_LETTER)  # type: ignore[misc]
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
                # Never lose it on the way back.
                await self.redis.lpush(redis_keys.DEAD_LETTER, raw)  # type: ignore[misc]
                raise
            replayed += 1
        return replayed


def job_settled(pipe: Any, org_id: str, job_id: str) -> None:
    """An ingest job of the org was persisted or parked: it leaves the org's pending set (queued
    on the worker's pipeline, with the job's other writes)."""
    pipe.zrem(redis_keys.pending(org_id), job_id)


def park(pipe: Any, entry: dict[str, Any]) -> None:
    """Append a job that could not be persisted to the dead-letter list (on the worker's pipeline)."""
    pipe.rpush(redis_keys.DEAD_LETTER, orjson.dumps(entry))


async def trains_in_progress(redis: Any) -> list[tuple[str, str]]:
    """(arq's in-progress key, org id) of every train job arq holds as running."""
    found = []
    async for key in redis.scan_iter(match=in_progress_key_prefix + redis_keys.train_job_id("*")):
        in_progress = key.decode() if isinstance(key, bytes) else key
        org_id = redis_keys.train_job_org(in_progress.removeprefix(in_progress_key_prefix))
        if org_id:
            found.append((in_progress, org_id))
    return found


async def newest_pending(redis: Any, org_id: str) -> float | None:
    """When (ms, the enqueue time) the org's newest pending ingest job was queued; None if none is."""
    newest = await redis.zrange(redis_keys.pending(org_id), -1, -1, withscores=True)
    return newest[0][1] if newest else None


async def pending_until(redis: Any, org_id: str, cutoff: float) -> int:
    """How many of the org's pending ingest jobs were queued at or before `cutoff` (ms)."""
    return int(await redis.zcount(redis_keys.pending(org_id), "-inf", cutoff))


def read_depths(pipe: Any) -> None:
    """Queue the reads of the queues' lengths on the caller's pipeline: three replies, the ingest
    queue, the train queue and the dead-letter list."""
    pipe.zcard(redis_keys.INGEST_QUEUE)
    pipe.zcard(redis_keys.TRAIN_QUEUE)
    pipe.llen(redis_keys.DEAD_LETTER)


# Replace a dead-letter entry only if it is still there (LREM found it); an empty replacement
# only removes it. Returns whether the entry was there.
_REPLACE_PARKED = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
if ARGV[2] ~= '' then redis.call('RPUSH', KEYS[1], ARGV[2]) end
return 1
"""
_REWRITE_PASSES = 10


class _Batch:
    __slots__ = ("done", "records")

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class IngestBatcher:
    """Group commit for ingestion: concurrent requests of one org share one job.

    A request's records join the org's open batch; if no enqueue of that org is in flight,
    the request enqueues at once (no added latency when traffic is light), otherwise the
    batch goes as soon as the enqueue in flight returns. Every request still answers only
    after its records are durably queued, and all requests of a batch that could not be
    queued get the same 503. Under load, single-event requests become jobs of many events,
    which is what the worker persists fast.
    """

    def __init__(self, queue: Queue, *, max_records: int) -> None:
        self._queue = queue
        self._max_records = max_records
        self._open: dict[tuple[str, str], list[_Batch]] = {}
        self._flushing: set[tuple[str, str]] = set()

    async def submit(self, kind: str, org_id: str, records: list[dict[str, Any]]) -> None:
        key = (kind, org_id)
        batches = self._open.setdefault(key, [])
        if not batches or len(batches[-1].records) + len(records) > self._max_records:
            batches.append(_Batch())
        batch = batches[-1]
        batch.records.extend(records)
        if key not in self._flushing:
            self._flushing.add(key)
            asyncio.create_task(self._flush(key))
        await asyncio.shield(batch.done)

    async def _flush(self, key: tuple[str, str]) -> None:
        kind, org_id = key
        batches: list[_Batch] = []
        try:
            while batches := self._open.pop(key, []):
                while batches:
                    batch = batches[0]
                    try:
                        await self._queue.enqueue_ingest(kind, org_id, batch.records)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                        batch.done.set_exception(exc)
                    else:
                        batch.done.set_result(None)
                    batches.pop(0)
        finally:
            for batch in batches:  # only when cancelled (shutdown): nothing was queued for them
                if not batch.done.done():
                    batch.done.set_exception(ServiceUnavailable())
            self._flushing.discard(key)
