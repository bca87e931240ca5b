"""Training jobs: one org at a time per worker, in a child process, coalesced per org.

The heavy part (load from Postgres, fit, write the artifact) runs in a separate process so a
long or crashing fit never stalls ingestion in this worker, and its memory goes back to the
OS when it ends. This process records the outcome and publishes the new version; api replicas
notice it within a second and swap it in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from app.queue import newest_pending, pending_until, trains_in_progress
from app.settings import Settings
from app.storage import events, training_runs
from app.storage.redis_state import signals, train_flags
from app.supervisor import exit_with_parent
from workers.context import JobContext, worker_context

log = logging.getLogger("lehnz.worker.training")


def new_executor() -> ProcessPoolExecutor:
    # spawn: a clean interpreter (no inherited event loop, sockets or BLAS thread pools);
    # one task per child: the memory of a big fit is returned when it ends. The child dies with
    # this worker (killed, OOM) instead of lingering with multiprocessing's resource tracker.
    return ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1,
        initializer=exit_with_parent, initargs=(os.getpid(),),
    )


def stop_executor(executor: ProcessPoolExecutor) -> None:
    """Stop now, a train in flight included: the worker must not outlive its stop on a child
    (the abandoned train's job is re-queued by arq and the previous model keeps serving)."""
    processes = list((getattr(executor, "_processes", None) or {}).values())  # no public API for this
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=10)
    # Then wait for the pool's manager thread: shutdown(wait=False) cleared the pool's process
    # table under it, and right after a child retired (max_tasks_per_child) the thread could
    # still be starting its replacement and failed on that (Python 3.11).
    executor.shutdown(wait=True, cancel_futures=True)


# While a train runs, its worker keeps "training:<org>" alive. If the worker dies (killed,
# OOM, machine lost), the key lapses within HEARTBEAT_TTL_S and the scheduler frees the job for
# another worker, instead of arq keeping it "in progress" for the whole train timeout.
HEARTBEAT_TTL_S = 30
_HEARTBEAT_EVERY_S = 10


async def _heartbeat(redis: Any, org_id: str, reason: str) -> None:
    while True:
        await asyncio.sleep(_HEARTBEAT_EVERY_S)
        with contextlib.suppress(Exception):
            await train_flags.beat(redis, org_id, reason, ttl_s=HEARTBEAT_TTL_S)


async def release_orphaned_trains(redis: Any, settings: Settings) -> list[str]:
    """Train jobs arq still holds "in progress" whose worker stopped beating: let them run again.

    Only jobs in progress for over a minute: a job that has just started may not have set its
    first heartbeat yet. (arq marks a job in progress for its longest timeout + 10 s.)
    """
    started_ttl_ms = (settings.train_job_timeout_s + 10) * 1000
    released = []
    for in_progress, org_id in await trains_in_progress(redis):
        running_for_ms = started_ttl_ms - int(await redis.pttl(in_progress))
        if running_for_ms > 60_000 and not await train_flags.is_running(redis, org_id):
            await redis.delete(in_progress)
            released.append(org_id)
    if released:
        log.warning("released the train jobs of %d org(s) whose worker died mid-train", len(released))
    return released


# A train waits at most this long for the org's ingest queued before it started; past that (Postgres
# slow or down, no ingest worker) it trains on what is stored, and the rest reaches the next train.
INGEST_WAIT_S = 60.0
_INGEST_POLL_S = 0.05


async def wait_for_queued_ingest(
    redis: Any, org_id: str, *, reason: str, timeout_s: float = INGEST_WAIT_S
) -> int:
    """Wait until the org's ingest jobs queued before now are persisted (or parked in the dead-letter
    list), so a train asked for right after a 202 learns from what that 202 accepted. Jobs queued
    later are not waited for (steady traffic cannot hold a train back). Returns how many it waited for.
    The "training" flag is set meanwhile: the train has started, and status says so."""
    cutoff = await newest_pending(redis, org_id)  # the enqueue time (ms) of the newest job queued so far
    if cutoff is None:
        return 0
    waiting = await pending_until(redis, org_id, cutoff)
    log.info("train of org %s waits for %d queued ingest job(s)", org_id, waiting)
    deadline = time.monotonic() + timeout_s
    beat_at = 0.0
    try:
        while await pending_until(redis, org_id, cutoff):
            if time.monotonic() >= deadline:
                log.warning("train of org %s goes on after %.0f s with ingest still queued", org_id, timeout_s)
                break
            if time.monotonic() >= beat_at:
                await train_flags.beat(redis, org_id, reason, ttl_s=HEARTBEAT_TTL_S)
                beat_at = time.monotonic() + _HEARTBEAT_EVERY_S
            await asyncio.sleep(_INGEST_POLL_S)
    except asyncio.CancelledError:
        await train_flags.clear(redis, org_id)  # stopping: arq re-queues the train
        raise
    return waiting


