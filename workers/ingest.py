"""Ingest jobs: persist a request's records in one transaction, then update real-time state.

Every step is idempotent, so arq may run a job twice (worker killed, Redis restarted) and a
client may send an event twice: events are keyed (org_id, event_id), items/users are upserts
that never let an older request overwrite a newer one, and a user's real-time activity holds
an event id at most once (the first write wins, from the stored event when it was stored before).
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from typing import Any

import asyncpg

from app.erasure_rule import before_erasure
from app.queue import job_settled
from app.recommend import realtime
from app.storage import catalog, events, identity
from app.storage.redis_state import ingest_stats, signals
from app.storage.redis_state.tombstones import erasure_times
from workers.context import JobContext, job_id, worker_context
from workers.failures import handle_failure

log = logging.getLogger("lehnz.worker.ingest")


async def ingest_items(ctx: JobContext, *, org_id: str, records: list[dict[str, Any]]) -> int:
    shared = worker_context(ctx)
    try:
        async with shared.sessions() as session, session.begin():
            await catalog.upsert_items(session, uuid.UUID(org_id), records)
    except Exception as exc:  # noqa: BLE001 - retried or dead-lettered by handle_failure, never dropped
        await handle_failure(ctx, exc, function="ingest_items", kwargs=_kw(org_id, records), kind="items",
                             records=len(records))
        return 0
    redis = shared.redis
    async with redis.pipeline(transaction=True) as pipe:
        # Replicas refresh their catalog (status changes apply in seconds), and new or changed
        # items are new data: the scheduler retrains at its next interval, so they reach the
        # model-based strategies without waiting for events.
        signals.data_persisted(pipe, org_id, catalog_changed=True, new_data=len(records))
        ingest_stats.persisted(pipe, "items", len(records))
        job_settled(pipe, org_id, job_id(ctx))
        await pipe.execute()
    return len(records)


async def ingest_users(ctx: JobContext, *, org_id: str, records: list[dict[str, Any]]) -> int:
    shared = worker_context(ctx)
    redis = shared.redis
    try:
        records = await _drop_erased(redis, org_id, records, kind="users")
        async with shared.sessions() as session, session.begin():
            if records:
                await catalog.upsert_users(session, uuid.UUID(org_id), records)
    except Exception as exc:  # noqa: BLE001 - retried or dead-lettered by handle_failure, never dropped
        await handle_failure(ctx, exc, function="ingest_users", kwargs=_kw(org_id, records), kind="users",
                             records=len(records))
        return 0
    async with redis.pipeline(transaction=True) as pipe:
        ingest_stats.persisted(pipe, "users", len(records))
        job_settled(pipe, org_id, job_id(ctx))
        await pipe.execute()
    return len(records)


async def ingest_events(ctx: JobContext, *, org_id: str, records: list[dict[str, Any]]) -> int:
    shared = worker_context(ctx)
    redis = shared.redis
    settings = shared.settings
    try:
        # Inside the try: a Redis error here is retried like a Postgres one, never a lost job.
        records = await _drop_erased(redis, org_id, records, kind="events")
        identifies = sorted((r for r in records if r["event_name"] == "identify"), key=lambda r: r["occurred_at"])
        async with shared.sessions() as session, session.begin():
            org_uuid = uuid.UUID(org_id)
            new_ids = await events.insert_events(session, org_uuid, records) if records else set()
            # Events stored before (a client's retry, or this job's own retry after a crash between
            # this commit and the Redis writes below): the real-time state gets them as stored, so
            # a retry without `timestamp` cannot move an event to its receive time.
            repeated = [r["event_id"] for r in records if r["event_id"] not in new_ids]
            stored = await events.stored_events(session, org_uuid, repeated) if repeated else {}
            # All of the job's identifies with one read and one write (alias -> canonical, set or
            # changed). One stitch at a time rewrote a chain's rows once per link inside one
            # transaction: a 1,000-link chain took minutes and its job never finished.
            aliases = await identity.stitch_all(
                session, org_uuid, [(r["previous_user_id"], r["user_id"]) for r in identifies]
            )
    except Exception as exc:  # noqa: BLE001 - retried or dead-lettered by handle_failure, never dropped
        await handle_failure(ctx, exc, function="ingest_events", kwargs=_kw(org_id, records), kind="events",
                             records=len(records))
        return 0

    # Postgres is committed; now the real-time state (idempotent, so safe to redo on a retry).
    async with redis.pipeline(transaction=False) as pipe:
        realtime.identities_stitched(pipe, org_id, aliases, keep=settings.recent_activity_len)
        await pipe.execute()

    # Idempotent by event id (realtime.record_activity): an event stored before is added only if
    # the user's recent activity does not hold it, so nothing is counted twice or lost on a retry.
    as_stored = [stored.get(r["event_id"], r) for r in records]
    by_user = await _group_by_canonical_user(redis, org_id, [r for r in as_stored if r.get("item_id")])
    await realtime.record_activity(
        redis, org_id, by_user, keep=settings.recent_activity_len, repeated=set(repeated)
    )
    await _merge_ids_identified_meanwhile(redis, org_id, list(by_user), keep=settings.recent_activity_len)
    async with redis.pipeline(transaction=True) as pipe:
        signals.data_persisted(pipe, org_id, catalog_changed=False, new_data=len(new_ids))
        ingest_stats.persisted(pipe, "events", len(new_ids))
        job_settled(pipe, org_id, job_id(ctx))
        await pipe.execute()
    return len(new_ids)


async def persist_served(ctx: JobContext, *, rows: list[dict[str, Any]]) -> int:
    """The api's served-recommendation log (attribution, analytics)."""
    from app.storage import served

    shared = worker_context(ctx)

    try:
        rows = await _forget_erased_viewers(shared.redis, rows)
        try:
            async with shared.sessions() as session, session.begin():
                await served.insert_served(session, rows)
        except asyncpg.exceptions.ForeignKeyViolationError:
            # An org of the batch was deleted while the insert waited on it (the insert leaves
            # out rows of deleted orgs, but checked before the delete committed): once more.
            async with shared.sessions() as session, session.begin():
                await served.insert_served(session, rows)
    except Exception as exc:  # noqa: BLE001 - retried or dead-lettered by handle_failure, never dropped
        await handle_failure(ctx, exc, function="persist_served", kwargs={"rows": rows}, kind="served",
                             records=len(rows))
        return 0
    return len(rows)


