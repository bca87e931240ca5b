"""The worker process: two arq workers sharing one Redis pool and one database engine.

- ingest queue: persists items/users/events, erasures and the served log; many jobs at once;
  plus the served log's retention (cron).
- train queue: one train at a time (in a child process), plus the training scheduler (cron).
Two queues, because their timeouts differ by orders of magnitude and arq derives how long a
crashed job stays "in progress" from the longest timeout of its worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from arq import cron
from arq.worker import Worker, func

from app.memory import collect_less_often
from app.model_store import ModelStore
from app.queue import INGEST_QUEUE, TRAIN_QUEUE, Queue, create_redis, job_deserializer, job_serializer
from app.settings import Settings
from app.storage.db import create_engine, create_session_factory
from workers import erasure, ingest, retention, training
from workers.context import JobContext, WorkerContext, worker_context

log = logging.getLogger("lehnz.worker")


def build_workers(settings: Settings, ctx: JobContext, redis: Any, *, burst: bool = False) -> list[Worker]:
    common: dict[str, Any] = {
        "redis_pool": redis,
        "ctx": ctx,
        "burst": burst,
        "handle_signals": False,
        "job_serializer": job_serializer,
        "job_deserializer": job_deserializer,
        "keep_result": 0,  # results are not read; status lives in Postgres and Redis keys
        "poll_delay": 0.05 if burst else 0.2,
        "health_check_interval": 30,
    }
    ingest_tries = settings.ingest_max_tries
    ingest_worker = Worker(
        functions=[
            func(ingest.ingest_items, name="ingest_items", max_tries=ingest_tries),
            func(ingest.ingest_users, name="ingest_users", max_tries=ingest_tries),
            func(ingest.ingest_events, name="ingest_events", max_tries=ingest_tries),
            func(ingest.persist_served, name="persist_served", max_tries=ingest_tries),
            func(erasure.erase_user, name="erase_user", max_tries=ingest_tries),
        ],
        cron_jobs=[
            # Served-log retention (workers/retention.py); one worker runs it at a time. No timeout
            # of its own: arq keeps a crashed job "in progress" for the longest timeout of the
            # worker, and ingest jobs must be retried within the ingest timeout.
            cron(retention.prune_served, name="prune_served", minute=set(range(3, 60, 10)), second=30,
                 unique=True)
        ]
        if not burst
        else None,
        queue_name=INGEST_QUEUE,
        max_jobs=settings.worker_concurrency,
        job_timeout=settings.ingest_job_timeout_s,
        **common,
    )
    train_worker = Worker(
        functions=[func(training.train_org, name="train_org", max_tries=3)],
        cron_jobs=[
            cron(
                training.schedule_training,
                name="schedule_training",
                second=set(range(0, 60, 5)),
                run_at_startup=True,
                unique=True,
                timeout=60,
            )
        ]
        if not burst
        else None,
        queue_name=TRAIN_QUEUE,
        max_jobs=1,
        job_timeout=settings.train_job_timeout_s,
        **common,
    )
    return [ingest_worker, train_worker]


async def open_context(settings: Settings) -> tuple[JobContext, Any, Any]:
    """The worker's shared resources (workers/context.py), as the ctx arq hands to each job."""
    engine = create_engine(settings.database_url or "", pool_size=settings.worker_concurrency + 2)
    redis = create_redis(settings.redis_url or "")
    shared = WorkerContext(
        settings=settings,
        engine=engine,
        sessions=create_session_factory(engine),
        redis=redis,
        queue=Queue(redis),
        model_store=ModelStore(settings.models_path),
        train_pool=training.new_executor(),
    )
    return shared.job_context(), redis, engine


async def close_context(ctx: JobContext) -> None:
    shared = worker_context(ctx)
    training.stop_executor(shared.train_pool)
    await shared.redis.aclose()
    await shared.engine.dispose()


async def run(settings: Settings, *, burst: bool = False) -> None:
    collect_less_often()  # jobs of 1,000 decoded records: far fewer GC passes over the heap
    ctx, redis, _ = await open_context(settings)
    workers = build_workers(settings, ctx, redis, burst=burst)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if not burst:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    log.info("worker started (ingest concurrency %d)", settings.worker_concurrency)
    tasks = [asyncio.create_task(w.async_run()) for w in workers]
    stopper = asyncio.create_task(stop.wait())
    try:
        if burst:
            await asyncio.gather(*tasks)
        else:
            await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task.done() and task.exception():
                    raise task.exception()  # type: ignore[misc]
    finally:
        # Graceful: stop taking jobs, let running ingest jobs finish (a few seconds at most);
        # anything still running is cancelled, which arq re-queues, so nothing is lost.
        for worker in workers:
            worker.allow_pick_jobs = False
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(_drain(workers[0]), timeout=10)
        for worker in workers:
            worker.handle_sig(signal.SIGTERM)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        stopper.cancel()
        await close_context(ctx)
        log.info("worker stopped")


async def _drain(worker: Worker) -> None:
    while any(not t.done() for t in worker.tasks.values()):
        await asyncio.sleep(0.05)
