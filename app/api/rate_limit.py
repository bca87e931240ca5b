"""Rate limits in Redis, shared by every api replica: per org (all its keys) and per IP on /auth/*.

Limits are written in the syntax of `limits`/slowapi ("1000/15minutes") and counted in fixed
windows aligned to the epoch. The per-IP limit on /auth/* is slowapi's Limiter (fixed window,
in the same Redis): its storage calls are blocking, so they run in a thread, which costs nothing
at ten requests per quarter hour. The per-org limit is on every request and needs what slowapi
cannot express (the org is known only after the key is checked, leases across replicas), so
it is counted here in one non-blocking round trip (a Lua INCRBY+PEXPIRE).

When Redis is unreachable the org limit fails open (recommendations keep being served; the
outage is logged) while the auth limit fails closed (503): brute-force protection must not
disappear with Redis.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from dataclasses import dataclass

from fastapi import Request
from limits import RateLimitItem
from limits.errors import StorageError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from slowapi import Limiter

from app import metrics, redis_keys
from app.breaker import Breaker
from app.errors import RateLimited, ServiceUnavailable
from app.limit_syntax import parse_limit
from app.settings import Settings
from app.storage.orgs import KeyOwner

log = logging.getLogger("lehnz.ratelimit")

_CHECK_TIMEOUT_S = 0.25
# A login already spends ~100 ms hashing; a busy Redis must not turn it into a 503.
_AUTH_CHECK_TIMEOUT_S = 2.0
_OUTAGE_LOG_EVERY_S = 30.0

# KEYS[1] = counter of the current window; ARGV[1] = its lifetime in ms, ARGV[2] = how many
# requests to count. Returns the new count.
_HIT = """
local count = redis.call('INCRBY', KEYS[1], ARGV[2])
if count == tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return count
"""
# Large org limits are counted in leases: a replica reserves a few requests of the window at
# once and spends them locally, so most requests make no Redis call. A lease is at most 1% of
# the limit (and never more than _MAX_LEASE), so replicas can overshoot the shared limit by at
# most that much each; limits under 100 requests are counted exactly, one by one.
_MAX_LEASE = 20


@dataclass(frozen=True, slots=True)
class Window:
    limit: int
    count: int
    reset_s: int  # seconds until this window ends (not an epoch)

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.count)

    @property
    def exceeded(self) -> bool:
        return self.count > self.limit

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"ratelimit-limit", str(self.limit).encode()),
            (b"ratelimit-remaining", str(self.remaining).encode()),
            (b"ratelimit-reset", str(self.reset_s).encode()),
        ]


def limits_storage_uri(redis_url: str) -> str:
    """The `limits` library's name for our Redis URL (a unix socket is redis+unix:// there)."""
    if redis_url.startswith("unix://"):
        return "redis+unix://" + redis_url.removeprefix("unix://")
    return redis_url


@dataclass(slots=True)
class _Lease:
    """Requests of one window reserved in Redis by this process and not spent yet."""

    window_key: str
    limit: int
    counted: int  # the shared counter right after our last reservation
    unspent: int


