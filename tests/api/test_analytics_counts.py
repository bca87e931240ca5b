"""GET /v1/analytics/recommendations reads counts the database keeps as rows are written (migration
0004). Whatever the range and whatever happened to the rows (an event before its recommendation,
the two written at once, erasure, retention), it answers exactly what joining every served row of
the range to the events naming it answers: the query it replaced, kept here as the reference."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from app.storage import analytics, events, served
from app.storage.base import driver_connection
from tests.dashboard.counting import reference_outcomes, transaction
from tests.factories import create_org, event, item

EVENTS = "/v1/ingest/events/ingest"

async def _serve(db: Any, org_id: str, strategy: str, at: datetime, rid: str | None = None) -> str:
    """A served row as the worker writes it (app/storage/served.py), served at `at`."""
    rid = rid or str(uuid.uuid4())
    async with transaction(db) as session:
        await served.insert_served(session, [{
            "org_id": org_id, "recommendation_id": rid, "strategy": strategy, "mode": "behavioral",
            "user_id": "shopper", "context_item_id": None, "item_ids": ["a"], "model_version": None,
            "served_at": at.timestamp(),
        }])
    return rid


async def _assert_as_the_reference(db: Any, org_id: str, ranges: list[tuple[datetime, datetime]]) -> None:
    org = uuid.UUID(org_id)
    async with db() as session:
        conn = await driver_connection(session)
        for since, until in ranges:
            expected = await reference_outcomes(conn, org, since, until)
            assert await analytics.recommendation_outcomes(session, org, since=since, until=until) == expected, (
                since, until)


async def test_analytics_equal_the_served_log_joined_to_its_events_for_any_range(
    client: Any, db: Any, drain: Any
) -> None:
    org, other = await create_org(db, name="analysed"), await create_org(db, name="foreign")
    await client.post("/v1/ingest/items/upsert", json=[item("a")], headers=org.sk)
    await drain()
    now = datetime.now(UTC)
    base = now.replace(minute=0, second=0, microsecond=0) - timedelta(days=3)
    moments = [base + timedelta(minutes=m) for m in (15, 45, 65, 24 * 60 - 1, 47 * 60 + 59)]
    moments += [now - timedelta(hours=2), now - timedelta(minutes=10), now - timedelta(seconds=1)]
    rids = [await _serve(db, org.org_id, ["popular", "similar", "trending"][n % 3], at)
            for n, at in enumerate(moments)]
    foreign = await _serve(db, other.org_id, "popular", moments[0])
    late = str(uuid.uuid4())  # its events arrive before the api's served log reaches the worker

    def click(rid: str, user: str = "shopper") -> dict[str, Any]:
        return event(user, "click", "a", recommendation_id=rid)

    batch = [click(rid) for rid in rids] + [click(rids[0], "buyer"), click(late), click(late)]
    batch += [event("shopper", "impression", "a", event_family="exposure", recommendation_id=rid) for rid in rids]
    batch += [
        event("buyer", "purchase", "a", recommendation_id=rids[0], context={"price": 10, "quantity": 3}),
        event("buyer", "purchase", "a", recommendation_id=rids[3], context={"price": 4.25}),
        event("shopper", "purchase", "a", recommendation_id=rids[6], context={"price": "12"}),  # no number
        event("shopper", "add_to_cart", "a", recommendation_id=rids[1], context={"price": 99}),
        click(rids[2].upper()),  # not the text of a served id
        click("never-served"),
        click(foreign),
    ]
    assert (await client.post(EVENTS, json=batch, headers=org.pk)).status_code == 202
    await drain()
    await _serve(db, org.org_id, "similar", moments[1] + timedelta(minutes=1), rid=late)
    async with db() as session:  # its clicks were moved into the counts; only the foreign one waits on
        conn = await driver_connection(session)
        waiting = await conn.fetch("SELECT recommendation_id FROM unattributed_events WHERE org_id = $1",
                                   uuid.UUID(org.org_id))
        assert [str(row[0]) for row in waiting] == [foreign]

    hour = moments[0].replace(minute=0)
    ist = timezone(timedelta(hours=5, minutes=30))
    ranges = [
        (now - timedelta(days=30), now),
        (now - timedelta(days=4), now + timedelta(hours=1)),
        (moments[0] + timedelta(minutes=20), now - timedelta(minutes=5)),  # partial hours at both ends
        (hour + timedelta(minutes=10), hour + timedelta(minutes=50)),  # inside one hour
        (hour, hour + timedelta(hours=3)),  # whole hours only
        (hour.astimezone(ist) + timedelta(minutes=30), now.astimezone(ist)),  # an offset of half an hour
        (now - timedelta(minutes=30), now + timedelta(days=1)),
    ]
    await _assert_as_the_reference(db, org.org_id, ranges)
    async with db() as session:
        everything = await analytics.recommendation_outcomes(
            session, uuid.UUID(org.org_id), since=now - timedelta(days=30), until=now + timedelta(hours=1))
    totals = {key: sum(row[key] for row in everything) for key in ("served", "exposures", "clicks", "conversions")}
    assert totals == {"served": 9, "exposures": 8, "clicks": 11, "conversions": 3}
    assert sum(row["revenue"] for row in everything) == 34.25

    # Erasure deletes the buyer's events: their outcomes leave the counts.
    assert (await client.delete("/v1/users/buyer", headers=org.sk)).status_code == 202
    await drain()
    await _assert_as_the_reference(db, org.org_id, ranges)
    # Retention deletes old served rows: they and the outcomes attributed to them leave too. (Its
    # cut falls within a day: that day's other recommendations, and their outcomes, stay.)
    async with transaction(db) as session:
        cut = moments[1] + timedelta(seconds=30)
        assert await served.delete_older(session, uuid.UUID(org.org_id), cut, limit=100) == 2
    await _assert_as_the_reference(db, org.org_id, ranges)

    response = await client.get("/v1/analytics/recommendations", headers=org.sk)
    assert response.status_code == 200 and response.json()["data"]["totals"]["served"] == 7


async def test_an_event_and_its_recommendation_written_at_the_same_time_count_once(db: Any) -> None:
    """Neither transaction sees the other's row: the event waits in unattributed_events, and
    analytics joins it to its recommendation when both are committed."""
    org_keys = await create_org(db, name="racing")
    org = uuid.UUID(org_keys.org_id)
    now = datetime.now(UTC)

    def click(rid: str) -> dict[str, Any]:
        return {"event_id": str(uuid.uuid4()), "user_id": "u", "event_family": "engagement", "event_name": "click",
                "item_id": "a", "recommendation_id": rid, "occurred_at": time.time(), "received_at": time.time()}

    first = str(uuid.uuid4())  # the event's transaction starts first and commits last
    async with transaction(db) as session:
        await events.insert_events(session, org, [click(first)])
        await _serve(db, org_keys.org_id, "popular", now - timedelta(hours=2), rid=first)
    second = str(uuid.uuid4())  # the recommendation's transaction starts first and commits last
    async with transaction(db) as session:
        await served.insert_served(session, [{
            "org_id": org_keys.org_id, "recommendation_id": second, "strategy": "similar", "mode": "behavioral",
            "user_id": None, "context_item_id": None, "item_ids": ["a"], "model_version": None,
            "served_at": (now - timedelta(hours=2)).timestamp(),
        }])
        async with transaction(db) as other:
            await events.insert_events(other, org, [click(second)])

    async with db() as session:
        conn = await driver_connection(session)
        assert await conn.fetchval("SELECT count(*) FROM unattributed_events WHERE org_id = $1", org) == 2
        since, until = now - timedelta(days=1), now
        kept = await analytics.recommendation_outcomes(session, org, since=since, until=until)
        assert kept == await reference_outcomes(conn, org, since, until)
        assert [(row["strategy"], row["served"], row["clicks"]) for row in kept] == [
            ("popular", 1, 1), ("similar", 1, 1)]
