"""trending, popular, category-popular, new-arrivals, and live catalog changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.factories import OrgKeys, event, item
from tests.recommend.conftest import ids, recommend
from tests.waiting import eventually


def _ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).isoformat()


async def test_trending_prefers_a_rising_item_over_a_steady_favourite(
    client: Any, org: OrgKeys, drain: Any, world: Any
) -> None:
    items = [item("steady"), item("rising"), item("quiet")]
    events = [event(f"s{d}", "view", "steady", timestamp=_ago(d)) for d in range(1, 60) for _ in range(2)]
    events += [event(f"r{k}", "view", "rising", timestamp=_ago(0.1)) for k in range(25)]
    events += [event("q", "view", "quiet", timestamp=_ago(40))]
    await world(client, org, drain, items=items, events=events)
    trending = await recommend(client, org, strategy="trending", limit=3)
    popular = await recommend(client, org, strategy="popular", limit=3)
    assert ids(trending)[0] == "rising"
    assert ids(popular)[0] == "steady"
    assert trending["mode"] == popular["mode"] == "popularity"


async def test_category_popular_from_filter_or_context_item(
    client: Any, org: OrgKeys, drain: Any, world: Any
) -> None:
    items = [item(f"{c}{k}", attributes={"category": c}) for c in ("hats", "bags") for k in range(3)]
    events = [event(f"u{u}", "view", f"hats{u % 3}") for u in range(9)]
    events += [event(f"w{u}", "view", "bags0") for u in range(20)] + [event("w", "view", "bags1")]
    await world(client, org, drain, items=items, events=events)
    by_filter = await recommend(client, org, strategy="category-popular", filters={"category": "hats"}, limit=5)
    assert set(ids(by_filter)) == {"hats0", "hats1", "hats2"} and by_filter["mode"] == "popularity"
    by_item = await recommend(client, org, strategy="category-popular", context_item_id="bags2", limit=2)
    assert ids(by_item) == ["bags0", "bags1"]
    assert by_item["results"][0]["reason"] == "category_popular"


async def test_new_arrivals_newest_first(client: Any, org: OrgKeys, drain: Any, world: Any) -> None:
    items = [item(f"n{k}", created_at=_ago(10 - k)) for k in range(5)]
    await world(client, org, drain, items=items, events=[event("u", "view", "n0")])
    data = await recommend(client, org, strategy="new-arrivals", limit=5)
    assert ids(data) == ["n4", "n3", "n2", "n1", "n0"]
    assert data["results"][0]["reason"] == "new_arrival"


async def test_item_turned_inactive_disappears_without_retrain(
    client: Any, org: OrgKeys, drain: Any, world: Any
) -> None:
    items = [item(f"p{k}") for k in range(4)]
    events = [event(f"u{u}", "view", f"p{k}") for u in range(5) for k in range(4)]
    version = await world(client, org, drain, items=items, events=events)
    assert "p0" in ids(await recommend(client, org, strategy="popular", limit=4))
    await client.post("/v1/ingest/items/upsert", json=item("p0", status="inactive"), headers=org.sk)
    await drain()

    async def gone() -> bool:
        data = await recommend(client, org, strategy="popular", limit=4)
        return "p0" not in ids(data) and data["model_version"] == version

    await eventually(gone, timeout=5)
    for name in ("similar", "frequently-bought-together"):
        data = await recommend(client, org, strategy=name, context_item_id="p1", limit=10)
        assert "p0" not in ids(data)


async def test_new_item_appears_in_new_arrivals_without_retrain(
    client: Any, org: OrgKeys, drain: Any, world: Any
) -> None:
    items = [item(f"old{k}", created_at=_ago(30 + k)) for k in range(3)]
    await world(client, org, drain, items=items, events=[event("u", "view", "old0")])
    await client.post("/v1/ingest/items/upsert", json=item("fresh", attributes={"title": "just in"}), headers=org.sk)
    await drain()

    async def listed() -> bool:
        data = await recommend(client, org, strategy="new-arrivals", limit=1)
        return ids(data) == ["fresh"] and data["results"][0]["metadata"] == {"title": "just in"}

    await eventually(listed, timeout=5)


async def test_an_item_shown_often_but_never_engaged_with_is_demoted(
    client: Any, org: OrgKeys, drain: Any, world: Any
) -> None:
    items = [item("ignored"), item("plain"), item("control")]
    # By views alone "ignored" is the most popular...
    events = [event(f"u{n}", "view", name) for n in range(10) for name in ("ignored", "plain", "control")]
    events += [event(f"v{n}", "view", "ignored") for n in range(5)]
    # ...but it was shown 300 times and never clicked, while "plain" got the usual clicks.
    events += [{"user_id": f"s{n}", "event_family": "exposure", "event_name": "impression", "item_id": shown}
               for n in range(300) for shown in ("ignored", "plain")]
    events += [event(f"s{n}", "click", "plain") for n in range(0, 300, 10)]
    await world(client, org, drain, items=items, events=events)
    ranked = ids(await recommend(client, org, strategy="popular", limit=3))
    assert ranked.index("plain") < ranked.index("ignored")
    assert ranked.index("control") < ranked.index("ignored")
