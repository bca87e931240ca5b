"""/healthz (process up), /readyz (database, Redis, models), /metrics (Prometheus)."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.responses import PlainTextResponse, Response

from app import metrics
from app.api.deps import State
from app.api.envelope import failure, ok
from app.errors import Unauthorized, field_error
from app.queue import read_depths
from app.schemas.envelope import ErrorEnvelope
from app.storage.redis_state import ingest_stats, signals

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> Any:
    return ok({"status": "ok"}, message="ok")


async def _check(coro: Any) -> str:
    try:
        await asyncio.wait_for(coro, timeout=2)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported by name
        return f"unavailable: {type(exc).__name__}"
    return "ok"


@router.get(
    "/readyz",
    summary="Database, Redis and model cache status; 503 when not ready (per-org model versions "
    "only with the metrics token)",
    responses={503: {"model": ErrorEnvelope, "description": "Database or Redis unreachable; each listed in error"}},
)
async def readyz(request: Request, state: State) -> Any:
    async def database() -> None:
        async with state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    db_status, redis_status = await asyncio.gather(_check(database()), _check(state.redis.ping()))
    models = state.models.status() if state.models is not None else {"loaded_orgs": 0, "loading": 0}
    if not _holds_metrics_token(request, state):
        # Anyone who can reach a probe's port may ask it: counts only, no organisation ids.
        models = {key: value for key, value in models.items() if key in ("loaded_orgs", "loading")}
    checks = {"database": db_status, "redis": redis_status, "models": models}
    ready = db_status == "ok" and redis_status == "ok"
    if ready:
        return ok(checks, message="ready")
    # Recommendations keep being served from memory while a dependency is down; ingest is 503.
    down = [field_error(name, status) for name, status in (("database", db_status), ("redis", redis_status))
            if status != "ok"]
    return failure(503, "not ready: " + ", ".join(e["field"] for e in down), error=down)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    include_in_schema=True,
    # Prometheus text exposition, not JSON: documented as such so clients and fuzzers agree.
    response_class=PlainTextResponse,
    responses={401: {"model": ErrorEnvelope, "description": "LEHNZ_METRICS_TOKEN is set and not presented"}},
)
async def prometheus_metrics(request: Request, state: State) -> Response:
    # Series carry org ids; where /metrics is reachable from outside, a token keeps them private.
    if state.settings.metrics_token and not _holds_metrics_token(request, state):
        raise Unauthorized("GET /metrics requires Authorization: Bearer <LEHNZ_METRICS_TOKEN>")
    await _collect_shared(state)
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)


def _holds_metrics_token(request: Request, state: State) -> bool:
    """The request carries `Authorization: Bearer <LEHNZ_METRICS_TOKEN>` (False when none is set)."""
    token = state.settings.metrics_token
    return bool(token) and hmac.compare_digest(
        request.headers.get("authorization", "").encode(), f"Bearer {token}".encode()
    )


async def _collect_shared(state: State) -> None:
    """Series owned by workers live in Redis; copy them into this process's registry at scrape time."""
    try:
        async with state.redis.pipeline(transaction=False) as pipe:
            read_depths(pipe)
            ingest_stats.read(pipe)
            signals.read_train_figures(pipe)
            ingest_q, train_q, dead, ingest_counts, train_figures = await asyncio.wait_for(pipe.execute(), 2)
    except Exception:  # noqa: BLE001 - Redis down: scrape what this process knows
        return
    metrics.QUEUE_DEPTH.labels("ingest").set(ingest_q)
    metrics.QUEUE_DEPTH.labels("train").set(train_q)
    metrics.QUEUE_DEPTH.labels("dead-letter").set(dead)
    for kind, outcome, records in ingest_stats.counts(ingest_counts):
        gauge = metrics.INGEST_PERSISTED if outcome == "persisted" else metrics.INGEST_FAILED
        gauge.labels(kind).set(records)
    for org, what, value in signals.train_figures(train_figures):
        stat_gauge = metrics.TRAIN_STATS_GAUGES.get(what)
        if stat_gauge is not None:
            stat_gauge.labels(org).set(float(value))
