"""What a job does when persisting fails: retry transient errors with backoff, park the rest.

Nothing accepted is ever dropped: a job that cannot be persisted after `ingest_max_tries`
tries, or that fails for a reason retrying cannot fix, is copied to the dead-letter list in
Redis with the error, for an operator to inspect and replay (`lehnz dead-letter`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import asyncpg
from arq import Retry
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from app.queue import job_settled, park
from app.storage.redis_state import ingest_stats
from workers.context import JobContext, job_id, job_try, worker_context

log = logging.getLogger("lehnz.worker")

# asyncpg errors that mean "the database is away or busy", not "this data is wrong".
_TRANSIENT_PG = (
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.LockNotAvailableError,
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (OSError, TimeoutError, RedisError, *_TRANSIENT_PG)):
        return True
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or (exc.orig is not None and is_transient(exc.orig))
    cause = exc.__cause__
    return cause is not None and cause is not exc and is_transient(cause)


def backoff_s(job_try: int, *, cap_s: float) -> float:
    """0.5, 1, 2, 4, ... seconds, capped."""
    return float(min(cap_s, 0.5 * 2 ** max(0, job_try - 1)))


async def handle_failure(
    ctx: JobContext, exc: Exception, *, function: str, kwargs: dict[str, Any], kind: str, records: int
) -> None:
    """Raise Retry for transient errors; otherwise (or when out of tries) dead-letter the job."""
    shared = worker_context(ctx)
    settings, tries, job = shared.settings, job_try(ctx), job_id(ctx)
    if is_transient(exc) and tries < settings.ingest_max_tries:
        delay = backoff_s(tries, cap_s=settings.retry_backoff_max_s)
        log.warning(
            "transient failure in %s (try %d, %s: %s); retrying in %.1f s",
            function, tries, type(exc).__name__, _short(exc), delay,
        )
        raise Retry(defer=delay) from exc
    log.error("parking %s job %s in the dead-letter list: %s: %s", function, job, type(exc).__name__,
              _short(exc))
    entry = {
        "job_id": job or None,
        "function": function,
        "kwargs": kwargs,
        "error": f"{type(exc).__name__}: {_short(exc)}",
        "tries": tries,
        "parked_at": time.time(),
    }
    redis = shared.redis
    async with redis.pipeline(transaction=True) as pipe:
        park(pipe, entry)
        ingest_stats.failed(pipe, kind, records)
        if "org_id" in kwargs and job:
            job_settled(pipe, kwargs["org_id"], job)
        await pipe.execute()


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text[:300]
