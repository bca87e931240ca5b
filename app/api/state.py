"""What the api process holds for its lifetime (built by main.py's lifespan)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.auth import KeyCache
from app.breaker import Breaker
from app.queue import IngestBatcher, Queue
from app.settings import Settings
from app.storage.db import SessionFactory

if TYPE_CHECKING:
    from app.api.key_usage import KeyUsage
    from app.api.rate_limit import RateLimiter
    from app.recommend.model_cache import ModelCache
    from app.recommend.served_log import ServedLog


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessions: SessionFactory
    redis: ArqRedis
    # The same Redis without a socket timeout, for calls on the request path that each bound
    # their own wait (recommend's user state, rate-limit checks): see queue.create_redis.
    deadline_redis: ArqRedis
    queue: Queue
    keys: KeyCache
    models: ModelCache | None = None
    served_log: ServedLog | None = None
    limiter: RateLimiter | None = None
    batcher: IngestBatcher | None = None
    key_usage: KeyUsage | None = None  # "last used" of each key pair, for the dashboard
    background: list[object] = field(default_factory=list)
    # Open for a moment after a failed real-time read: recommend then answers without it at once
    # instead of every request waiting out the timeout while Redis stalls (app/breaker.py).
    realtime_breaker: Breaker = field(default_factory=Breaker)
