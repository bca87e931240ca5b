"""An org's signals in Redis: what the api replicas and the training scheduler watch.

- The catalog version pointer (a counter) and the model version pointer (the version served):
  api replicas poll them (app/api/sync.py) and reload what changed.
- The serving set (orgs with a catalog or a model: api replicas load them) and the deleted set
  (api replicas drop them; late writers check it).
- The new-data counter: events and item changes persisted since the org's last train. The
  scheduler retrains an org when it reaches LEHNZ_TRAIN_MIN_NEW_EVENTS; a train consumes what
  it saw, so data persisted while it ran still counts for the next one.
- The last train's figures (duration, time, model-search quality) that /metrics shows.

Writers queue their commands on the caller's pipeline, so each stays in the caller's
transaction with its other writes. The api reads the pointers and the two sets' sizes in one
MULTI per tick (app/api/sync.py: read_org_set_sizes, read_versions) and /metrics the train
figures (app/api/routes/health.py: read_train_figures): those readers queue their commands on
the caller's pipeline too, each a fixed number of replies, in the order documented.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from app import redis_keys


def data_persisted(pipe: Any, org_id: str, *, catalog_changed: bool, new_data: int) -> None:
    """After records were committed to Postgres (the ingest worker, `lehnz import`): replicas
    refresh the catalog when it changed, and the scheduler counts the new data."""
    if catalog_changed:
        pipe.incr(redis_keys.catalog_version(org_id))
        pipe.sadd(redis_keys.SERVING_ORGS, org_id)
    if new_data:
        count_new_data(pipe, org_id, new_data)


def count_new_data(pipe: Any, org_id: str, amount: int) -> None:
    """Something the model must learn that is not a new record (an erasure)."""
    pipe.hincrby(redis_keys.NEW_DATA, org_id, amount)


async def new_data_by_org(redis: Any) -> dict[str, int]:
    """Every org's new-data counter (orgs never counted are absent)."""
    raw = await redis.hgetall(redis_keys.NEW_DATA)
    return {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()}


async def new_data_of(redis: Any, org_id: str) -> int:
    return int(await redis.hget(redis_keys.NEW_DATA, org_id) or 0)


def model_trained(
    pipe: Any, org_id: str, *, version: str, consumed_new_data: int, duration_s: float,
    quality: dict[str, Any] | None,
) -> None:
    """A new version is stored: point replicas at it, consume the new data it was trained on,
    and keep its figures for /metrics."""
    pipe.set(redis_keys.model_version(org_id), version)
    pipe.sadd(redis_keys.SERVING_ORGS, org_id)
    pipe.hincrby(redis_keys.NEW_DATA, org_id, -consumed_new_data)
    pipe.hset(redis_keys.TRAIN_STATS, mapping={
        f"{org_id}:duration_s": duration_s,
        f"{org_id}:last_success": time.time(),
        **_quality_stats(org_id, quality),
    })


def _quality_stats(org_id: str, quality: dict[str, Any] | None) -> dict[str, float]:
    """The model search's headline numbers, as TRAIN_STATS fields."""
    chosen = (quality or {}).get("chosen") or {}
    stats = {}
    if chosen.get("ndcg_at_10") is not None:
        stats[f"{org_id}:ndcg_at_10"] = float(chosen["ndcg_at_10"])
    ratio = (quality or {}).get("personalized_vs_popular")
    if ratio is not None:
        stats[f"{org_id}:vs_popular"] = float(ratio)
    return stats


def read_train_figures(pipe: Any) -> None:
    """Queue the read of every org's train figures (one reply, for train_figures())."""
    pipe.hgetall(redis_keys.TRAIN_STATS)


def train_figures(reply: dict[bytes, bytes]) -> Iterator[tuple[str, str, bytes]]:
    """(org id, figure (one of TRAIN_STATS_FIELDS), its value as stored) for each field of
    read_train_figures()'s reply."""
    for field, value in reply.items():
        org, what = field.decode().rsplit(":", 1)
        yield org, what, value


async def catalog_version(redis: Any, org_id: str) -> bytes | None:
    """The org's catalog version pointer (None where not set), read on its own."""
    value: bytes | None = await redis.get(redis_keys.catalog_version(org_id))
    return value


def read_versions(pipe: Any, org_id: str) -> None:
    """Queue the reads of the org's two version pointers: two replies, the model version and
    the catalog version (None where not set)."""
    pipe.get(redis_keys.model_version(org_id))
    pipe.get(redis_keys.catalog_version(org_id))


def read_org_set_sizes(pipe: Any) -> None:
    """Queue the reads of the sizes of the serving and the deleted sets: two replies, in that order."""
    pipe.scard(redis_keys.SERVING_ORGS)
    pipe.scard(redis_keys.DELETED_ORGS)


def read_org_sets(pipe: Any) -> None:
    """Queue the reads of the serving and the deleted sets' members: two replies, in that order."""
    pipe.smembers(redis_keys.SERVING_ORGS)
    pipe.smembers(redis_keys.DELETED_ORGS)


async def is_deleted(redis: Any, org_id: str) -> bool:
    return bool(await redis.sismember(redis_keys.DELETED_ORGS, org_id))


def org_deleted(pipe: Any, org_id: str) -> None:
    """The org is gone: replicas stop loading it and drop it from memory; its counters go."""
    pipe.srem(redis_keys.SERVING_ORGS, org_id)
    pipe.sadd(redis_keys.DELETED_ORGS, org_id)
    pipe.hdel(redis_keys.NEW_DATA, org_id)
    pipe.hdel(redis_keys.TRAIN_STATS, *(f"{org_id}:{what}" for what in redis_keys.TRAIN_STATS_FIELDS))
