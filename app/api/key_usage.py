"""When each key pair was last used, for the dashboard's Developer Access page.

Kept off the request path: a request only notes the time in this process's memory (a dict
write, at most once a minute per key pair), and a background loop writes the notes to Redis
every few seconds in one round trip. So "last used" is accurate to about a minute. The Redis
hash is per org (redis_keys.key_last_used), so deleting the org deletes it with its other keys;
a note taken before the delete and written after it must not bring the hash back, so the write
checks the deleted-orgs set in the same script (atomic, no window between check and write).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from redis.exceptions import RedisError

from app import redis_keys

log = logging.getLogger("lehnz.keys")

_NOTE_EVERY_S = 60.0
_FLUSH_EVERY_S = 5.0
_MAX_TRACKED = 100_000

# KEYS[1] = the deleted-orgs set, KEYS[2] = the org's last-used hash; ARGV = org id, pair id, time.
_WRITE_UNLESS_DELETED = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
end
"""


class KeyUsage:
    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._noted: dict[uuid.UUID, float] = {}  # pair -> when this process last noted it
        self._pending: dict[tuple[str, str], int] = {}  # (org, pair) -> unix time, not written yet
        self._write = redis.register_script(_WRITE_UNLESS_DELETED)

    def touch(self, org_id: uuid.UUID, pair_id: uuid.UUID) -> None:
        now = time.time()
        last = self._noted.get(pair_id)
        if last is not None and now - last < _NOTE_EVERY_S:
            return
        if len(self._noted) >= _MAX_TRACKED:
            self._noted.clear()
        self._noted[pair_id] = now
        self._pending[(str(org_id), str(pair_id))] = int(now)

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for (org_id, pair_id), at in pending.items():
                    keys = [redis_keys.DELETED_ORGS, redis_keys.key_last_used(org_id)]
                    await self._write(keys=keys, args=[org_id, pair_id, at], client=pipe)
                await asyncio.wait_for(pipe.execute(), timeout=2)
        except (RedisError, OSError, TimeoutError) as exc:
            # A lost note only makes "last used" older than it is; the next use notes it again.
            for _, pair_id in pending:
                self._noted.pop(uuid.UUID(pair_id), None)
            log.warning("could not record key usage in Redis (%s)", type(exc).__name__)

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=_FLUSH_EVERY_S)
            await self.flush()


async def last_used(redis: Any, org_id: uuid.UUID) -> dict[str, float]:
    """Key pair id -> unix time of its last recorded use."""
    raw = await redis.hgetall(redis_keys.key_last_used(str(org_id)))
    return {(k.decode() if isinstance(k, bytes) else str(k)): float(v) for k, v in raw.items()}
