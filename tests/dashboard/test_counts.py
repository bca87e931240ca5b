"""The counts the database keeps as rows are written (migration 0004, app/storage/counts.py): equal
to counting the rows after every path that writes them, kept without writers of one org waiting
for each other, and backfilled by the migration for the rows already there."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from app.storage import catalog, counts, events
from app.storage.base import driver_connection
from app.storage.counts import OrgCounts, floor_hour
from tests.dashboard.counting import reference_outcomes, transaction
from tests.factories import OrgKeys, create_org, event, item, user

ITEMS, USERS, EVENTS = "/v1/ingest/items/upsert", "/v1/ingest/users/upsert", "/v1/ingest/events/ingest"
_HOUR_SQL = "date_bin('1 hour', occurred_at, timestamptz '2000-01-01 00:00:00+00')"


async def _counted(conn: Any, org_id: uuid.UUID) -> tuple[OrgCounts, dict[datetime, int]]:
    """What counting the org's rows gives: its counts and its events per hour."""
    by_status = dict(await conn.fetch("SELECT status, count(*) FROM items WHERE org_id = $1 GROUP BY 1", org_id))
    org = OrgCounts(
        items_active=by_status.get("active", 0),
        items_inactive=by_status.get("inactive", 0),
        items_deleted=by_status.get("deleted", 0),
        users=await conn.fetchval("SELECT count(*) FROM users WHERE org_id = $1", org_id),
        events=await conn.fetchval("SELECT count(*) FROM events WHERE org_id = $1", org_id),
    )
    hours = await conn.fetch(f"SELECT {_HOUR_SQL}, count(*) FROM events WHERE org_id = $1 GROUP BY 1", org_id)
    return org, {row[0]: row[1] for row in hours}


async def _kept(conn: Any, session: Any, org_id: uuid.UUID) -> tuple[OrgCounts, dict[datetime, int]]:
    hours = await conn.fetch(
        "SELECT hour, sum(events) FROM hourly_event_counts WHERE org_id = $1 GROUP BY 1 HAVING sum(events) <> 0",
        org_id,
    )
    return await counts.org_counts(session, org_id), {row[0]: int(row[1]) for row in hours}


async def assert_counts_match(db: Any, org_id: str) -> OrgCounts:
    org = uuid.UUID(org_id)
    async with db() as session:
        conn = await driver_connection(session)
        counted, kept = await _counted(conn, org), await _kept(conn, session, org)
        assert kept == counted
        if counted[1]:  # and the overview's read over whole hours agrees (its last, partial hour is
            # read from the events up to `until`: checked where the test knows the events' minutes)
            first, last = min(counted[1]), max(counted[1])
            assert await counts.events_per_hour(session, org, since=first, until=last + timedelta(hours=1)) == (
                counted[1]
            )
    return counted[0]


