"""What every job of a worker process shares, typed, and what arq adds per job.

arq calls each job with a dict: a copy of the worker's own ctx plus the job's facts (job_id,
job_try, ...). Everything the worker opens at start-up lives in one WorkerContext object under
one key of that dict, so every job reads typed fields, and a change one job makes (a replaced
train pool, the once-per-start scan of untrained orgs) reaches the next job: assigning to a key
of the job's dict would change only that job's copy.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from app.model_store import ModelStore
from app.queue import Queue
from app.settings import Settings
from app.storage.db import SessionFactory

JobContext = dict[str, Any]  # the dict arq passes to every job
_KEY = "lehnz"


@dataclass
class WorkerContext:
    settings: Settings
    engine: AsyncEngine
    sessions: SessionFactory
    # Any, not ArqRedis: redis-py types every async reply as `Awaitable[T] | T`, which makes
    # each awaited call a type error (app/queue.py shows the ignores that would take).
    redis: Any
    queue: Queue
    model_store: ModelStore
    train_pool: ProcessPoolExecutor  # replaced when a training child breaks it
    check_untrained: bool = True  # the scheduler's scan of every org runs once per worker start

    def job_context(self) -> JobContext:
        """The ctx handed to arq's workers (and to a job called directly)."""
        return {_KEY: self}


def worker_context(ctx: JobContext) -> WorkerContext:
    shared: WorkerContext = ctx[_KEY]
    return shared


def job_id(ctx: JobContext) -> str:
    """arq's id of the running job ("" when a job function is called directly, as tests do)."""
    return str(ctx.get("job_id") or "")


def job_try(ctx: JobContext) -> int:
    return int(ctx.get("job_try", 1))
