"""One background loop per api process: notice revoked keys, new models and catalog changes.

Polling a handful of Redis keys every `sync_interval_s` (one pipelined round trip) is simpler
and sturdier than pub/sub: nothing is missed across a Redis restart or a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from app import redis_keys
from app.api.state import AppState

log = logging.getLogger("lehnz.sync")


class SyncLoop:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self._was_healthy = True
        # Sizes of the sets of orgs with data and of deleted orgs, last seen: None until the
        # first tick (the start-up preload covers the orgs that exist then).
        self._serving_orgs: int | None = None
        self._deleted_orgs: int | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep the loop alive whatever Redis does
                self.state.keys.sync_healthy = False
                if self._was_healthy:
                    log.warning("sync loop cannot reach Redis (%s); caches degrade to short TTLs", type(exc).__name__)
                self._was_healthy = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=self.state.settings.sync_interval_s)

    async def tick(self) -> None:
        models = self.state.models
        org_ids = models.org_ids() if models is not None else []
        async with self.state.redis.pipeline(transaction=False) as pipe:
            pipe.get(redis_keys.KEYS_EPOCH)
            pipe.scard(redis_keys.SERVING_ORGS)
            pipe.scard(redis_keys.DELETED_ORGS)
            for org_id in org_ids:
                pipe.get(redis_keys.model_version(org_id))
                pipe.get(redis_keys.catalog_version(org_id))
            results = await asyncio.wait_for(pipe.execute(), timeout=2)
        self.state.keys.on_epoch(results[0])
        self.state.keys.sync_healthy = True
        if not self._was_healthy:
            log.info("sync loop reconnected to Redis")
        self._was_healthy = True
        if models is not None:
            # Deletions first: a deleted org's vanished version keys must not start an update.
            await self._follow_org_sets(serving=int(results[1]), deleted=int(results[2]))
            for i, org_id in enumerate(org_ids):
                model_version, catalog_version = results[3 + 2 * i], results[4 + 2 * i]
                models.notice(org_id, model_version=model_version, catalog_version=catalog_version)

    async def _follow_org_sets(self, *, serving: int, deleted: int) -> None:
        """When the set of orgs with data changed size, an org that got its first catalog or
        model starts loading now (its first request then does not wait for the load); when
        the set of deleted orgs did, they leave the cache (their memory back at once)."""
        models = self.state.models
        assert models is not None
        if self._serving_orgs is None:
            self._serving_orgs = serving
        if serving != self._serving_orgs:
            members = await self._members(redis_keys.SERVING_ORGS)
            self._serving_orgs = serving  # only now: a failed read is retried on the next tick
            models.adopt(sorted(members))
        if deleted != self._deleted_orgs:
            members = await self._members(redis_keys.DELETED_ORGS)
            self._deleted_orgs = deleted
            models.forget(sorted(members))

    async def _members(self, key: str) -> set[str]:
        members = await asyncio.wait_for(self.state.redis.smembers(key), timeout=2)
        return {m.decode() if isinstance(m, bytes) else str(m) for m in members}
