"""GDPR erasure: the user's profile, events (under every alias), aliases, real-time state, and
their id on the served-recommendation log."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import delete, update

from app import redis_keys
from app.storage import events, identity
from app.storage.tables import Org, ServedRecommendation, User
from workers.failures import handle_failure

log = logging.getLogger("lehnz.worker.erasure")


async def erase_user(ctx: dict[str, Any], *, org_id: str, user_id: str, requested_at: float) -> int:
    redis = ctx["redis"]
    org_uuid = uuid.UUID(org_id)
    try:
        async with ctx["sessions"]() as session, session.begin():
            if await session.get(Org, org_uuid) is None:
                # The org was deleted (`lehnz org delete`) after this was queued: nothing is left
                # to erase, and writing its tombstones would leave keys of a deleted org behind.
                log.info("erasure for deleted org %s skipped", org_id)
                return 0
            canonical = await identity.resolve(session, org_uuid, user_id)
            ids = sorted({user_id, canonical, *await identity.aliases_of(session, org_uuid, canonical)})
            deleted = await events.delete_user_events(session, org_uuid, ids, received_before=requested_at)
            await session.execute(delete(User).where(User.org_id == org_uuid, User.user_id.in_(ids)))
            # What was recommended to them stays counted in analytics, no longer tied to the person.
            await session.execute(
                update(ServedRecommendation)
                .where(ServedRecommendation.org_id == org_uuid, ServedRecommendation.user_id.in_(ids))
                .values(user_id=None)
            )
            await identity.delete_aliases(session, org_uuid, canonical)
    except Exception as exc:  # noqa: BLE001 - retried or dead-lettered by handle_failure, never dropped
        await handle_failure(
            ctx, exc, function="erase_user",
            kwargs={"org_id": org_id, "user_id": user_id, "requested_at": requested_at}, kind="erasures", records=1,
        )
        return 0
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(*(redis_keys.recent(org_id, uid) for uid in ids))
        pipe.hdel(redis_keys.aliases(org_id), *ids)
        # Late events of these ids received before the request are dropped by the ingest job.
        pipe.hset(redis_keys.erased(org_id), mapping={uid: requested_at for uid in ids})
        # The trained model still holds the user: count the erasure as enough new data for the
        # scheduler to retrain at its next interval, whatever LEHNZ_TRAIN_MIN_NEW_EVENTS says.
        pipe.hincrby(redis_keys.NEW_DATA, org_id, max(1, deleted, ctx["settings"].train_min_new_events))
        await pipe.execute()
    log.info("erased user in org %s: %d events, %d ids", org_id, deleted, len(ids))
    return deleted