async def test_the_counts_follow_every_path_that_writes_rows(
    client: Any, db: Any, drain: Any, settings: Any, redis: Any, tmp_path: Path
) -> None:
    from app.bulk_import.staging import run_import
    from app.model_store import ModelStore
    from app.offboarding import delete_org

    org, other = await create_org(db, name="counted"), await create_org(db, name="counted too")
    assert await assert_counts_match(db, org.org_id) == OrgCounts()

    async def ingest(path: str, records: list[dict[str, Any]], keys: OrgKeys = org) -> None:
        headers = keys.pk if path == EVENTS else keys.sk
        assert (await client.post(path, json=records, headers=headers)).status_code == 202
        await drain()

    # The worker: inserts, then updates that change the status (or not).
    await ingest(ITEMS, [item("a"), item("b"), item("c", status="inactive"), item("d", status="deleted")])
    assert await assert_counts_match(db, org.org_id) == OrgCounts(2, 1, 1, 0, 0)
    await ingest(ITEMS, [item("a", status="inactive"), item("b", attributes={"title": "B"}), item("e")])
    assert await assert_counts_match(db, org.org_id) == OrgCounts(2, 2, 1, 0, 0)
    await ingest(USERS, [user("u1"), user("u2"), user("u1", attributes={"plan": "gold"})])
    now = datetime.now(UTC)
    stamps = [now - timedelta(days=2, minutes=5), now - timedelta(hours=3), now - timedelta(hours=3, minutes=1), now]
    repeated = str(uuid.uuid4())
    batch = [event("u1", "view", "a", timestamp=t.isoformat()) for t in stamps]
    batch += [event("u2", "view", "b", event_id=repeated), event("u2", "click", "b", event_id=repeated)]
    batch.append(event("u2", "view", "e", timestamp=(now + timedelta(hours=2)).isoformat()))  # a client ahead
    await ingest(EVENTS, batch)
    await ingest(EVENTS, [event("u2", "view", "b", event_id=repeated)])  # a retry stores nothing
    assert await assert_counts_match(db, org.org_id) == OrgCounts(2, 2, 1, 2, 6)
    async with db() as session:  # the overview's hours end now: the event stamped later is not in them
        hours = await counts.events_per_hour(session, uuid.UUID(org.org_id), since=floor_hour(now) - timedelta(
            hours=5), until=now + timedelta(seconds=1))
        assert sum(hours.values()) == 4

    # Erasure deletes the user's profile and events.
    assert (await client.delete("/v1/users/u1", headers=org.sk)).status_code == 202
    await drain()
    assert await assert_counts_match(db, org.org_id) == OrgCounts(2, 2, 1, 1, 2)

    # `lehnz import`: COPY into staging tables, then set-based merges, in one transaction.
    files = {
        "items": [item("a"), item("f", status="inactive"), *(item(f"bulk-{n}") for n in range(30))],
        "users": [user("u3"), user("u2", attributes={"plan": "silver"})],
        "events": [event("u3", "view", f"bulk-{n}", timestamp=stamps[n % 4].isoformat()) for n in range(40)],
    }
    paths = {}
    for kind, records in files.items():
        paths[kind] = tmp_path / f"{kind}.jsonl"
        paths[kind].write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    await run_import(settings, org=org.slug, **paths)
    assert await assert_counts_match(db, org.org_id) == OrgCounts(33, 2, 1, 2, 42)

    # A COPY straight into the table (what the benchmarks' loaders do).
    async with db() as session, session.begin():
        conn = await driver_connection(session)
        rows = [
            (uuid.UUID(org.org_id), uuid.uuid4(), "u9", "engagement", "view", "e", stamps[n % 4], stamps[n % 4])
            for n in range(7)
        ]
        columns = ["org_id", "event_id", "user_id", "event_family", "event_name", "item_id", "occurred_at",
                   "received_at"]
        await conn.copy_records_to_table("events", records=rows, columns=columns)
    assert await assert_counts_match(db, org.org_id) == OrgCounts(33, 2, 1, 2, 49)

    # Deleting an org (ON DELETE CASCADE) takes its counts along and leaves the others' alone.
    await ingest(ITEMS, [item("x"), item("y", status="inactive")], other)
    await ingest(EVENTS, [event("v", "view", "x")], other)
    deleted = await delete_org(db, redis, ModelStore(settings.models_path), other.slug)
    assert (deleted.items, deleted.users, deleted.events) == (2, 0, 1)  # the report reads the counts
    async with db() as session:
        conn = await driver_connection(session)
        for table in ("org_counts", "hourly_event_counts"):
            assert await conn.fetchval(f"SELECT count(*) FROM {table} WHERE org_id = $1", uuid.UUID(other.org_id)) == 0
    assert await assert_counts_match(db, org.org_id) == OrgCounts(33, 2, 1, 2, 49)


async def test_writers_of_one_org_never_wait_for_each_other_on_a_count(db: Any) -> None:
    """A long transaction (an import) holds one of the org's count rows until it commits; the
    worker's writes of that org meanwhile add to another row instead of waiting."""
    org_keys = await create_org(db, name="busy")
    org = uuid.UUID(org_keys.org_id)
    record = {"item_type": "product", "status": "active", "attributes": {}, "created_at": None, "received_at": 1.0}
    async with transaction(db) as session:  # the org's first count row
        await catalog.upsert_items(session, org, [{**record, "item_id": "first"}])
    async with transaction(db) as holding:
        await catalog.upsert_items(holding, org, [{**record, "item_id": "held"}])

        async def meanwhile() -> None:
            async with transaction(db) as session:
                conn = await driver_connection(session)
                await conn.execute("SET LOCAL lock_timeout = '5s'")  # waiting on a lock fails the test
                await catalog.upsert_items(session, org, [{**record, "item_id": "other"}])
                await catalog.upsert_users(session, org, [{"user_id": "u", "status": "active", "attributes": {},
                                                            "created_at": 1.0, "received_at": 1.0}])
                await events.insert_events(session, org, [{
                    "event_id": str(uuid.uuid4()), "user_id": "u", "event_family": "engagement",
                    "event_name": "view", "item_id": "other", "occurred_at": 1.0, "received_at": 1.0,
                }])

        await asyncio.wait_for(meanwhile(), timeout=30)
    # Both committed: two rows (one held by each writer), and the sums are the counts.
    async with db() as session:
        conn = await driver_connection(session)
        assert await conn.fetchval("SELECT count(*) FROM org_counts WHERE org_id = $1", org) == 2
    assert await assert_counts_match(db, org_keys.org_id) == OrgCounts(3, 0, 0, 1, 1)
    # Later writers reuse the rows there are.
    async with transaction(db) as session:
        await catalog.upsert_items(session, org, [{**record, "item_id": "later"}])
    async with db() as session:
        conn = await driver_connection(session)
        assert await conn.fetchval("SELECT count(*) FROM org_counts WHERE org_id = $1", org) == 2
    assert await assert_counts_match(db, org_keys.org_id) == OrgCounts(4, 0, 0, 1, 1)