class RateLimiter:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._hit = redis.register_script(_HIT)
        self.default_limit = parse_limit(settings.rate_limit)
        self.auth_limit = parse_limit(settings.auth_rate_limit)
        self._trusted = [ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies]
        self._last_outage_log = 0.0
        self._leases: dict[str, _Lease] = {}
        self._breaker = Breaker()
        self._auth = Limiter(
            key_func=self.client_ip,
            storage_uri=limits_storage_uri(settings.redis_url or ""),
            # A client of its own with short timeouts: a login waits at most this long for Redis.
            # (slowapi hints str values; they are the redis client's keyword arguments.)
            storage_options={
                "socket_timeout": _AUTH_CHECK_TIMEOUT_S,  # type: ignore[dict-item]
                "socket_connect_timeout": _AUTH_CHECK_TIMEOUT_S,  # type: ignore[dict-item]
            },
            strategy="fixed-window",
        )

    async def window(self, scope: str, key: str, item: RateLimitItem, *, leased: bool = False) -> Window:
        length_s = int(item.get_expiry())
        limit = int(item.amount)
        now = time.time()
        index = int(now // length_s)
        counter = redis_keys.rate_limit(scope, f"{key}:{length_s}:{index}")
        reset_s = max(1, math.ceil((index + 1) * length_s - now))
        lease = self._leases.get(key) if leased else None
        if lease is not None and lease.window_key == counter and lease.limit == limit:
            if lease.unspent > 0:
                lease.unspent -= 1
                return Window(limit=limit, count=lease.counted - lease.unspent, reset_s=reset_s)
            if lease.counted >= limit:  # the window is used up: no need to ask Redis again
                return Window(limit=limit, count=lease.counted + 1, reset_s=reset_s)
        size = min(_MAX_LEASE, limit // 100) if leased else 1
        size = max(1, size)
        async with asyncio.timeout(_CHECK_TIMEOUT_S):  # the client has no socket timeout of its own
            count = int(await self._hit(keys=[counter], args=[length_s * 1000 + 1000, size]))
        first = count - size + 1  # the number this request holds in the shared count
        if leased:
            usable = max(0, min(size, limit - first + 1))  # reserved requests still within the limit
            self._leases[key] = _Lease(counter, limit, count, max(0, usable - 1))
            if len(self._leases) > 100_000:
                self._leases.clear()
        return Window(limit=limit, count=first, reset_s=reset_s)

    async def hit_org(self, request: Request, owner: KeyOwner, settings: Settings) -> None:
        item = parse_limit(owner.rate_limit) if owner.rate_limit else self.default_limit
        if self._breaker.open:
            return  # Redis failed a moment ago: fail open without waiting for it again
        try:
            window = await self.window("org", str(owner.org_id), item, leased=True)
        except (RedisError, OSError, TimeoutError) as exc:
            self._breaker.failed()
            self._log_outage(exc)
            return  # fail open: reads keep serving; writes fail later with 503 on the enqueue
        request.state.rate_limit = window
        if window.exceeded:
            metrics.RATE_LIMITED.labels("org").inc()
            raise RateLimited(limit=window.limit, reset_s=window.reset_s)

    async def hit_ip(self, request: Request) -> None:
        # Asks Redis even while the org limit's breaker is open: a slow org check on a busy
        # host opens it, and sign-in must not fail for that; this check has a timeout of its own.
        ip = self.client_ip(request)
        try:
            window = await asyncio.to_thread(self._auth_window, ip)
        except (RedisError, StorageError, OSError, TimeoutError) as exc:
            self._breaker.failed()
            self._log_outage(exc)
            raise ServiceUnavailable() from exc  # fail closed: no unlimited password guessing
        request.state.rate_limit = window
        if window.exceeded:
            metrics.RATE_LIMITED.labels("ip").inc()
            raise RateLimited(limit=window.limit, reset_s=window.reset_s)

    def _auth_window(self, ip: str) -> Window:
        """One hit on slowapi's limiter for this IP, and its window (blocking: run in a thread)."""
        item, backend = self.auth_limit, self._auth.limiter
        allowed = backend.hit(item, "lehnz-auth-ip", ip)
        stats = backend.get_window_stats(item, "lehnz-auth-ip", ip)
        count = int(item.amount) - stats.remaining if allowed else int(item.amount) + 1
        return Window(limit=int(item.amount), count=count, reset_s=max(1, math.ceil(stats.reset_time - time.time())))

    def client_ip(self, request: Request) -> str:
        """The peer address, or, when the peer is a trusted proxy, the nearest untrusted hop of
        X-Forwarded-For (walking from the right, so a client cannot forge its way in)."""
        peer = request.client.host if request.client else "unknown"
        if not self._is_trusted(peer):
            return peer
        forwarded = request.headers.get("x-forwarded-for", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                return hop
        return hops[0] if hops else peer

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def _log_outage(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_outage_log > _OUTAGE_LOG_EVERY_S:
            self._last_outage_log = now
            log.warning("rate limiter cannot reach Redis (%s); org limits fail open", type(exc).__name__)
