"""similar, frequently-bought-together, frequently-consumed-together."""

from __future__ import annotations

from typing import Any

from tests.factories import OrgKeys, event, item
from tests.recommend.conftest import ids, recommend
from tests.waiting import eventually


async def test_co_purchased_pair_ranks_first_for_each_other(
    client: Any, org: OrgKeys, drain: Any, world: Any
) -> None:
    items = [item(f"x{k}", attributes={"category": "kitchen"}) for k in range(10)]
    items += [item("kettle", attributes={"category": "kitchen"}), item("filter", attributes={"category": "kitchen"})]
    events = []
    for u in range(12):
        order = f"o{u}"
        events.append(event(f"u{u}", "purchase", "kettle", context={"order_id": order}))
        events.append(event(f"u{u}", "purchase", "filter", context={"order_id": order}))
        events.append(event(f"u{u}", "purchase", f"x{u % 10}", context={"order_id": order}))
    for u in range(30):  # other baskets: the pair is special, not merely in every basket
        order = f"p{u}"
        events.append(event(f"v{u}", "purchase", f"x{u % 10}", context={"order_id": order}))
        events.append(event(f"v{u}", "purchase", f"x{(u + 3) % 10}", context={"order_id": order}))
    await world(client, org, drain, items=items, events=events)
    kettle = await recommend(client, org, strategy="frequently-bought-together", context_item_id="kettle", limit=3)
    assert ids(kettle)[0] == "filter"
    assert kettle["results"][0]["reason"] == "bought_together" and kettle["mode"] == "behavioral"
    filt = await recommend(client, org, strategy="frequently_bought_together", context_item_id="filter", limit=3)
    assert ids(filt)[0] == "kettle" and filt["strategy"] == "frequently-bought-together"
    assert "kettle" not in ids(kettle)


async def test_never_bought_item_falls_back_to_its_category(
    client: Any, org: OrgKeys, drain: Any, world: Any
) -> None:
    items = [item("lonely", attributes={"category": "garden"})]
    items += [item(f"g{k}", attributes={"category": "garden"}) for k in range(3)]
    items += [item(f"k{k}", attributes={"category": "kitchen"}) for k in range(3)]
    events = [event(f"u{u}", "view", f"{'g' if u % 2 else 'k'}{u % 3}") for u in range(12)]
    await world(client, org, drain, items=items, events=events)
    data = await recommend(client, org, strategy="frequently-bought-together", context_item_id="lonely", limit=3)
    assert data["mode"] == "fallback"
    assert {r["reason"] for r in data["results"]} == {"category_popular"}
    assert all(r["metadata"]["category"] == "garden" for r in data["results"])


async def test_co_engaged_in_sessions(client: Any, org: OrgKeys, drain: Any, world: Any) -> None:
    items = [item(i) for i in ("ep1", "ep2", "other1", "other2", "other3")]
    events = []
    for u in range(8):
        session = {"session_id": f"s{u}"}
        events += [event(f"u{u}", "view", "ep1", context=session), event(f"u{u}", "view", "ep2", context=session)]
        events.append(event(f"u{u}", "view", f"other{u % 3 + 1}", context={"session_id": f"t{u}"}))
    await world(client, org, drain, items=items, events=events)
    data = await recommend(client, org, strategy="frequently-consumed-together", context_item_id="ep1", limit=2)
    assert ids(data)[0] == "ep2" and data["results"][0]["reason"] == "consumed_together"


async def test_brand_new_item_with_attributes_only_has_neighbours(
    client: Any, org: OrgKeys, drain: Any, world: Any
) -> None:
    items = [
        item("trail-shoe-1", attributes={"category": "shoes", "brand": "Peak", "title": "trail running shoe"}),
        item("trail-shoe-2", attributes={"category": "shoes", "brand": "Peak", "title": "trail shoe waterproof"}),
        item("mug", attributes={"category": "kitchen", "brand": "Homey", "title": "ceramic mug"}),
        item("pan", attributes={"category": "kitchen", "brand": "Homey", "title": "frying pan"}),
        item("new-trail-shoe", attributes={"category": "shoes", "brand": "Peak", "title": "trail running shoe v2"}),
    ]
    events = [event(f"u{u}", "view", i) for u in range(6) for i in ("trail-shoe-1", "trail-shoe-2", "mug", "pan")]
    await world(client, org, drain, items=items, events=events)
    data = await recommend(client, org, strategy="similar", context_item_id="new-trail-shoe", limit=2)
    assert data["mode"] == "semantic"
    assert set(ids(data)) == {"trail-shoe-1", "trail-shoe-2"}
    assert data["results"][0]["reason"] == "content_similar"
    assert "new-trail-shoe" not in ids(await recommend(client, org, strategy="similar",
                                                       context_item_id="new-trail-shoe", limit=20))


async def test_similar_blends_behaviour_and_never_returns_the_item(
    client: Any, org: OrgKeys, drain: Any, world: Any
) -> None:
    items = [item(f"a{k}", attributes={"category": "a"}) for k in range(4)]
    items += [item(f"b{k}", attributes={"category": "b"}) for k in range(4)]
    events = [event(f"u{u}", "view", f"{'a' if u % 2 else 'b'}{k}") for u in range(10) for k in range(4)]
    await world(client, org, drain, items=items, events=events)
    data = await recommend(client, org, strategy="similar", context_item_id="a0", limit=3)
    assert data["mode"] == "hybrid"
    assert set(ids(data)) == {"a1", "a2", "a3"}
    assert data["results"][0]["reason"] == "similar_item"


async def test_an_item_upserted_after_the_train_has_content_neighbours_at_once(
    client: Any, org: OrgKeys, drain: Any, world: Any
) -> None:
    items = [
        item("tent-a", attributes={"category": "camping", "brand": "Peak", "title": "two person tent"}),
        item("tent-b", attributes={"category": "camping", "brand": "Ridge", "title": "family tent"}),
        item("mug-a", attributes={"category": "kitchen", "brand": "Homey", "title": "tea mug"}),
        item("mug-b", attributes={"category": "kitchen", "brand": "Homey", "title": "coffee mug"}),
    ]
    events = [event(f"u{u}", "view", i["item_id"]) for u in range(4) for i in items]
    version = await world(client, org, drain, items=items, events=events)
    fresh = item("tent-new", attributes={"category": "camping", "brand": "Peak", "title": "ultralight tent"})
    await client.post("/v1/ingest/items/upsert", json=fresh, headers=org.sk)
    await drain()

    async def placed() -> Any:
        data = await recommend(client, org, strategy="similar", context_item_id="tent-new", limit=2)
        return data["mode"] == "semantic" and data

    data = await eventually(placed, timeout=5)
    assert data["model_version"] == version  # no retrain
    assert ids(data) == ["tent-a", "tent-b"]
    assert data["results"][0]["reason"] == "content_similar"
