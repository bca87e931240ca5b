"""The key epoch: how a key revocation, an account or an org deletion reaches every api replica.

Each replica's sync loop (app/api/sync.py) reads the epoch several times a second and drops its
key and account cache when it moves (app/api/auth.py). Whatever revokes a key or deletes an
account or org bumps it, from the api, the CLI or the offboarding job alike.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError

from app.redis_keys import KEYS_EPOCH

log = logging.getLogger("lehnz.keys")


async def announce_key_change(redis: Any) -> None:
    """Tell every api replica to drop its key cache.

    If Redis is unreachable the change is still in Postgres, and replicas whose sync loop
    cannot reach Redis only trust cached keys for a second, so it still lands within a second.
    """
    try:
        await redis.incr(KEYS_EPOCH)
    except (RedisError, OSError) as exc:
        log.warning("could not announce a key change via Redis (%s)", type(exc).__name__)


def read_epoch(pipe: Any) -> None:
    """Queue the read of the epoch on the caller's pipeline (the sync loop's tick): one reply,
    the epoch or None before the first change."""
    pipe.get(KEYS_EPOCH)
