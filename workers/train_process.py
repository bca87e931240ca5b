"""Runs inside the training child process: Postgres -> arrays -> OrgModels -> model store."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from typing import Any

import asyncpg

from app.ml.interactions import CatalogSnapshot, InteractionLog
from app.ml.train import train_org_models
from app.model_store import ModelStore, new_version
from app.settings import Settings, train_params
from app.storage import training_data
from app.storage.training_data import RawTrainingData


def train_and_store(org_id: str, settings: Settings) -> dict[str, Any]:
    # Millions of short-lived objects (ids, rows) and no reference cycles worth collecting: the
    # cyclic GC would otherwise rescan them again and again. This process ends after one train.
    gc.disable()
    started = time.perf_counter()
    raw = asyncio.run(_load(settings, uuid.UUID(org_id)))
    log = interaction_log(raw)
    catalog = catalog_snapshot(raw)
    loaded_s = time.perf_counter() - started
    now = time.time()
    models, timings = train_org_models(log, catalog, train_params(settings, now=now), version=new_version(now))
    timings = {"load": loaded_s, **timings}
    models.extra["timings_s"] = timings
    ModelStore(settings.models_path).save(org_id, models)
    return {
        "version": models.version,
        "trained_at": models.trained_at,
        "duration_ms": int((time.perf_counter() - started) * 1000),
        "items": models.n_items,
        "users": models.n_users,
        "interactions": models.n_interactions,
        "timings_s": timings,
    }


async def _load(settings: Settings, org_id: uuid.UUID) -> RawTrainingData:
    conn = await asyncpg.connect(plain_dsn(settings.database_url or ""), timeout=10)
    try:
        return await training_data.load(
            conn, org_id, event_weights=settings.event_weights, family_weights=settings.family_weights
        )
    finally:
        await conn.close()


def plain_dsn(database_url: str) -> str:
    """SQLAlchemy's postgresql+asyncpg:// URL as the DSN asyncpg itself takes."""
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


def interaction_log(raw: RawTrainingData) -> InteractionLog:
    """Weighted, alias-resolved columns (resolved by the query) as the trainer's input."""
    events = raw.events
    return InteractionLog.build(
        user_ids=events["users"],
        item_ids=events["items"],
        event_names=events["names"],
        weights=events["weights"],
        timestamps=events["timestamps"],
        order_ids=events["orders"],
        session_ids=events["sessions"],
        prices=events["prices"],
        quantities=events["quantities"],
        is_exposure=events["exposures"],
    )


def catalog_snapshot(raw: RawTrainingData) -> CatalogSnapshot:
    rows = raw.items
    return CatalogSnapshot.build(
        [r[0] for r in rows],
        item_types=[r[1] for r in rows],
        statuses=[r[2] for r in rows],
        attributes=training_data.attributes(rows, 3),
        created_at=[r[4] for r in rows],
    )
