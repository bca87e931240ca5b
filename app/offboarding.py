"""Deleting an organisation (offboarding a tenant): every trace of it, in every store.

First its keys are revoked and api replicas told to drop cached ones, so no new job is queued
for it; then Postgres (one transaction: the org row and, by ON DELETE CASCADE, everything it
owns); then Redis (its queued and parked jobs, real-time state, counters, version pointers)
and the model store. Redis and the model store are cleaned by key and path, so running it
again (by org id) after an interruption finishes the job.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis

from app.errors import NotFound
from app.key_epoch import announce_key_change
from app.model_store import ModelStore
from app.queue import Queue
from app.storage import orgs
from app.storage.counts import stored_counts
from app.storage.db import SessionFactory
from app.storage.redis_state.forget import forget_org


@dataclass(frozen=True)
class DeletedOrg:
    org_id: str
    slug: str | None  # None: no org row was left (an interrupted deletion, finished by id)
    items: int
    users: int
    events: int
    redis_keys: int  # keys removed (queued and parked jobs included)
    model_versions: bool  # whether the model store held any


async def delete_org(sessions: SessionFactory, redis: ArqRedis, store: ModelStore, org: str) -> DeletedOrg:
    """`org` is the slug, or the org id (which also finishes an interrupted deletion: the row is
    gone, its Redis keys and model files may not be). Raises NotFound for an unknown slug."""
    counts = {"items": 0, "users": 0, "events": 0}
    async with sessions() as session, session.begin():
        found = await orgs.lookup_org(session, org)
        as_id = _uuid(org)
        if found is None and as_id is None:
            raise NotFound("No such organisation")
        if found is not None:
            # First, in a transaction of its own: its keys stop working on every replica within a
            # second, so no new job is queued for it while its data is being deleted.
            await orgs.revoke_all_keys(session, found.id)
    await announce_key_change(redis)
    if found is not None:
        async with sessions() as session, session.begin():
            counts = await stored_counts(session, found.id)  # kept as rows are written (storage/counts.py)
            await orgs.delete_org(session, found.id)
        # Again now that its accounts are gone: a session checked between the first announcement
        # and this commit may have been cached as valid (app/api/auth.py).
        await announce_key_change(redis)
    org_id = str(found.id) if found is not None else str(as_id)
    slug = found.slug if found is not None else None
    removed = await forget_org(redis, org_id)
    # Its parked jobs hold its records and can never succeed now; served-log batches mix orgs,
    # so only its rows leave them.
    parked = await Queue(redis).rewrite_dead_letters(lambda entry: _without_org(entry, org_id))
    had_models = store.delete_org(org_id)
    return DeletedOrg(org_id, slug, counts["items"], counts["users"], counts["events"], removed + parked,
                      had_models)


def _without_org(entry: dict[str, Any], org_id: str) -> dict[str, Any] | None:
    kwargs = entry.get("kwargs") or {}
    if str(kwargs.get("org_id")) == org_id:
        return {}
    rows = kwargs.get("rows")
    if entry.get("function") == "persist_served" and isinstance(rows, list):
        left = [r for r in rows if r.get("org_id") != org_id]
        if len(left) != len(rows):
            return {**entry, "kwargs": {**kwargs, "rows": left}} if left else {}
    return None


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
