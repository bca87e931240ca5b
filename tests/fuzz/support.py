"""Helpers shared by the fuzz tests."""

from __future__ import annotations

from typing import Any

import orjson

from app import redis_keys


async def parked_errors(redis: Any, org_id: str) -> list[str]:
    """Errors of the dead-lettered jobs that hold this org's data (ingest jobs, served-row batches).

    The dead-letter list is shared by every org of the test session; only this org's entries count.
    """
    errors = []
    for raw in await redis.lrange(redis_keys.DEAD_LETTER, 0, -1):
        parked = orjson.loads(raw)
        kwargs = parked.get("kwargs") or {}
        rows = kwargs.get("rows") or []
        if kwargs.get("org_id") == org_id or any(row.get("org_id") == org_id for row in rows):
            errors.append(parked["error"])
    return errors
