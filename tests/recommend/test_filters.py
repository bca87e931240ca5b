"""Request filters over HTTP: what each keeps, and `exclude_interacted` (API.md section 5), which
drops what the user already had, from the trained history and from fresh activity, inside the
ranking (pages stay full and never overlap)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from tests.factories import OrgKeys, create_org
from tests.recommend.conftest import build_world, ids, recommend

ITEMS = 30


def catalog() -> list[dict[str, Any]]:
    return [
        {"item_id": f"m{i}", "item_type": "video" if i % 3 == 0 else "product", "status": "active",
         "attributes": {"title": f"thing {i}", "category": "a" if i < 15 else "b", "price": i,
                        "tags": ["sale"] if i % 2 else []}}
        for i in range(ITEMS)
    ]


def history() -> list[dict[str, Any]]:
    """40 users; everyone views m0..m9 often (popular); `fan` viewed m0, m1, bought m2, carted m3."""
    base = datetime(2025, 3, 1, tzinfo=UTC)
    events = []
    for u in range(40):
        for k in range(10):
            item = (u + k) % 10 if k < 6 else 10 + (u * 3 + k) % 20
            events.append({"user_id": f"u{u}", "event_family": "engagement", "event_name": "view",
                           "item_id": f"m{item}", "timestamp": (base + timedelta(hours=u * 10 + k)).isoformat()})
    for name, item, family in (("view", "m0", "engagement"), ("view", "m1", "engagement"),
                               ("purchase", "m2", "conversion"), ("add_to_cart", "m3", "conversion")):
        events.append({"user_id": "fan", "event_family": family, "event_name": name, "item_id": item,
                       "timestamp": (base + timedelta(days=30)).isoformat()})
    return events


@pytest_asyncio.fixture(scope="module")
async def trained(client, db, drain) -> OrgKeys:
    """One trained world for the module: its tests only read it (the one that sends new events
    builds its own, `fresh`)."""
    org = await create_org(db, name="filters world")
    await build_world(client, org, drain, items=catalog(), events=history())
    return org


@pytest.fixture
async def fresh(client, org, drain, world) -> OrgKeys:
    await world(client, org, drain, items=catalog(), events=history())
    return org


STRATEGIES = ["personalized", "popular", "trending", "similar", "session_based", "new-arrivals", "recently-viewed"]


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_exclude_interacted_true_drops_every_item_the_user_touched(client, trained, strategy):
    body: dict[str, Any] = {"strategy": strategy, "user_id": "fan", "limit": 20}
    if strategy == "similar":
        body["context_item_id"] = "m5"
    before = ids(await recommend(client, trained, **body))
    after = await recommend(client, trained, **body, filters={"exclude_interacted": True})
    touched = {"m0", "m1", "m2", "m3"}
    assert not touched & set(ids(after))
    assert len(ids(after)) == 20  # the page stays full: excluded inside the ranking, not after it
    assert [i for i in before if i not in touched] == ids(after)[: len([i for i in before if i not in touched])]


async def test_exclude_interacted_by_name_keeps_items_with_other_events(client, trained):
    got = ids(await recommend(client, trained, strategy="popular", user_id="fan", limit=30,
                              filters={"exclude_interacted": ["view"]}))
    assert "m0" not in got and "m1" not in got and "m2" in got and "m3" in got
    got = ids(await recommend(client, trained, strategy="popular", user_id="fan", limit=30,
                              filters={"exclude_interacted": ["purchase", "add_to_cart"]}))
    assert "m2" not in got and "m3" not in got and "m0" in got
    got = ids(await recommend(client, trained, strategy="popular", user_id="fan", limit=30,
                              filters={"exclude_interacted": ["wishlist"]}))  # never sent: nothing goes
    assert {"m0", "m1", "m2", "m3"} <= set(got)


async def test_exclude_interacted_sees_events_newer_than_the_model_and_stitched_aliases(client, fresh, drain):
    events = [
        {"user_id": "anon-7", "event_family": "engagement", "event_name": "view", "item_id": "m20"},
        {"user_id": "fan", "event_family": "system", "event_name": "identify", "previous_user_id": "anon-7"},
        {"user_id": "fan", "event_family": "engagement", "event_name": "click", "item_id": "m21"},
    ]
    assert (await client.post("/v1/ingest/events/ingest", json=events, headers=fresh.pk)).status_code == 202
    await drain()
    got = ids(await recommend(client, fresh, strategy="popular", user_id="fan", limit=30,
                              filters={"exclude_interacted": True}))
    assert "m20" not in got and "m21" not in got and len(got) == ITEMS - 6


async def test_pages_with_exclude_interacted_never_overlap_and_count_what_is_left(client, trained):
    seen: list[str] = []
    totals = set()
    for page in (1, 2, 3):
        data = await recommend(client, trained, strategy="popular", user_id="fan", limit=10, page=page,
                               filters={"exclude_interacted": True})
        seen += ids(data)
        totals.add(data["pagination"]["total_count"])
    assert len(seen) == len(set(seen)) == ITEMS - 4 and totals == {ITEMS - 4}


async def test_exclude_interacted_without_a_user_excludes_nothing(client, trained):
    data = await recommend(client, trained, strategy="popular", limit=30, filters={"exclude_interacted": True})
    assert len(ids(data)) == ITEMS


@pytest.mark.parametrize("value", [1, "view", [], [""], ["view", 3], {"any": True}, None])
async def test_a_malformed_exclude_interacted_is_a_400_naming_the_field(client, trained, value):
    response = await client.post("/v1/recommend", headers=trained.pk, json={
        "strategy": "popular", "user_id": "fan", "filters": {"exclude_interacted": value}})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["success"] is False and body["error"][0]["field"] == "filters.exclude_interacted"


async def test_exclude_interacted_false_is_the_same_as_absent(client, trained):
    plain = ids(await recommend(client, trained, strategy="personalized", user_id="fan", limit=15))
    off = ids(await recommend(client, trained, strategy="personalized", user_id="fan", limit=15,
                              filters={"exclude_interacted": False}))
    assert plain == off


async def test_attribute_filters_hold_and_combine_with_exclude_interacted(client, trained):
    data = await recommend(client, trained, strategy="popular", user_id="fan", limit=50, filters={
        "category": "a", "price": {"gte": 1, "lt": 12}, "tags": {"contains": "sale"},
        "item_type": "product", "exclude_item_ids": ["m5"], "exclude_interacted": ["view"]})
    got = ids(data)
    assert got and data["pagination"]["total_count"] == len(got)
    # category a (< 15), 1 <= price < 12, odd (sale), not a video (i % 3), not m5, not viewed (m0, m1)
    assert set(got) == {f"m{i}" for i in range(1, 12) if i % 2 and i % 3 and i not in (1, 5)}
