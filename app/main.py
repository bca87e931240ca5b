"""create_app(): the lifespan opens the database, Redis, the model cache; routers are mounted."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from app.api import docs_page, handlers, openapi
from app.api.auth import KeyCache
from app.api.key_usage import KeyUsage
from app.api.middleware import CORS_ALLOWED_HEADERS, PublishableCors, RequestContextMiddleware, TrailingSlash
from app.api.rate_limit import RateLimiter
from app.api.routes import (
    analytics,
    auth,
    browse,
    health,
    ingest,
    keys,
    models,
    org,
    recommend,
    sessions,
    strategies,
    users,
)
from app.api.state import AppState
from app.api.sync import SyncLoop
from app.dashboard import routes as dashboard
from app.memory import collect_less_often, keep_freed_memory
from app.model_store import ModelStore
from app.queue import IngestBatcher, Queue, create_redis
from app.recommend.model_cache import ModelCache
from app.recommend.served_log import ServedLog
from app.settings import Settings, get_settings
from app.storage.db import create_engine, create_session_factory
from app.storage.redis_state import signals

log = logging.getLogger("lehnz.api")

# The browser-facing endpoints (publishable key): the only ones with CORS headers.
PUBLISHABLE_PATHS = frozenset({"/v1/ingest/events/ingest", "/v1/recommend"})

DESCRIPTION = """Self-hosted, wire-compatible re-implementation of the Lehnz recommendations API.

Every response uses the envelope `{success, message, data, error}`. Authenticate with
`X-API-KEY` (publishable `lehnz_pk_...` for events and recommend; secret `lehnz_sk_...` for
everything else)."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    if not settings.database_url or not settings.redis_url:
        raise RuntimeError(
            "create_app needs LEHNZ_DATABASE_URL and LEHNZ_REDIS_URL; `lehnz serve` starts embedded servers "
            "and sets them"
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.resolved_jwt_secret()  # made at start (if not configured), not at the first login
        keep_freed_memory()  # catalog-sized temporaries per request: reuse them, do not re-fault them
        collect_less_often()  # big ingest batches: far fewer GC passes over the heap
        engine = create_engine(settings.database_url or "")
        sessions = create_session_factory(engine)
        redis = create_redis(settings.redis_url or "")
        deadline_redis = create_redis(settings.redis_url or "", socket_timeout=None)
        state = AppState(
            settings=settings,
            engine=engine,
            sessions=sessions,
            redis=redis,
            deadline_redis=deadline_redis,
            queue=Queue(redis),
            keys=KeyCache(sessions),
        )
        state.models = ModelCache(sessions, ModelStore(settings.models_path), max_orgs=settings.model_cache_orgs,
                                  catalog_version=functools.partial(signals.catalog_version, redis))
        state.served_log = ServedLog(state.queue)
        state.limiter = RateLimiter(deadline_redis, settings)
        state.batcher = IngestBatcher(state.queue, max_records=settings.max_batch)
        state.key_usage = KeyUsage(redis)
        app.state.lehnz = state
        stopping = asyncio.Event()
        tasks = [
            asyncio.create_task(SyncLoop(state).run(stopping), name="lehnz-sync"),
            asyncio.create_task(state.served_log.run(stopping), name="lehnz-served-log"),
            asyncio.create_task(_preload(state), name="lehnz-preload"),
            asyncio.create_task(state.key_usage.run(stopping), name="lehnz-key-usage"),
        ]
        try:
            yield
        finally:
            stopping.set()
            await _stop(tasks)
            await state.models.close()
            # Bounded: a stuck connection must not keep the process from exiting.
            for step in (state.served_log.flush(), redis.aclose(), deadline_redis.aclose(), engine.dispose()):
                try:
                    await asyncio.wait_for(step, timeout=3)
                except Exception as exc:  # noqa: BLE001 - shutting down; report and go on
                    log.warning("shutdown step did not finish cleanly: %s", type(exc).__name__)

    app = FastAPI(
        title="lehnz-server",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # /docs is app/api/docs_page.py: its assets served from the package, no CDN
        redoc_url=None,
        redirect_slashes=False,  # never a redirect built from the Host header: see TrailingSlash
    )
    handlers.install(app)
    openapi.install(app)
    docs_page.install(app)
    # Requests are matched against routers in this order: the two hot browser-facing routes first.
    app.include_router(recommend.router)
    app.include_router(ingest.router)
    app.include_router(health.router)
    app.include_router(users.router)
    app.include_router(models.router)
    app.include_router(auth.router)
    app.include_router(keys.router)
    app.include_router(analytics.router)
    # The dashboard's reads and sign-out, then the dashboard itself (docs/dashboard.md).
    app.include_router(org.router)
    app.include_router(browse.router)
    app.include_router(strategies.router)
    app.include_router(sessions.router)
    dashboard.install(app)
    # mypy cannot match a constructor taking **options to starlette's ParamSpec middleware factory.
    app.add_middleware(
        PublishableCors,  # type: ignore[arg-type]
        paths=PUBLISHABLE_PATHS,
        allow_origins=settings.cors_origins,
        allow_methods=["POST"],
        allow_headers=list(CORS_ALLOWED_HEADERS),
        expose_headers=["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "Retry-After", "X-Request-ID"],
        max_age=600,
    )
    # Outside the CORS layer, which looks at the path: `/v1/recommend/` is `/v1/recommend` for it too.
    app.add_middleware(TrailingSlash, routes=app.router.routes)
    app.add_middleware(
        RequestContextMiddleware, max_body_bytes=settings.max_body_bytes, access_log_enabled=settings.access_log
    )
    return app


async def _preload(state: AppState) -> None:
    """Load every org's models and catalog in the background, so first requests find them ready."""
    from app.storage import orgs

    try:
        async with state.sessions() as session:
            org_ids = [str(org_id) for org_id in await orgs.list_org_ids(session)]
    except Exception:  # noqa: BLE001 - the database may be down at start; orgs then load on first use
        log.warning("could not list organisations to preload models; they load on first request")
        return
    assert state.models is not None
    await state.models.preload(org_ids)


async def _stop(tasks: list[asyncio.Task[None]], *, timeout_s: float = 3.0) -> None:
    """Cancel background loops and wait for them, boundedly.

    The loops also watch the `stopping` event: a cancellation can be lost inside a library
    (asyncio.wait_for in Python 3.11 may swallow one that races a completing call), and a
    lost one must not keep the process from shutting down.
    """
    for task in tasks:
        task.cancel()
    done, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.warning("background task %s ended with %r", task.get_name(), task.exception())
    for task in pending:
        log.warning("background task %s did not stop in %.0f s", task.get_name(), timeout_s)
