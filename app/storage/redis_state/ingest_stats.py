"""What the ingest worker persisted and parked, per kind of record, for /metrics.

One hash (redis_keys.INGEST_STATS) of counters since it was created: field "<kind>:persisted"
or "<kind>:failed" (kind: items, users, events, served, erasures) -> records. The worker adds
to it in the pipeline that settles the job (persisted: workers/ingest.py; parked in the
dead-letter list: workers/failures.py), and the api copies it into its gauges at scrape time
(app/api/routes/health.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from app import redis_keys


def persisted(pipe: Any, kind: str, records: int) -> None:
    pipe.hincrby(redis_keys.INGEST_STATS, f"{kind}:persisted", records)


def failed(pipe: Any, kind: str, records: int) -> None:
    """Records of a job parked in the dead-letter list."""
    pipe.hincrby(redis_keys.INGEST_STATS, f"{kind}:failed", records)


def read(pipe: Any) -> None:
    """Queue the read of every counter on the caller's pipeline (one reply, for counts())."""
    pipe.hgetall(redis_keys.INGEST_STATS)


def counts(reply: dict[bytes, bytes]) -> Iterator[tuple[str, str, float]]:
    """(kind, "persisted" or "failed", records) for each counter in read()'s reply."""
    for field, value in reply.items():
        kind, outcome = field.decode().split(":", 1)
        yield kind, outcome, float(value)