async def test_the_migration_counts_the_rows_already_there(settings: Any) -> None:
    """A database at 0003 with data, upgraded: the counts equal counting its rows, and analytics
    read from them equals joining its served log to its events."""
    from alembic import command
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from app.storage import analytics
    from app.storage.db import create_engine, create_session_factory
    from app.storage.migrate import alembic_config

    server = make_url(settings.database_url or "")
    name = f"lehnz_backfill_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server.render_as_string(hide_password=False), pool_size=1)
    async with admin.connect() as conn:
        await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url, pool_size=1)
    try:
        await asyncio.to_thread(command.upgrade, alembic_config(url), "0003")
        org, empty = uuid.uuid4(), uuid.uuid4()
        now = datetime.now(UTC)
        served_ids = [uuid.uuid4() for _ in range(4)]
        async with engine.begin() as conn:
            for org_id, slug in ((org, "backfilled"), (empty, "empty")):
                await conn.execute(text("INSERT INTO orgs (id, slug, name) VALUES (:id, :slug, :slug)"),
                                   {"id": org_id, "slug": slug})
            for n, status in enumerate(["active", "active", "inactive", "deleted"]):
                await conn.execute(text("INSERT INTO items (org_id, item_id, item_type, status) "
                                        "VALUES (:org, :id, 'product', :status)"),
                                   {"org": org, "id": f"i{n}", "status": status})
            await conn.execute(text("INSERT INTO users (org_id, user_id, status, created_at) "
                                    "VALUES (:org, 'u', 'active', now())"), {"org": org})
            for n, served_id in enumerate(served_ids):
                await conn.execute(text(
                    "INSERT INTO served_recommendations (org_id, recommendation_id, strategy, mode, item_ids, "
                    "served_at) VALUES (:org, :rid, :strategy, 'behavioral', '{i0}', :at)"),
                    {"org": org, "rid": served_id, "strategy": ["popular", "similar"][n % 2],
                     "at": now - timedelta(hours=5 * n)})
            outcomes = [
                ("click", "engagement", str(served_ids[0]), None),
                ("purchase", "conversion", str(served_ids[1]), '{"price": 12.5, "quantity": 2}'),
                ("impression", "exposure", str(served_ids[2]), None),
                ("click", "engagement", str(uuid.uuid4()), None),  # names nothing served (yet)
                ("click", "engagement", "not-a-recommendation", None),
                ("view", "engagement", None, None),
            ]
            for n, (event_name, family, rid, context) in enumerate(outcomes):
                await conn.execute(text(
                    "INSERT INTO events (org_id, event_id, user_id, event_family, event_name, item_id, "
                    "recommendation_id, context, occurred_at, received_at) VALUES (:org, :id, 'u', :family, "
                    ":name, 'i0', :rid, CAST(:context AS jsonb), :at, :at)"),
                    {"org": org, "id": uuid.uuid4(), "family": family, "name": event_name, "rid": rid,
                     "context": context, "at": now - timedelta(hours=n)})

        await asyncio.to_thread(command.upgrade, alembic_config(url), "head")

        sessions = create_session_factory(engine)
        assert await assert_counts_match(sessions, str(org)) == OrgCounts(2, 1, 1, 1, 6)
        async with sessions() as session:
            assert await counts.org_counts(session, empty) == OrgCounts()
            conn = await driver_connection(session)
            assert await conn.fetchval("SELECT count(*) FROM unattributed_events") == 1
            since, until = now - timedelta(days=1, minutes=7), now + timedelta(minutes=1)
            kept = await analytics.recommendation_outcomes(session, org, since=since, until=until)
            assert kept == await reference_outcomes(conn, org, since, until)
            assert sum(row["served"] for row in kept) == 4 and sum(row["revenue"] for row in kept) == 25.0
    finally:
        await engine.dispose()
        async with admin.connect() as conn:
            await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(
                text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()
