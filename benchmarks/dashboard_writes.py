"""What the dashboard's counts and search index cost the writers, on the dashboard benchmark's database
(run by benchmarks/dashboard.py after the page timings; figures in docs/benchmarks.md, "Dashboard").

Migration 0004's triggers add every statement's rows to count rows in the writer's transaction, and
0005's trigram index is updated with every item written. Measured with the worker's own statements
(app/storage/events.insert_events, catalog.upsert_items), one transaction per batch of 1,000, on an
org of its own (deleted at the end), events stamped within the last hour (so every batch adds to the
same hour's count, the hottest row there is):

- one writer: batches with the triggers and without them (ALTER TABLE ... DISABLE TRIGGER USER),
  alternately; for items also with and without the search index (dropped, then built again);
- concurrent writers of one org (the worker runs jobs concurrently): events/s with and without;
- the same writers while another transaction holds one of the org's count rows for `--hold-s` seconds
  (a `lehnz import` holds one until it commits): with the triggers as shipped (SKIP LOCKED: nobody
  waits), and, for comparison, with one row per org that writers wait for (the function swapped for
  the length of that run, then put back).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

BATCH = 1000

# The same function with the SKIP LOCKED taken out: one row per org, writers queue on it.
_WAITING_ADDER = """
CREATE OR REPLACE FUNCTION org_counts_add(org uuid, d_items_active bigint, d_items_inactive bigint,
                                          d_items_deleted bigint, d_users bigint, d_events bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    target bigint;
BEGIN
    SELECT id INTO target FROM org_counts WHERE org_id = org ORDER BY id LIMIT 1 FOR UPDATE;
    IF target IS NOT NULL THEN
        UPDATE org_counts SET items_active = items_active + d_items_active,
                              items_inactive = items_inactive + d_items_inactive,
                              items_deleted = items_deleted + d_items_deleted,
                              users = users + d_users, events = events + d_events
        WHERE id = target;
    ELSIF EXISTS (SELECT FROM orgs WHERE id = org) THEN
        INSERT INTO org_counts (org_id, items_active, items_inactive, items_deleted, users, events)
        VALUES (org, d_items_active, d_items_inactive, d_items_deleted, d_users, d_events);
    END IF;
END $$
"""


def _events(n: int) -> list[dict[str, Any]]:
    now = time.time()
    return [
        {
            "event_id": str(uuid.uuid4()), "user_id": f"w{i % 500}", "event_family": "engagement",
            "event_name": "view", "item_id": f"i{i % 2000}", "occurred_at": now - (i % 3000), "received_at": now,
        }
        for i in range(n)
    ]


def _items(prefix: str, n: int) -> list[dict[str, Any]]:
    now = time.time()
    return [
        {
            "item_id": f"{prefix}-{i}", "item_type": "product", "status": "active", "created_at": None,
            "received_at": now, "attributes": {"title": f"adj{i % 50} noun{i % 300} {prefix} {i}", "price": 10},
        }
        for i in range(n)
    ]


def _ms(samples: list[float]) -> dict[str, float]:
    samples = sorted(samples)
    return {
        "p50_ms": round(statistics.median(samples) * 1000, 1),
        "p95_ms": round(samples[min(len(samples) - 1, int(0.95 * len(samples)))] * 1000, 1),
        "max_ms": round(samples[-1] * 1000, 1),
    }


async def run(engine: AsyncEngine, *, writers: int = 8, batches: int = 10, hold_s: float = 3.0,
              log: Callable[..., None] = print) -> dict[str, Any]:
    from app.storage import catalog, events, orgs
    from app.storage.base import driver_connection
    from app.storage.db import create_session_factory

    sessions = create_session_factory(engine)
    async with sessions() as session, session.begin():
        org_id = (await orgs.create_org(session, name="Writes", slug=f"writes-{uuid.uuid4().hex[:8]}",
                                        domain="commerce")).id

    Write = Callable[[Any, uuid.UUID, list[dict[str, Any]]], Awaitable[Any]]

    async def in_transaction(write: Write, records: list[dict[str, Any]]) -> float:
        """One batch as the worker writes it, in one transaction; its seconds."""
        started = time.perf_counter()
        async with sessions() as session, (await driver_connection(session)).transaction():
            await write(session, org_id, records)
        return time.perf_counter() - started

    async def admin(sql: str) -> None:
        async with engine.connect() as conn:
            await (await conn.execution_options(isolation_level="AUTOCOMMIT")).exec_driver_sql(sql)

    async def batch(kind: str, label: str) -> float:
        if kind == "events":
            return await in_transaction(events.insert_events, _events(BATCH))
        return await in_transaction(catalog.upsert_items, _items(f"{label}-{uuid.uuid4().hex[:8]}", BATCH))

    async def triggers(enabled: bool) -> None:
        for table in ("events", "items"):
            await admin(f"ALTER TABLE {table} {'ENABLE' if enabled else 'DISABLE'} TRIGGER USER")

    async def one_writer(kind: str) -> dict[str, Any]:
        """A batch with the triggers, then one without, alternately (the machine's load drifts)."""
        with_counts, without = [], []
        for _ in range(batches * 2):
            with_counts.append(await batch(kind, "with"))
            await triggers(False)
            try:
                without.append(await batch(kind, "without"))
            finally:
                await triggers(True)
        return {"with_counts": _ms(with_counts), "without_counts": _ms(without)}

    async def concurrent(holder_s: float | None = None) -> dict[str, Any]:
        """`writers` tasks, each inserting `batches` event batches; optionally while a transaction
        holds a count row of the org (it wrote items) for holder_s seconds."""
        latencies: list[float] = []

        async def writer() -> None:
            for _ in range(batches):
                latencies.append(await in_transaction(events.insert_events, _events(BATCH)))

        holding: asyncio.Task[Any] | None = None
        held = asyncio.Event()
        if holder_s is not None:
            async def hold() -> None:
                async with sessions() as session, (await driver_connection(session)).transaction():
                    await catalog.upsert_items(session, org_id, _items(f"held-{uuid.uuid4().hex[:6]}", 10))
                    held.set()
                    await asyncio.sleep(holder_s)  # the import's long transaction, still open

            holding = asyncio.create_task(hold())
            await held.wait()
        started = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(writers)))
        wall = time.perf_counter() - started
        if holding is not None:
            await holding
        return {"events_per_s": round(writers * batches * BATCH / wall), "wall_s": round(wall, 2), **_ms(latencies)}

    results: dict[str, Any] = {"batch": BATCH, "writers": writers, "batches_per_writer": batches}
    try:
        await batch("events", "warm")  # the org's count rows exist from here on
        results["one_writer_events"] = await one_writer("events")
        results["one_writer_items"] = await one_writer("items")  # new items: inserts into the search index
        results["concurrent_events"] = {"with_counts": await concurrent()}
        await triggers(False)
        try:
            results["concurrent_events"]["without_counts"] = await concurrent()
        finally:
            await triggers(True)
        results["concurrent_events_while_a_transaction_holds_a_count_row"] = {
            "hold_s": hold_s, "with_counts": await concurrent(hold_s)}
        async with engine.connect() as conn:
            shipped = (await conn.exec_driver_sql(
                "SELECT pg_get_functiondef('org_counts_add'::regproc)")).scalar_one()
        await admin(_WAITING_ADDER)
        try:
            results["concurrent_events_while_a_transaction_holds_a_count_row"]["one_row_per_org_for_comparison"] = (
                await concurrent(hold_s))
        finally:
            await admin(shipped)
        await triggers(False)
        try:
            # The search index's share: the same item batches without it (and without the counts).
            with_index = [await batch("items", "index") for _ in range(batches)]
            await admin("DROP INDEX ix_items_search")
            try:
                without_index = [await batch("items", "no-index") for _ in range(batches)]
            finally:
                started = time.perf_counter()
                await admin("CREATE INDEX ix_items_search ON items USING gin (item_search_trigrams(item_id, attributes))")
                results["search_index_rebuild_s"] = round(time.perf_counter() - started, 1)
            results["one_writer_items"]["without_counts_with_search_index"] = _ms(with_index)
            results["one_writer_items"]["without_counts_without_search_index"] = _ms(without_index)
        finally:
            await triggers(True)
    finally:
        # Its rows written without triggers are uncounted: the org goes, counts and all.
        async with sessions() as session, session.begin():
            await orgs.delete_org(session, org_id)
    log(f"writes: {results}")
    return results

