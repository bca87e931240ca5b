"""GDPR erasure: the user's profile, events (under every alias), aliases, real-time state, and
their id on the served-recommendation log."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from app.erasure_rule import before_erasure
from app.queue import Queue
from app.recommend import realtime
from app.storage import catalog, events, identity, orgs, served
from app.storage.redis_state import signals, tombstones
from workers.context import JobContext, worker_context
from workers.failures import handle_failure

log = logging.getLogger("lehnz.worker.erasure")


async def erase_user(ctx: JobContext, *, org_id: str, user_id: str, requested_at: float) -> int:
    shared = worker_context(ctx)
    redis = shared.redis
    org_uuid = uuid.UUID(org_id)
    try:
        async with shared.sessions() as session, session.begin():
            if not await orgs.exists(session, org_uuid):
                # The org was deleted (`lehnz org delete`) after this was queued: nothing is left
                # to erase, and writing its tombstones would leave keys of a deleted org behind.
                log.info("erasure for deleted org %s skipped", org_id)
                return 0
            canonical = await identity.resolve(session, org_uuid, user_id)
            ids = sorted({user_id, canonical, *await identity.aliases_of(session, org_uuid, canonical)})
            deleted = await events.delete_user_events(session, org_uuid, ids, erased_at=requested_at)
            await catalog.delete_users(session, org_uuid, ids)
            await served.forget_viewer(session, org_uuid, ids, served_until=datetime.fromtimestamp(requested_at, UTC))
            await identity.delete_aliases(session, org_uuid, canonical)
    except Exception as exc:  # noqa: BLE001 - retried or dead-lettered by handle_failure, never dropped
        await handle_failure(
            ctx, exc, function="erase_user",
            kwargs={"org_id": org_id, "user_id": user_id, "requested_at": requested_at}, kind="erasures", records=1,
        )
        return 0
    async with redis.pipeline(transaction=True) as pipe:
        realtime.activity_forgotten(pipe, org_id, ids)
        realtime.aliases_forgotten(pipe, org_id, ids)
        # Late records of these ids from before the request are dropped by the ingest job (app/erasure_rule.py).
        tombstones.erased(pipe, org_id, dict.fromkeys(ids, requested_at))
        # The trained model still holds the user: count the erasure as enough new data for the
        # scheduler to retrain at its next interval, whatever LEHNZ_TRAIN_MIN_NEW_EVENTS says.
        signals.count_new_data(pipe, org_id, max(1, deleted, shared.settings.train_min_new_events))
        await pipe.execute()
    try:
        erased = set(ids)
        scrubbed = await Queue(redis).rewrite_dead_letters(lambda e: _scrubbed(e, org_id, erased, requested_at))
    except Exception as exc:  # noqa: BLE001 - a replay still drops them (the tombstones are written)
        log.warning("could not scrub the dead-letter list for an erasure in org %s (%s)", org_id,
                    type(exc).__name__)
        scrubbed = 0
    log.info("erased user in org %s: %d events, %d ids, %d parked jobs scrubbed", org_id, deleted, len(ids),
             scrubbed)
    return deleted


def _scrubbed(entry: dict[str, Any], org_id: str, ids: set[str], requested_at: float) -> dict[str, Any] | None:
    """A parked job without the erased user's records from before the request (the rule of
    app/erasure_rule.py; served-log rows lose the user id instead): None if it has none, {} if
    nothing else is left of it."""
    kwargs = entry.get("kwargs") or {}
    if entry.get("function") == "persist_served":
        rows = kwargs.get("rows") or []
        kept = [
            {**r, "user_id": None}
            if r.get("org_id") == org_id and r.get("user_id") in ids and r.get("served_at", 0) <= requested_at
            else r
            for r in rows
        ]
        return {**entry, "kwargs": {**kwargs, "rows": kept}} if kept != rows else None
    records = kwargs.get("records")
    if kwargs.get("org_id") != org_id or not isinstance(records, list):
        return None
    happened = "created_at" if entry.get("function") == "ingest_users" else "occurred_at"
    left = [r for r in records if not (
        {r.get("user_id"), r.get("previous_user_id")} & ids
        and before_erasure(requested_at, received_at=r.get("received_at") or 0, happened_at=r.get(happened) or 0)
    )]
    if len(left) == len(records):
        return None
    return {**entry, "kwargs": {**kwargs, "records": left}} if left else {}
