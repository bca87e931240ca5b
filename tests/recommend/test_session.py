"""session_based, session-resumption, abandonment-recovery, recently-viewed: real time, no retrain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.factories import OrgKeys, event, item
from tests.recommend.conftest import ids, recommend
from tests.waiting import eventually

TENTS = [f"tent{k}" for k in range(4)]
BOOKS = [f"book{k}" for k in range(4)]


def _at(minutes_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


async def _two_worlds(client: Any, org: OrgKeys, drain: Any, world: Any) -> str:
    items = [item(i, attributes={"category": "camp"}) for i in TENTS]
    items += [item(i, attributes={"category": "read"}) for i in BOOKS]
    events = []
    for u in range(10):
        catalog = TENTS if u % 2 else BOOKS
        events += [event(f"u{u}", "view", i, timestamp=_at(600 - k)) for k, i in enumerate(catalog)]
    return await world(client, org, drain, items=items, events=events)


async def test_session_based_follows_a_new_event_within_seconds(
    client: Any, org: OrgKeys, drain: Any, world: Any
) -> None:
    version = await _two_worlds(client, org, drain, world)
    await client.post("/v1/ingest/events/ingest", json=event("shopper", "view", "tent0"), headers=org.pk)
    await drain()
    first = await recommend(client, org, strategy="session_based", user_id="shopper", limit=3)
    assert first["mode"] == "behavioral" and set(ids(first)) <= set(TENTS) - {"tent0"}
    await client.post("/v1/ingest/events/ingest", json=[event("shopper", "view", "book0"),
                                                        event("shopper", "view", "book1")], headers=org.pk)
    await drain()
    second = await recommend(client, org, strategy="session_based", user_id="shopper", limit=2)
    assert second["model_version"] == version
    # The newest interactions weigh most: what follows book1 now leads, just-seen items never show.
    assert ids(second)[0] == "book2"
    assert not {"book0", "book1", "tent0"} & set(ids(second))
    assert second["results"][0]["reason"] == "session_intent"


async def test_recently_viewed_is_newest_first_and_deduplicated(
    client: Any, org: OrgKeys, drain: Any, world: Any
) -> None:
    await _two_worlds(client, org, drain, world)
    views = [event("v", "view", i, timestamp=_at(m)) for i, m in (("tent0", 9), ("book0", 8), ("tent0", 7),
                                                                   ("book1", 6))]
    await client.post("/v1/ingest/events/ingest", json=views, headers=org.pk)
    await drain()
    data = await recommend(client, org, strategy="recently-viewed", user_id="v", limit=3)
    assert ids(data) == ["book1", "tent0", "book0"]
    assert [r["reason"] for r in data["results"]] == ["recently_viewed"] * 3


async def test_session_resumption_picks_up_the_interrupted_session(
    client: Any, org: OrgKeys, drain: Any, world: Any
) -> None:
    await _two_worlds(client, org, drain, world)
    history = [
        event("r", "view", "book0", timestamp=_at(300)),  # an older session
        event("r", "view", "tent0", timestamp=_at(20)),   # the latest one, never finished
        event("r", "view", "tent1", timestamp=_at(18)),
    ]
    await client.post("/v1/ingest/events/ingest", json=history, headers=org.pk)
    await drain()
    data = await recommend(client, org, strategy="session-resumption", user_id="r", limit=4)
    assert ids(data)[:2] == ["tent1", "tent0"]
    assert data["results"][0]["reason"] == "session_resume"
    continuation = [r for r in data["results"] if r["reason"] == "session_continuation"]
    assert continuation and all(r["item_id"] in TENTS for r in continuation)


async def test_abandonment_recovery_offers_alternatives_to_the_abandoned_cart(
    client: Any, org: OrgKeys, drain: Any, world: Any
) -> None:
    await _two_worlds(client, org, drain, world)
    session = [
        event("a", "view", "tent0", timestamp=_at(12)),
        event("a", "add_to_cart", "tent0", timestamp=_at(11)),
    ]
    await client.post("/v1/ingest/events/ingest", json=session, headers=org.pk)
    await drain()
    data = await recommend(client, org, strategy="abandonment-recovery", user_id="a", limit=3)
    assert data["mode"] == "hybrid"
    assert "tent0" not in ids(data)
    assert set(ids(data)) <= set(TENTS)
    assert data["results"][0]["reason"] == "abandoned_alternative"


async def test_user_without_activity_falls_back_to_trending(
    client: Any, org: OrgKeys, drain: Any, world: Any
) -> None:
    await _two_worlds(client, org, drain, world)
    for name in ("session_based", "session-resumption", "abandonment-recovery", "recently-viewed"):
        data = await recommend(client, org, strategy=name, user_id="stranger", limit=3)
        assert data["mode"] == "fallback", name
        assert {r["reason"] for r in data["results"]} == {"trending"}, name


async def test_erased_user_leaves_real_time_strategies_at_once(
    client: Any, org: OrgKeys, drain: Any, world: Any
) -> None:
    await _two_worlds(client, org, drain, world)
    await client.post("/v1/ingest/events/ingest", json=event("gdpr", "view", "tent2"), headers=org.pk)
    await drain()

    async def viewed() -> bool:
        data = await recommend(client, org, strategy="recently-viewed", user_id="gdpr", limit=1)
        return ids(data) == ["tent2"]

    await eventually(viewed)
    assert (await client.delete("/v1/users/gdpr", headers=org.sk)).status_code == 202
    data = await recommend(client, org, strategy="recently-viewed", user_id="gdpr", limit=1)
    assert data["mode"] == "fallback"
