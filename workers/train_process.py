"""Runs inside the training child process: Postgres -> arrays -> OrgModels -> model store."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from typing import Any

import asyncpg

from app.memory import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, peak_rss_mb, set_malloc_options
from app.ml.artifacts import OrgModels
from app.ml.interactions import CatalogSnapshot, InteractionLog, data_now
from app.ml.personalization import Candidate
from app.ml.selection import carried_over, previous_choice, search_reason
from app.ml.train import SearchPlan, train_org_models
from app.model_store import ModelStore, new_version
from app.settings import Settings, train_params
from app.storage import training_data
from app.storage.training_data import LoadCounts, TrainingData, TrainingWindow
from workers import train_memory


def train_and_store(
    org_id: str, settings: Settings, *, previous_quality: dict[str, Any] | None = None, search: bool = False
) -> dict[str, Any]:
    """One train of one org. `previous_quality`: what the last succeeded train recorded (its
    model search's findings); `search`: a search was asked for (POST /v1/models/train).
    Raises TrainingRefused, before anything big is allocated, when the train's estimated
    memory is above its budget (workers/train_memory.py)."""
    # Millions of short-lived objects (ids, rows) and no reference cycles worth collecting: the
    # cyclic GC would otherwise rescan them again and again. This process ends after one train.
    gc.disable()
    return_freed_memory()
    started = time.perf_counter()
    estimate: dict[str, float] = {}
    data = asyncio.run(_load(settings, uuid.UUID(org_id), estimate=estimate))
    loaded_s = time.perf_counter() - started
    loaded_peak_mb = peak_rss_mb()
    now = time.time()
    models, timings = train_models(data.log, data.catalog, settings, now=now, version=new_version(now),
                                   previous_quality=previous_quality, search=search)
    timings = {"load": loaded_s, **timings}
    models.extra["timings_s"] = timings
    models.extra["window"] = {**data.counts.as_dict(), "max_events": settings.train_max_events,
                              "max_age_days": settings.train_window_days}
    after = models.extra.get("memory_mb", {}).get("peak_rss_after", [])
    models.extra["memory_mb"] = {"estimated": round(estimate.get("mb", 0.0), 1), "peak_rss": peak_rss_mb(),
                                 "peak_rss_after": [["load", loaded_peak_mb], *after]}
    ModelStore(settings.models_path).save(org_id, models)
    return {
        "version": models.version,
        "trained_at": models.trained_at,
        "duration_ms": int((time.perf_counter() - started) * 1000),
        "items": models.n_items,
        "users": models.n_users,
        "interactions": models.n_interactions,
        "timings_s": timings,
        "quality": models.extra.get("quality"),
    }


def return_freed_memory() -> bool:
    """Keep every block from 1 MB up in a mapping of its own, so that freeing it returns it.

    glibc raises its mmap threshold each time a mapped block is freed (up to 32 MB): from then
    on the parts' many mid-sized arrays come from the heap, and once freed they mostly stay in
    the process. Setting the threshold turns that adjustment off. False where it is not glibc."""
    return set_malloc_options({M_MMAP_THRESHOLD: 1024 * 1024, M_TRIM_THRESHOLD: 4 * 1024 * 1024})


def train_models(
    log: InteractionLog,
    catalog: CatalogSnapshot,
    settings: Settings,
    *,
    now: float,
    version: str,
    previous_quality: dict[str, Any] | None = None,
    search: bool = False,
) -> tuple[OrgModels, dict[str, float]]:
    """The training run every path uses (the worker, `lehnz eval`, the benchmarks): learned
    models age events from the org's newest event (never the clock), and the model search runs
    when it is due (first train, data grown, or asked for), else the last winner is refitted."""
    params = train_params(settings, now=now, data_now=data_now(log.timestamps, now))
    reason = None
    if settings.model_search:
        reason = search_reason(
            previous_quality, interactions=len(log), n_items=len(catalog), params=params,
            growth=settings.model_search_growth, requested=search,
        )
    plan = SearchPlan(settings.model_search_users, settings.model_search_budget_s) if reason else None
    models, timings = train_org_models(log, catalog, params, version=version, search=plan,
                                       choice=previous_choice(previous_quality))
    quality = models.extra.get("quality")
    if quality is not None:
        quality["search_reason"] = reason
    else:
        quality = carried_over(previous_quality, Candidate.of(models.params))
    if quality is not None:
        models.extra["quality"] = quality
    return models, timings


async def _load(settings: Settings, org_id: uuid.UUID, *, estimate: dict[str, float] | None = None) -> TrainingData:
    """The org's training window, refused (TrainingRefused) if it would not fit the budget."""

    def within_budget(counts: LoadCounts) -> None:
        needed = train_memory.check(counts, settings)
        if estimate is not None:
            estimate["mb"] = needed

    conn = await asyncpg.connect(plain_dsn(settings.database_url or ""), timeout=10)
    try:
        return await training_data.load(
            conn, org_id, event_weights=settings.event_weights, family_weights=settings.family_weights,
            window=training_window(settings), check=within_budget,
        )
    finally:
        await conn.close()


def training_window(settings: Settings) -> TrainingWindow:
    return TrainingWindow(max_age_days=settings.train_window_days, max_events=settings.train_max_events)


def plain_dsn(database_url: str) -> str:
    """SQLAlchemy's postgresql+asyncpg:// URL as the DSN asyncpg itself takes."""
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