async def train_org(ctx: JobContext, *, org_id: str, reason: str = "manual") -> dict[str, Any]:
    shared = worker_context(ctx)
    settings, redis = shared.settings, shared.redis
    started = datetime.now(UTC)
    await train_flags.take_train_again(redis, org_id)  # taken: this train starts after those requests
    await wait_for_queued_ingest(redis, org_id, reason=reason)
    pending_new = await signals.new_data_of(redis, org_id)
    search = await train_flags.take_search_request(redis, org_id)  # taken: asked once, searched once
    previous_quality = await _last_quality(ctx, org_id)
    await train_flags.beat(redis, org_id, reason, ttl_s=HEARTBEAT_TTL_S)
    log.info("training org %s (%s%s)", org_id, reason, ", model search requested" if search else "")
    heartbeat = asyncio.create_task(_heartbeat(redis, org_id, reason))
    try:
        loop = asyncio.get_running_loop()
        try:
            summary = await loop.run_in_executor(
                shared.train_pool, run_training, org_id, settings.model_dump(), previous_quality, search
            )
        finally:
            heartbeat.cancel()  # and wait for it, so no late beat re-sets the flag cleared below
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
    except asyncio.CancelledError:
        # Stopping or timed out: arq re-queues the job; do not leave "training" set meanwhile.
        await _restore_search_request(redis, org_id, search)
        await train_flags.clear(redis, org_id)
        raise
    except Exception as exc:  # noqa: BLE001 - every failure is recorded; the previous model keeps serving
        await _restore_search_request(redis, org_id, search)
        if "BrokenProcessPool" in type(exc).__name__:
            shared.train_pool = new_executor()  # the next train gets a working pool
        error = f"{type(exc).__name__}: {exc}"[:2000]
        if not await _record(ctx, org_id, started=started, status="failed", error=error):
            return await _org_deleted_meanwhile(ctx, org_id)
        log.error("training org %s failed: %s", org_id, error)
        await train_flags.clear(redis, org_id)
        return {"status": "failed", "error": error}

    if not await _record(ctx, org_id, started=started, status="succeeded", summary=summary):
        return await _org_deleted_meanwhile(ctx, org_id)
    if await signals.is_deleted(redis, org_id):  # deleted right after the record
        return await _org_deleted_meanwhile(ctx, org_id)
    async with redis.pipeline(transaction=True) as pipe:
        signals.model_trained(pipe, org_id, version=summary["version"], consumed_new_data=pending_new,
                              duration_s=summary["duration_ms"] / 1000, quality=summary.get("quality"))
        train_flags.cleared(pipe, org_id)
        await pipe.execute()
    shared.model_store.prune(org_id, keep=3)
    log.info("trained org %s: version %s in %d ms", org_id, summary["version"], summary["duration_ms"])
    return {"status": "succeeded", **summary}


async def _last_quality(ctx: JobContext, org_id: str) -> dict[str, Any] | None:
    """What the org's last succeeded train recorded of its model search (None: never searched)."""
    async with worker_context(ctx).sessions() as session:
        run = await training_runs.latest(session, uuid.UUID(org_id), status="succeeded")
    return run.quality if run is not None else None


async def _restore_search_request(redis: Any, org_id: str, search: bool) -> None:
    """A train that asked for a search and did not finish leaves the request for the next one."""
    if search:
        with contextlib.suppress(Exception):
            await train_flags.ask_for_search(redis, org_id)


def _org_missing(exc: IntegrityError) -> bool:
    """The training run's row was refused because its org no longer exists (foreign key)."""
    cause = exc.orig
    code = getattr(cause, "sqlstate", None) or getattr(getattr(cause, "__cause__", None), "sqlstate", None)
    return code == "23503"  # foreign_key_violation


async def _org_deleted_meanwhile(ctx: JobContext, org_id: str) -> dict[str, Any]:
    """`lehnz org delete` ran while this org trained: remove what the train wrote, record nothing."""
    shared = worker_context(ctx)
    shared.model_store.delete_org(org_id)
    await train_flags.clear(shared.redis, org_id)
    log.info("org %s was deleted while it trained; its new model was discarded", org_id)
    return {"status": "org deleted"}


async def _record(
    ctx: JobContext, org_id: str, *, started: datetime, status: str,
    summary: dict[str, Any] | None = None, error: str | None = None,
) -> bool:
    """Record the run; False when its org no longer exists (deleted while it trained)."""
    finished = datetime.now(UTC)
    summary = summary or {}
    try:
        async with worker_context(ctx).sessions() as session, session.begin():
            training_runs.add_run(session, uuid.UUID(org_id), status=status, started=started, finished=finished,
                                  summary=summary, error=error)
    except IntegrityError as exc:
        if not _org_missing(exc):
            raise
        return False
    return True


async def schedule_training(ctx: JobContext) -> int:
    """Cron: queue a train for every org with enough new data whose model is older than the interval,
    and for every org that has events but no model yet (e.g. after a bulk import)."""
    shared = worker_context(ctx)
    settings, redis = shared.settings, shared.redis
    await release_orphaned_trains(redis, settings)
    new_data = await signals.new_data_by_org(redis)
    async with shared.sessions() as session:
        last_success = await training_runs.last_success_by_org(session)
        with_events = await events.orgs_with_events(session) if shared.check_untrained else set()
    shared.check_untrained = False  # the scan of all orgs runs once per worker start; counters do the rest
    now = datetime.now(UTC)
    queued = 0
    due: dict[str, str] = {}
    for org_uuid in with_events:
        if org_uuid not in last_success:
            due[str(org_uuid)] = "no model yet"
    for org_id, count in new_data.items():
        if count < settings.train_min_new_events:
            continue
        last = last_success.get(uuid.UUID(org_id))
        if last is None:
            due[org_id] = "no model yet"
        elif (now - last).total_seconds() >= settings.train_interval_s:
            due[org_id] = "schedule"
    for org_id in await train_flags.searches_requested(redis):  # asked while a train of the org ran
        due.setdefault(org_id, "model search requested")
    for org_id in await train_flags.trains_asked_again(redis):  # asked while a train of the org ran
        due.setdefault(org_id, "asked while training")
    for org_id, reason in due.items():
        await shared.queue.enqueue_train(org_id, reason=reason)
        queued += 1
    return queued


def run_training(
    org_id: str, settings_data: dict[str, Any], previous_quality: dict[str, Any] | None = None, search: bool = False
) -> dict[str, Any]:
    """In the child process: load, fit, write the artifact; return what the parent records."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from workers.train_process import train_and_store

    return train_and_store(org_id, Settings(**settings_data), previous_quality=previous_quality, search=search)

