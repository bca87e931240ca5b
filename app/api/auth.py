"""API-key -> org, cached in-process, with revocations visible on every replica within a second.

A cached key is trusted for `_TTL_HEALTHY_S` while this process's sync loop is reading the
Redis key epoch (bumped by every revocation, which clears the cache), and for only
`_TTL_DEGRADED_S` when it is not, so a revocation still lands within a second with Redis down.
If Postgres is unreachable, a key already known keeps working (reads keep serving).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from app import security
from app.errors import Forbidden, ServiceUnavailable, Unauthorized
from app.redis_keys import KEYS_EPOCH
from app.storage import orgs
from app.storage.db import SessionFactory
from app.storage.orgs import KeyOwner

log = logging.getLogger("lehnz.auth")

_TTL_HEALTHY_S = 60.0
_TTL_DEGRADED_S = 1.0
_NEGATIVE_TTL_S = 1.0  # unknown keys: spare the database a lookup per request, briefly
_MAX_ENTRIES = 100_000


@dataclass(slots=True)
class _Entry:
    owner: KeyOwner | None
    fetched_at: float


class KeyCache:
    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions
        self._entries: dict[str, _Entry] = {}
        self.epoch: bytes | None = None
        self.sync_healthy = False

    def clear(self) -> None:
        self._entries.clear()

    def on_epoch(self, epoch: bytes | None) -> None:
        """Called by the sync loop with the current Redis key epoch."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.clear()

    async def owner(self, key: str) -> KeyOwner | None:
        key_hash = security.hash_key(key)
        entry = self._entries.get(key_hash)
        now = time.monotonic()
        if entry is not None:
            ttl = _NEGATIVE_TTL_S if entry.owner is None else (
                _TTL_HEALTHY_S if self.sync_healthy else _TTL_DEGRADED_S
            )
            if now - entry.fetched_at < ttl:
                return entry.owner
        try:
            async with self._sessions() as session:
                owner = await orgs.find_key_owner(session, key_hash)
        except (SQLAlchemyError, OSError) as exc:
            if entry is not None and entry.owner is not None:
                log.warning("database unreachable for key lookup; using the cached key (%s)", type(exc).__name__)
                return entry.owner
            raise ServiceUnavailable() from exc
        if owner is not None and not security.keys_match(key, owner.key_hash):
            owner = None
        if len(self._entries) >= _MAX_ENTRIES:
            self._entries.clear()
        self._entries[key_hash] = _Entry(owner, now)
        return owner

    async def authenticate(self, key: str | None, *, required_type: str) -> KeyOwner:
        if not key:
            raise Unauthorized("Missing X-API-KEY header")
        owner = await self.owner(key.strip())
        if owner is None:
            raise Unauthorized("Invalid or revoked API key")
        if owner.key_type != required_type:
            expected = "a publishable (lehnz_pk_...)" if required_type == "publishable" else "a secret (lehnz_sk_...)"
            raise Forbidden(f"This endpoint requires {expected} key")
        return owner


async def announce_key_change(redis: Any) -> None:
    """Tell every api replica to drop its key cache (they poll the epoch several times a second).

    If Redis is unreachable the change is still in Postgres, and replicas whose sync loop
    cannot reach Redis only trust cached keys for a second, so it still lands within a second.
    """
    try:
        await redis.incr(KEYS_EPOCH)
    except (RedisError, OSError) as exc:
        log.warning("could not announce a key change via Redis (%s)", type(exc).__name__)
