"""personalized and price-optimized on worlds whose right answer is known."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.ml.factor_index import demote
from tests.factories import OrgKeys, event, item
from tests.recommend.conftest import ids, recommend
from tests.waiting import eventually

SPORT = [f"s{k}" for k in range(8)]
COOK = [f"c{k}" for k in range(8)]


def _clusters() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    items = [item(i, attributes={"category": "sport", "price": 20}) for i in SPORT]
    items += [item(i, attributes={"category": "cook", "price": 20}) for i in COOK]
    events = []
    for u in range(12):
        catalog = SPORT if u % 2 == 0 else COOK
        for k in range(5):
            events.append(event(f"u{u}", "view", catalog[(u + k) % 8]))
    return items, events


async def test_taste_clusters_rank_own_cluster_first(client: Any, org: OrgKeys, drain: Any, world: Any) -> None:
    items, events = _clusters()
    await world(client, org, drain, items=items, events=events)
    sporty = await recommend(client, org, strategy="personalized", user_id="u0", limit=8)
    cooky = await recommend(client, org, strategy="personalized", user_id="u1", limit=8)
    assert sporty["mode"] == "behavioral"
    assert set(ids(sporty)[:6]) <= set(SPORT)
    assert set(ids(cooky)[:6]) <= set(COOK)
    assert all(r["reason"] == "behavioral_match" for r in sporty["results"])


async def test_new_user_with_three_events_gets_personal_results_without_retrain(
    client: Any, org: OrgKeys, drain: Any, world: Any
) -> None:
    items, events = _clusters()
    version = await world(client, org, drain, items=items, events=events)
    fresh = [event("newcomer", "view", c) for c in COOK[:3]]
    assert (await client.post("/v1/ingest/events/ingest", json=fresh, headers=org.pk)).status_code == 202
    await drain()
    data = await recommend(client, org, strategy="personalized", user_id="newcomer", limit=5)
    assert data["model_version"] == version  # no retrain happened
    assert data["mode"] == "behavioral"
    assert set(ids(data)) <= set(COOK)


async def test_purchased_items_are_excluded(client: Any, org: OrgKeys, drain: Any, world: Any) -> None:
    items, events = _clusters()
    events.append(event("u0", "purchase", "s0", context={"order_id": "o1"}))
    await world(client, org, drain, items=items, events=events)
    data = await recommend(client, org, strategy="personalized", user_id="u0", limit=16)
    assert "s0" not in ids(data)
    # bought after training: excluded at once too
    await client.post("/v1/ingest/events/ingest", json=event("u0", "purchase", "s1"), headers=org.pk)
    await drain()
    data = await recommend(client, org, strategy="personalized", user_id="u0", limit=16)
    assert "s1" not in ids(data)


async def test_price_optimized_prefers_the_users_price_band(
    client: Any, org: OrgKeys, drain: Any, world: Any
) -> None:
    # Prices 10 .. 100 in an order unrelated to the ids, so no tie-break by id can fake the answer.
    prices = {f"p{k}": 10.0 * ((7 * k + 3) % 10 + 1) for k in range(10)}
    cheapest = sorted(prices, key=prices.get)[:2]
    items = [item(i, attributes={"category": "x", "price": p}) for i, p in prices.items()]
    events = []
    for u in range(10):  # everyone views everything: taste is flat, price decides
        events += [event(f"u{u}", "view", i) for i in prices]
    events += [event("thrifty", "purchase", i, context={"price": prices[i]}) for i in cheapest]
    events += [event("thrifty", "view", i) for i in prices if i not in cheapest]
    await world(client, org, drain, items=items, events=events)
    data = await recommend(client, org, strategy="price-optimized", user_id="thrifty", limit=3)
    assert data["results"][0]["reason"] == "price_match"
    top_prices = [r["metadata"]["price"] for r in data["results"]]
    assert max(top_prices) <= 50, top_prices
    plain = await recommend(client, org, strategy="personalized", user_id="thrifty", limit=3)
    assert sum(r["metadata"]["price"] for r in plain["results"]) > sum(top_prices)


async def test_price_optimized_without_any_known_price_is_plain_personalized(
    client: Any, org: OrgKeys, drain: Any, world: Any
) -> None:
    items, events = _clusters()
    for record in items:
        del record["attributes"]["price"]
    await world(client, org, drain, items=items, events=events)
    plain = await recommend(client, org, strategy="personalized", user_id="u0", limit=8)
    priced = await recommend(client, org, strategy="price-optimized", user_id="u0", limit=8)
    assert priced["mode"] == "behavioral"
    assert priced["results"] == plain["results"]  # same items, scores, reasons and metadata
    assert {r["reason"] for r in priced["results"]} == {"behavioral_match"}


async def test_identify_stitches_anonymous_history_into_recommendations(
    client: Any, org: OrgKeys, drain: Any, world: Any
) -> None:
    items, events = _clusters()
    await world(client, org, drain, items=items, events=events)
    anon = [event("anon-77", "view", c) for c in COOK[:3]]
    await client.post("/v1/ingest/events/ingest", json=anon, headers=org.pk)
    await client.post(
        "/v1/ingest/events/ingest", json=event("member-77", "identify", previous_user_id="anon-77"), headers=org.pk
    )
    await drain()

    async def stitched() -> bool:
        data = await recommend(client, org, strategy="recently-viewed", user_id="member-77", limit=3)
        return set(ids(data)) == set(COOK[:3])

    await eventually(stitched)
    data = await recommend(client, org, strategy="personalized", user_id="member-77", limit=5)
    assert data["mode"] == "behavioral" and set(ids(data)) <= set(COOK)


def test_demotion_moves_a_shown_but_ignored_item_down_whatever_the_sign_of_its_score() -> None:
    scores = np.array([2.0, -1.0, 1.0], dtype=np.float32)
    demotion = np.array([0.5, 0.5, 0.0], dtype=np.float32)  # 1 - exposure penalty
    assert demote(scores, demotion).tolist() == [1.0, -1.5, 1.0]
    assert scores.tolist() == [2.0, -1.0, 1.0]  # the model's scores are not touched
    assert demote(scores, None) is scores
