"""The preload: a dataset straight into the items and events tables with asyncpg COPY.

This bypasses the api and the worker on purpose (1M interactions through the public api would
measure the ingest path, which has its own benchmark). The rows are what the worker would have
written: one event row per interaction with a fresh event_id, items with their attributes.
The same COPY, timed, is the floor of the worker's persist rate (floors.copy_floor).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from benchmarks.speed.synthetic import EVENT_TYPES, Dataset

ITEM_COLUMNS = ["org_id", "item_id", "item_type", "status", "attributes", "created_at", "updated_at", "received_at"]
EVENT_COLUMNS = [
    "org_id", "event_id", "user_id", "event_family", "event_name", "item_id", "previous_user_id",
    "recommendation_id", "context", "occurred_at", "received_at",
]


def plain_dsn(database_url: str) -> str:
    """SQLAlchemy's postgresql+asyncpg:// URL as the DSN asyncpg takes."""
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def item_rows(org_id: uuid.UUID, ds: Dataset) -> Iterator[tuple[Any, ...]]:
    received = datetime.now(UTC)
    for i, item_id in enumerate(ds.item_ids):
        created = _utc(float(ds.item_created_at[i]))
        yield (org_id, item_id, "product", "active", orjson.dumps(ds.item_attributes[i]).decode(), created,
               received, received)


def event_rows(org_id: uuid.UUID, ds: Dataset, rows: range) -> Iterator[tuple[Any, ...]]:
    received = datetime.now(UTC)
    names = EVENT_TYPES
    for r in rows:
        name, family = names[int(ds.ev_type[r])]
        context = ds.context(r)
        yield (
            org_id, uuid.uuid4(), ds.user_ids[int(ds.ev_user[r])], family, name, ds.item_ids[int(ds.ev_item[r])],
            None, None, None if context is None else orjson.dumps(context).decode(), _utc(float(ds.ev_ts[r])),
            received,
        )


def wire_event_rows(org_id: uuid.UUID, events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """COPY rows for events in their wire shape (the ingest benchmark's bodies), with fresh ids."""
    received = datetime.now(UTC)
    out = []
    for e in events:
        context = e.get("context")
        occurred = datetime.fromisoformat(e["timestamp"]) if e.get("timestamp") else received
        out.append((
            org_id, uuid.uuid4(), e["user_id"], e["event_family"], e["event_name"], e.get("item_id"),
            e.get("previous_user_id"), e.get("recommendation_id"),
            None if context is None else orjson.dumps(context).decode(), occurred, received,
        ))
    return out


async def copy_dataset(database_url: str, org_id: str, ds: Dataset, *, chunk: int = 100_000) -> dict[str, float]:
    """COPY the items, then the events in chunks; returns seconds and rows/s of each."""
    org = uuid.UUID(org_id)
    conn = await asyncpg.connect(plain_dsn(database_url), timeout=30)
    try:
        started = time.perf_counter()
        await conn.copy_records_to_table("items", records=list(item_rows(org, ds)), columns=ITEM_COLUMNS)
        items_s = time.perf_counter() - started
        started = time.perf_counter()
        copy_s = 0.0
        for begin in range(0, ds.n_events, chunk):
            records = list(event_rows(org, ds, range(begin, min(begin + chunk, ds.n_events))))
            copy_started = time.perf_counter()
            await conn.copy_records_to_table("events", records=records, columns=EVENT_COLUMNS)
            copy_s += time.perf_counter() - copy_started
        events_s = time.perf_counter() - started
        await conn.execute("ANALYZE items; ANALYZE events;")
    finally:
        await conn.close()
    return {
        "items_s": items_s,
        "events_s": events_s,
        "events_copy_s": copy_s,
        "events_copy_per_s": ds.n_events / copy_s if copy_s else 0.0,
    }


async def copy_event_rows(database_url: str, rows: list[tuple[Any, ...]], *, chunk: int = 100_000) -> float:
    """COPY prepared event rows; returns the seconds spent inside COPY."""
    conn = await asyncpg.connect(plain_dsn(database_url), timeout=30)
    try:
        spent = 0.0
        for begin in range(0, len(rows), chunk):
            started = time.perf_counter()
            await conn.copy_records_to_table("events", records=rows[begin: begin + chunk], columns=EVENT_COLUMNS)
            spent += time.perf_counter() - started
        return spent
    finally:
        await conn.close()


async def count_events(database_url: str, org_id: str) -> int:
    conn = await asyncpg.connect(plain_dsn(database_url), timeout=30)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events WHERE org_id = $1", uuid.UUID(org_id)))
    finally:
        await conn.close()
