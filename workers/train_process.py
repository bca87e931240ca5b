"""Runs inside the training child process: Postgres -> arrays -> OrgModels -> model store."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import numpy as np

from app.ml.interactions import CatalogSnapshot, InteractionLog
from app.ml.train import train_org_models
from app.model_store import ModelStore, new_version
from app.settings import Settings, train_params
from app.storage import training_data
from app.storage.training_data import RawTrainingData


def train_and_store(org_id: str, settings: Settings) -> dict[str, Any]:
    started = time.perf_counter()
    raw = asyncio.run(_load(settings, uuid.UUID(org_id)))
    loaded_s = time.perf_counter() - started
    log = interaction_log(raw, settings)
    catalog = catalog_snapshot(raw)
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
        return await training_data.load(conn, org_id)
    finally:
        await conn.close()


def plain_dsn(database_url: str) -> str:
    """SQLAlchemy's postgresql+asyncpg:// URL as the DSN asyncpg itself takes."""
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


def interaction_log(raw: RawTrainingData, settings: Settings) -> InteractionLog:
    """Events -> weighted, alias-resolved columns; inactive/deleted users left out."""
    rows = raw.events
    users = [raw.aliases.get(r[0], r[0]) for r in rows]
    keep = np.fromiter((u not in raw.hidden_users for u in users), dtype=bool, count=len(rows))
    names = [r[2] for r in rows]
    weights = [settings.event_weight(r[2], r[3]) for r in rows]
    log = InteractionLog.build(
        user_ids=users,
        item_ids=[r[1] for r in rows],
        event_names=names,
        weights=weights,
        timestamps=[r[4] for r in rows],
        order_ids=[r[5] for r in rows],
        session_ids=[r[6] for r in rows],
        prices=[np.nan if r[7] is None else r[7] for r in rows],
        quantities=[1.0 if r[8] is None else r[8] for r in rows],
    )
    if keep.all():
        return log
    return InteractionLog(**{name: getattr(log, name)[keep] for name in log.__dataclass_fields__})


def catalog_snapshot(raw: RawTrainingData) -> CatalogSnapshot:
    rows = raw.items
    return CatalogSnapshot.build(
        [r[0] for r in rows],
        item_types=[r[1] for r in rows],
        statuses=[r[2] for r in rows],
        attributes=training_data.attributes(rows, 3),
        created_at=[r[4] for r in rows],
    )
