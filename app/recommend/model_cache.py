"""Per-org serving snapshots (trained models + live catalog), swapped by one reference assignment.

A request reads `self._snapshots[org_id]` once and works on that immutable snapshot, so it
never sees a half-loaded model. New model versions and catalog changes are noticed by the
api's sync loop (app/api/sync.py) and applied in background tasks; the heavy parts (np.load,
JSON parsing of a big catalog) run in a thread so the event loop keeps answering.

Orgs that get a catalog or a model after the process started are loaded in the background as
soon as the sync loop sees them appear (`adopt`), while the cache has room. A request waits
only when it comes first for an org this process has not loaded yet: one evicted from a full
cache, or one whose very first catalog or model is still loading; every later update happens
behind the current snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from app import metrics
from app.memory import give_back_freed_memory
from app.ml.artifacts import OrgModels
from app.model_store import ModelStore
from app.recommend.catalog import COLUMNS_AT_LOAD, Catalog, CatalogTable
from app.storage import catalog as catalog_storage
from app.storage.catalog_chunks import catalog_chunks
from app.storage.db import SessionFactory

log = logging.getLogger("lehnz.models")

# org id -> the catalog version Redis holds for it (None: no catalog change recorded yet).
CatalogVersion = Callable[[str], Awaitable[bytes | None]]

# Re-read catalog rows updated a little before the newest one seen: a transaction that began
# earlier but committed later still gets applied (re-applying a row is harmless).
_CATALOG_OVERLAP_S = 5.0
# updated_at is a transaction's start time, so a transaction longer than the overlap could
# still slip past the incremental refresh: a full reload now and then bounds that. Hourly, and
# spread over time per org, so a process never reloads every catalog at once.
_CATALOG_FULL_RELOAD_S = 3600.0


@dataclass(frozen=True, eq=False)
class OrgSnapshot:
    org_id: str
    models: OrgModels | None
    catalog: Catalog
    catalog_version: bytes | None
    catalog_loaded_at: float  # last full catalog load (unix s)
    # Values derived from this snapshot by the strategies (RankContext.memo); fresh per snapshot.
    memo: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    @property
    def model_version(self) -> str | None:
        return None if self.models is None else self.models.version


class ModelCache:
    def __init__(self, sessions: SessionFactory, store: ModelStore, *, max_orgs: int,
                 catalog_version: CatalogVersion | None = None) -> None:
        """`catalog_version`: reads an org's catalog version (Redis), so that a cold load knows
        the version of the items it read and its first update does not read them again."""
        self._sessions = sessions
        self._store = store
        self._max_orgs = max_orgs
        self._catalog_version = catalog_version
        self._snapshots: OrderedDict[str, OrgSnapshot] = OrderedDict()
        self._cold: dict[str, asyncio.Task[OrgSnapshot]] = {}
        self._updating: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._deleted: set[str] = set()  # orgs deleted while this process runs: never installed again

    # --- requests ------------------------------------------------------------------------
    async def get(self, org_id: str) -> OrgSnapshot:
        snapshot = self._snapshots.get(org_id)
        if snapshot is not None:
            self._snapshots.move_to_end(org_id)
            return snapshot
        task = self._cold.get(org_id) or self._start_cold_load(org_id)
        return await asyncio.shield(task)

    def peek(self, org_id: str) -> OrgSnapshot | None:
        return self._snapshots.get(org_id)

    def loading(self, org_id: str) -> bool:
        """Whether a load or an update of this org is in flight."""
        return org_id in self._cold or org_id in self._updating

    # --- sync loop -----------------------------------------------------------------------
    def org_ids(self) -> list[str]:
        return list(self._snapshots)

    def notice(self, org_id: str, *, model_version: bytes | None, catalog_version: bytes | None) -> None:
        """Called every sync tick with the versions Redis holds; starts a background update if stale."""
        snapshot = self._snapshots.get(org_id)
        if snapshot is None or org_id in self._updating:
            return
        wanted_model = model_version.decode() if model_version else None
        model_stale = wanted_model is not None and wanted_model != snapshot.model_version
        catalog_stale = catalog_version != snapshot.catalog_version or self._reload_due(snapshot)
        if model_stale or catalog_stale:
            task = asyncio.create_task(
                self._update(org_id, model=model_stale, catalog_version=catalog_version), name=f"update-{org_id}"
            )
            self._updating[org_id] = task
            task.add_done_callback(lambda _: self._updating.pop(org_id, None))

    def adopt(self, org_ids: list[str]) -> None:
        """Start loading, in the background, the orgs among these that this process has not
        loaded, while the cache has room (a new org never evicts one that is serving)."""
        for org_id in org_ids:
            if len(self._snapshots) + len(self._cold) >= self._max_orgs:
                return
            if org_id in self._snapshots or org_id in self._cold or org_id in self._deleted:
                continue
            self._start_cold_load(org_id).add_done_callback(_log_failed_load)

    def forget(self, org_ids: list[str]) -> None:
        """Drop these orgs' snapshots (deleted organisations): memory back, nothing to serve.
        A load or update still running for one is cancelled, and would not be installed."""
        for org_id in org_ids:
            self._deleted.add(org_id)
            for task in (self._cold.get(org_id), self._updating.get(org_id)):
                if task is not None:
                    task.cancel()
            snapshot = self._snapshots.pop(org_id, None)
            if snapshot is not None:
                metrics.forget_model(org_id, snapshot.model_version)
                log.info("org %s was deleted; dropped from the model cache", org_id)

    async def preload(self, org_ids: list[str]) -> None:
        for org_id in org_ids[: self._max_orgs]:
            try:
                await self.get(org_id)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # the preload itself is being stopped
                # else its load was cancelled: the org was deleted meanwhile; on with the others
            except Exception:
                log.exception("preloading org %s failed", org_id)

    @staticmethod
    def _reload_due(snapshot: OrgSnapshot) -> bool:
        # A fixed per-org offset within the period (from its id) spreads the reloads.
        jitter = (int(snapshot.org_id.replace("-", "")[:8], 16) % 1000) / 1000 * _CATALOG_FULL_RELOAD_S
        return time.time() - snapshot.catalog_loaded_at > _CATALOG_FULL_RELOAD_S + jitter

    async def close(self, *, timeout_s: float = 3.0) -> None:
        """Stop background loads (process shutdown) and let them give their connections back."""
        tasks = [*self._cold.values(), *self._updating.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    def status(self) -> dict[str, Any]:
        return {
            "loaded_orgs": len(self._snapshots),
            "loading": len(self._cold) + len(self._updating),
            "versions": {org: s.model_version for org, s in self._snapshots.items()},
        }

    # --- loading -------------------------------------------------------------------------
    def _lock(self, org_id: str) -> asyncio.Lock:
        return self._locks.setdefault(org_id, asyncio.Lock())

    def _start_cold_load(self, org_id: str) -> asyncio.Task[OrgSnapshot]:
        task = asyncio.create_task(self._cold_load(org_id), name=f"load-{org_id}")
        self._cold[org_id] = task
        return task

    async def _cold_load(self, org_id: str) -> OrgSnapshot:
        try:
            async with self._lock(org_id):
                models = await asyncio.to_thread(self._load_models, org_id)
                version = await self._version_before_reading(org_id)
                catalog = await self._full_catalog(org_id, order=models.item_ids if models is not None else None)
                catalog = await asyncio.to_thread(catalog.with_columns, COLUMNS_AT_LOAD)
                snapshot = OrgSnapshot(org_id, models, catalog, version, time.time())
                self._install(snapshot)
                await asyncio.to_thread(give_back_freed_memory)  # the load's temporaries
                return snapshot
        finally:
            self._cold.pop(org_id, None)

    async def _update(self, org_id: str, *, model: bool, catalog_version: bytes | None) -> None:
        try:
            async with self._lock(org_id):
                if await self._updated(org_id, model=model, catalog_version=catalog_version):
                    # After _updated returned: none of its locals keeps the replaced snapshot alive.
                    await asyncio.to_thread(give_back_freed_memory)
        except Exception:
            log.exception("updating org %s failed; still serving the previous snapshot", org_id)

    async def _updated(self, org_id: str, *, model: bool, catalog_version: bytes | None) -> bool:
        """Install the org's new snapshot; whether its models or catalog were replaced."""
        current = self._snapshots.get(org_id)
        if current is None:
            return False
        snapshot = current
        if self._reload_due(current):
            order = current.models.item_ids if current.models is not None else None
            catalog = await self._full_catalog(org_id, order=order)
            # The filter columns requests used keep being ready (built here, not in a request).
            catalog = await asyncio.to_thread(catalog.with_columns, current.catalog.column_keys)
            snapshot = replace(snapshot, catalog=catalog, catalog_loaded_at=time.time())
        if model:
            models = await asyncio.to_thread(self._load_models, org_id)
            if models is not None and models.version != current.model_version:
                # The catalog this update has (reloaded just above, when due), in the new model's order.
                catalog = await asyncio.to_thread(snapshot.catalog.realign, models.item_ids)
                snapshot = replace(snapshot, models=models, catalog=catalog)
                log.info("org %s now serves model %s", org_id, models.version)
        catalog = snapshot.catalog
        if catalog_version != current.catalog_version:
            # Items changed since this snapshot's catalog was read. Not on a new model alone: the
            # overlap would re-read every item a bulk import wrote within its few seconds (a
            # million rows decoded and re-applied on every swap).
            rows = await self._catalog_rows(org_id, since=catalog.watermark - _CATALOG_OVERLAP_S)
            catalog = await asyncio.to_thread(catalog.apply, rows) if rows else catalog
        self._install(replace(snapshot, catalog=catalog, catalog_version=catalog_version))
        return snapshot.models is not current.models or catalog is not current.catalog

    def _install(self, snapshot: OrgSnapshot) -> None:
        if snapshot.org_id in self._deleted:
            return
        previous = self._snapshots.get(snapshot.org_id)
        if previous is not None and previous.model_version != snapshot.model_version:
            metrics.forget_model(snapshot.org_id, previous.model_version)
        self._snapshots[snapshot.org_id] = snapshot  # the swap: one assignment
        self._snapshots.move_to_end(snapshot.org_id)
        if snapshot.models is not None:
            metrics.MODEL_LOADED.labels(snapshot.org_id, snapshot.models.version).set(snapshot.models.trained_at)
        while len(self._snapshots) > self._max_orgs:
            evicted, old = self._snapshots.popitem(last=False)
            metrics.forget_model(evicted, old.model_version)
            log.info("evicted org %s from the model cache", evicted)

    def _load_models(self, org_id: str) -> OrgModels | None:
        # The store's LATEST is the truth (a shared volume in compose); Redis only says "look again".
        models = self._store.load_latest(org_id)
        if models is not None:
            models.warm()
        return models

    async def _version_before_reading(self, org_id: str) -> bytes | None:
        """The org's catalog version, read before its items are: a change committed after it
        moves the version again, so the first update reads only what is newer. None (unknown:
        the first update re-reads the last few seconds' items, as after any change) without a
        reader or when Redis does not answer."""
        if self._catalog_version is None:
            return None
        try:
            return await self._catalog_version(org_id)
        except Exception as exc:  # noqa: BLE001 - the load goes on; its first update re-reads
            log.warning("could not read org %s's catalog version (%s)", org_id, type(exc).__name__)
            return None

    async def _full_catalog(self, org_id: str, *, order: Any) -> Catalog:
        """The org's whole items table, folded into compact columns a chunk at a time (off the
        event loop), then ordered with the model's items first."""
        table = CatalogTable()
        async with self._sessions() as session:
            async for rows in catalog_chunks(session, uuid.UUID(org_id)):
                await asyncio.to_thread(table.add, rows)
        return await asyncio.to_thread(Catalog.of_table, table, order=order)

    async def _catalog_rows(self, org_id: str, *, since: float | None) -> list[Any]:
        async with self._sessions() as session:
            rows = await catalog_storage.load_catalog_rows(session, uuid.UUID(org_id), changed_since=since)
        return [tuple(r) for r in rows]


def _log_failed_load(task: asyncio.Task[OrgSnapshot]) -> None:
    """A background load nobody awaits: its failure is logged (the org loads on first request)."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("background load of a new org failed (%s); it loads on its first request",
                    type(task.exception()).__name__)
