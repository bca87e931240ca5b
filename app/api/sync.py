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
                model_version, catalog_version = results[1 + 2 * i], results[2 + 2 * i]
                models.notice(org_id, model_version=model_version, catalog_version=catalog_version)
