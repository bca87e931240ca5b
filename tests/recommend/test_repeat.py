"""buy-again: repeat-purchase cycles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.factories import OrgKeys, event, item
from tests.recommend.conftest import ids, recommend


def _ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).isoformat()


async def test_item_due_by_its_cycle_ranks_above_one_just_bought(
    client: Any, org: OrgKeys, drain: Any, world: Any
) -> None:
    items = [item("coffee"), item("milk"), item("tv")]
    events = []
    # coffee every 7 days, last 8 days ago: due. milk every 7 days, last bought yesterday: not yet.
    for k, days in enumerate((36, 29, 22, 15, 8)):
        events.append(event("me", "purchase", "coffee", timestamp=_ago(days), context={"order_id": f"c{k}"}))
    for k, days in enumerate((29, 22, 15, 8, 1)):
        events.append(event("me", "purchase", "milk", timestamp=_ago(days), context={"order_id": f"m{k}"}))
    events += [event(f"o{u}", "view", "tv") for u in range(5)]
    await world(client, org, drain, items=items, events=events)
    data = await recommend(client, org, strategy="buy-again", user_id="me", limit=3)
    assert ids(data)[:2] == ["coffee", "milk"]
    assert data["results"][0]["reason"] == "buy_again" and data["mode"] == "behavioral"
    assert data["results"][0]["score"] > data["results"][1]["score"]


async def test_user_who_never_bought_gets_popular(client: Any, org: OrgKeys, drain: Any, world: Any) -> None:
    items = [item("a"), item("b")]
    await world(client, org, drain, items=items, events=[event(f"u{u}", "view", "a") for u in range(3)])
    data = await recommend(client, org, strategy="buy-again", user_id="window-shopper", limit=2)
    assert data["mode"] == "fallback" and data["results"][0]["reason"] == "popular"