async def _drop_erased(redis: Any, org_id: str, records: list[dict[str, Any]], *, kind: str) -> list[dict[str, Any]]:
    """Records (events, user upserts) of an erased user from before the erasure are not stored
    (app/erasure_rule.py): those received before it (a job accepted before a DELETE can run
    after it) and those that happened before it (events stamped, profiles created, before it but
    sent after it). An identify naming an erased id as its previous_user_id goes too: it would
    link the erased id again."""
    ids = {(org_id, user_id) for r in records for user_id in (r["user_id"], r.get("previous_user_id")) if user_id}
    erased_at = await erasure_times(redis, ids)
    if not erased_at:
        return records
    happened = "occurred_at" if kind == "events" else "created_at"

    def from_before_erasure(record: dict[str, Any]) -> bool:
        people = (record["user_id"], record.get("previous_user_id"))
        return any(
            before_erasure(erased_at.get((org_id, p)), received_at=record["received_at"], happened_at=record[happened])
            for p in people
            if p
        )

    kept = [r for r in records if not from_before_erasure(r)]
    log.info("dropped %d %s of erased users in org %s", len(records) - len(kept), kind, org_id)
    return kept


async def _forget_erased_viewers(redis: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Served rows of a user erased after the recommendation was served keep no user id (the
    erasure ran while they sat in the api's buffer or the queue); the rest of the row stays for
    analytics, as the erasure itself leaves it (workers/erasure.py)."""
    erased_at = await erasure_times(redis, {(r["org_id"], r["user_id"]) for r in rows if r.get("user_id")})
    if not erased_at:
        return rows

    def erased_since(r: dict[str, Any]) -> bool:
        user_id = r.get("user_id")
        return user_id is not None and r["served_at"] <= erased_at.get((r["org_id"], user_id), float("-inf"))

    return [{**r, "user_id": None} if erased_since(r) else r for r in rows]


async def _group_by_canonical_user(
    redis: Any, org_id: str, records: list[dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    user_ids = sorted({r["user_id"] for r in records})
    canonical: dict[str, str] = {}
    if user_ids:
        resolved = await realtime.canonical_ids(redis, org_id, user_ids)
        canonical = {u: (c if c is not None else u) for u, c in zip(user_ids, resolved, strict=True)}
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_user[canonical[record["user_id"]]].append(record)
    return by_user


async def _merge_ids_identified_meanwhile(redis: Any, org_id: str, written: list[str], *, keep: int) -> None:
    """An identify handled by a concurrent job between our alias lookup and our write would have
    merged the anonymous id before our events reached it, leaving them under the anonymous id.
    Look again after writing: whatever is an alias now is merged (a union, so merging twice is
    harmless). If the identify's alias is written after this look, its own merge, which follows
    that write, finds our events."""
    if not written:
        return
    now_canonical = await realtime.canonical_ids(redis, org_id, written)
    late = [(user, target) for user, target in zip(written, now_canonical, strict=True) if target is not None]
    if not late:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for user, target in late:
            realtime.merge_users(pipe, org_id, into=target, sources=[user], keep=keep)
        await pipe.execute()


def _kw(org_id: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"org_id": org_id, "records": records}
