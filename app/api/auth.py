"""API-key -> org and session account -> org, cached in-process, with revocations visible on
every replica within a second.

A cached key (or session account) is trusted for `_TTL_HEALTHY_S` while this process's sync
loop is reading the Redis key epoch (bumped by every revocation and every org deletion, which
clears the cache), and for only `_TTL_DEGRADED_S` when it is not, so a revocation still lands
within a second with Redis down. Whatever deletes an account must call app.key_epoch.announce_key_change.
If Postgres is unreachable, a key or account already known keeps working (reads keep serving).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from app import security
from app.errors import Forbidden, ServiceUnavailable, Unauthorized
from app.storage import accounts, orgs
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
        self._accounts: dict[Hashable, _Entry] = {}  # (account id, org id) -> the org it may act for
        self.epoch: bytes | None = None
        self.sync_healthy = False

    def clear(self) -> None:
        self._entries.clear()
        self._accounts.clear()

    def on_epoch(self, epoch: bytes | None) -> None:
        """Called by the sync loop with the current Redis key epoch."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.clear()

    async def owner(self, key: str) -> KeyOwner | None:
        key_hash = security.hash_key(key)

        async def lookup() -> KeyOwner | None:
            async with self._sessions() as session:
                found = await orgs.find_key_owner(session, key_hash)
            return found if found is not None and security.keys_match(key, found.key_hash) else None

        return await self._cached(self._entries, key_hash, lookup)

    async def session_owner(self, claims: dict[str, Any]) -> KeyOwner:
        """The org a correctly signed session token acts for; 401 unless its claims name an
        account that still exists and owns that org (checked on every request, cached like keys)."""
        try:
            account_id, org_id = uuid.UUID(str(claims["sub"])), uuid.UUID(str(claims["org"]))
        except (KeyError, ValueError):
            raise Unauthorized("Invalid or expired session token") from None

        async def lookup() -> KeyOwner | None:
            async with self._sessions() as session:
                return await accounts.find_session_owner(session, account_id, org_id)

        owner = await self._cached(self._accounts, (account_id, org_id), lookup)
        if owner is None:
            raise Unauthorized("This session's account no longer exists; sign in again")
        return owner

    async def _cached(
        self, entries: dict[Any, _Entry], key: Hashable, lookup: Callable[[], Awaitable[KeyOwner | None]]
    ) -> KeyOwner | None:
        entry = entries.get(key)
        now = time.monotonic()
        if entry is not None:
            ttl = _NEGATIVE_TTL_S if entry.owner is None else (
                _TTL_HEALTHY_S if self.sync_healthy else _TTL_DEGRADED_S
            )
            if now - entry.fetched_at < ttl:
                return entry.owner
        try:
            owner = await lookup()
        except (SQLAlchemyError, OSError) as exc:
            if entry is not None and entry.owner is not None:
                log.warning("database unreachable for an auth lookup; using the cached answer (%s)",
                            type(exc).__name__)
                return entry.owner
            raise ServiceUnavailable() from exc
        if len(entries) >= _MAX_ENTRIES:
            entries.clear()
        entries[key] = _Entry(owner, now)
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
