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
        # Size of the set of orgs with data, last seen: None until the first tick (the start-up
        # preload covers the orgs that exist then).
        self._serving_orgs: int | None = None

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
            for i, org_id in enumerate(org_ids):
                model_version, catalog_version = results[2 + 2 * i], results[3 + 2 * i]
                models.notice(org_id, model_version=model_version, catalog_version=catalog_version)
            await self._adopt_new_orgs(int(results[1]))

    async def _adopt_new_orgs(self, serving: int) -> None:
        """An org that got its first catalog or model since the last tick starts loading now, so
        its first request does not wait for the load (the set only grows: a change of size is
        a new org)."""
        if self._serving_orgs is None:
            self._serving_orgs = serving
        if serving == self._serving_orgs or self.state.models is None:
            return
        members = await asyncio.wait_for(self.state.redis.smembers(redis_keys.SERVING_ORGS), timeout=2)
        self._serving_orgs = serving  # only now: a failed read is retried on the next tick
        self.state.models.adopt(sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members))
