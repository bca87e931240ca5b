"""A train's flags in Redis: the heartbeat of a train that runs, and the requests that wait
for the org's next train.

- The heartbeat (redis_keys.training, one key per org): set while a train of the org runs,
  with a TTL the worker keeps renewing (workers/training.py), so a worker that died mid-train
  leaves no flag behind. Status reports it (app/queue.py, is_training), and the scheduler
  frees the train job of an org whose flag lapsed (release_orphaned_trains).
- The model-search request (redis_keys.SEARCH_REQUESTED, org -> time asked): the org's next
  train runs the model search. A train takes the request when it starts and gives it back if
  it does not finish; the scheduler queues a train for an org whose request waits.
- The train-again request (redis_keys.TRAIN_AGAIN, org -> time asked): a train was asked for
  while one of the org ran (it may have read the org's data before the request); the
  scheduler queues one more, and a train takes the request when it starts.
"""

from __future__ import annotations

import time
from typing import Any

from app import redis_keys


async def beat(redis: Any, org_id: str, reason: str, *, ttl_s: int) -> None:
    """Set or renew the heartbeat; it lapses `ttl_s` seconds after the last beat."""
    await redis.set(redis_keys.training(org_id), reason, ex=ttl_s)


async def is_running(redis: Any, org_id: str) -> bool:
    return bool(await redis.exists(redis_keys.training(org_id)))


async def clear(redis: Any, org_id: str) -> None:
    """The train stopped (finished, failed, cancelled, or its org was deleted)."""
    await redis.delete(redis_keys.training(org_id))


def cleared(pipe: Any, org_id: str) -> None:
    """clear(), queued on the caller's pipeline (with the new model's signals)."""
    pipe.delete(redis_keys.training(org_id))


async def ask_for_search(redis: Any, org_id: str) -> None:
    """The org's next train runs the model search (also when a train is queued or running)."""
    await redis.hset(redis_keys.SEARCH_REQUESTED, org_id, time.time())


async def take_search_request(redis: Any, org_id: str) -> bool:
    """Whether a model search was asked for; the request is consumed (asked once, searched once)."""
    return bool(await redis.hdel(redis_keys.SEARCH_REQUESTED, org_id))


async def searches_requested(redis: Any) -> list[str]:
    """The orgs whose model-search request waits for a train."""
    return [_text(raw) for raw in await redis.hkeys(redis_keys.SEARCH_REQUESTED)]


async def ask_to_train_again(redis: Any, org_id: str) -> None:
    """A train was asked for while one of the org ran: one more follows it."""
    await redis.hset(redis_keys.TRAIN_AGAIN, org_id, time.time())


async def take_train_again(redis: Any, org_id: str) -> None:
    """A train starts: it covers the requests made before now."""
    await redis.hdel(redis_keys.TRAIN_AGAIN, org_id)


async def trains_asked_again(redis: Any) -> list[str]:
    """The orgs with a train asked for while one of theirs ran."""
    return [_text(raw) for raw in await redis.hkeys(redis_keys.TRAIN_AGAIN)]


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw
