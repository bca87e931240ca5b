"""One background loop per api process: notice revoked keys, new models and catalog changes.

Polling a handful of Redis keys every `sync_interval_s` (one pipelined round trip) is simpler
and sturdier than pub/sub: nothing is missed across a Redis restart or a reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from app.api.state import AppState
from app.key_epoch import read_epoch
from app.storage.redis_state import signals

log = logging.getLogger("lehnz.sync")


class SyncLoop:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self._was_healthy = True
        # Sizes of the sets of orgs with data and of deleted orgs, last seen together: None until
        # the first tick (the start-up preload covers the orgs that exist then).
        self._org_sets: tuple[int, int] | None = None

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
        # MULTI: the two set sizes are read at one instant (_follow_org_sets relies on it).
        async with self.state.redis.pipeline(transaction=True) as pipe:
            read_epoch(pipe)  # results[0]
            signals.read_org_set_sizes(pipe)  # results[1], results[2]: serving, deleted
            for org_id in org_ids:
                signals.read_versions(pipe, org_id)  # model version, catalog version
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
        """An org that got its first catalog or model starts loading now (its first request then
        does not wait for the load); deleted orgs leave the cache (their memory back at once).

        An org leaves the serving set only when it is deleted, and joins the deleted set in the
        same MULTI (app/storage/redis_state/signals.py, org_deleted); the deleted set never
        shrinks. So an org can have been added since the last look only if one of the two sizes
        changed (an org added while another was deleted leaves the serving set's size as it was,
        not the deleted set's): then both are read, in one MULTI, and every serving org this
        process lacks is adopted."""
        models = self.state.models
        assert models is not None
        first = self._org_sets is None
        if not first and (serving, deleted) == self._org_sets:
            return
        async with self.state.redis.pipeline(transaction=True) as pipe:
            signals.read_org_sets(pipe)
            serving_members, deleted_members = await asyncio.wait_for(pipe.execute(), timeout=2)
        models.forget(sorted(_decoded(deleted_members)))  # first: an org being deleted is never adopted
        if not first:  # at start-up the preload loads the orgs there are
            models.adopt(sorted(_decoded(serving_members)))
        # Only now, and the sizes of what was read: a failed read is retried on the next tick.
        self._org_sets = (len(serving_members), len(deleted_members))


def _decoded(members: set[Any]) -> set[str]:
    return {m.decode() if isinstance(m, bytes) else str(m) for m in members}
