"""GET /v1/analytics/recommendations against a hand-computed world."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.factories import OrgKeys, event, item

EVENTS = "/v1/ingest/events/ingest"


async def _serve(client: Any, org: OrgKeys, strategy: str) -> str:
    response = await client.post("/v1/recommend", json={"strategy": strategy, "limit": 3}, headers=org.pk)
    assert response.status_code == 200
    return response.json()["data"]["recommendation_id"]


async def test_outcomes_per_strategy_match_a_hand_computed_world(
    client: Any, app: Any, org: OrgKeys, other_org: OrgKeys, drain: Any
) -> None:
    await client.post("/v1/ingest/items/upsert", json=[item("a"), item("b"), item("c")], headers=org.sk)
    await client.post("/v1/ingest/items/upsert", json=[item("a")], headers=other_org.sk)
    await drain()
    r1, r2 = await _serve(client, org, "popular"), await _serve(client, org, "popular")
    r3 = await _serve(client, org, "new-arrivals")
    foreign = await _serve(client, other_org, "popular")
    await app.state.lehnz.served_log.flush()

    def exposure(rid: str) -> dict[str, Any]:
        return {"user_id": "u", "event_family": "exposure", "event_name": "impression", "item_id": "a",
                "recommendation_id": rid}

    events = [exposure(r1)] * 4 + [exposure(r2)] * 2 + [exposure(r3)]
    events += [event("u", "click", "a", recommendation_id=r1)] * 2 + [event("u", "click", "b", recommendation_id=r3)]
    events += [
        event("u", "purchase", "a", recommendation_id=r1, context={"price": 10, "quantity": 2}),
        event("u", "purchase", "b", recommendation_id=r3, context={"price": 5, "quantity": 1}),
        event("u", "purchase", "c", recommendation_id=r3, context={"price": 7.5}),
        event("u", "click", "a", recommendation_id="never-served"),
        event("u", "purchase", "a", recommendation_id=foreign, context={"price": 1000}),
        event("u", "add_to_cart", "a", recommendation_id=r1, context={"price": 99}),
    ]
    assert (await client.post(EVENTS, json=events, headers=org.pk)).status_code == 202
    await drain()

    response = await client.get("/v1/analytics/recommendations", headers=org.sk)
    assert response.status_code == 200
    data = response.json()["data"]
    today = datetime.now(UTC).date().isoformat()
    by_name = {s["strategy"]: s for s in data["strategies"]}
    assert set(by_name) == {"popular", "new-arrivals"}
    popular = {k: v for k, v in by_name["popular"].items() if k != "days"}
    assert popular == {"strategy": "popular", "served": 2, "exposures": 6, "clicks": 2, "conversions": 1,
                       "ctr": round(2 / 6, 6), "conversion_rate": 0.5, "revenue": 20.0}
    arrivals = {k: v for k, v in by_name["new-arrivals"].items() if k != "days"}
    assert arrivals == {"strategy": "new-arrivals", "served": 1, "exposures": 1, "clicks": 1, "conversions": 2,
                        "ctr": 1.0, "conversion_rate": 2.0, "revenue": 12.5}
    assert [d["day"] for d in by_name["popular"]["days"]] == [today]
    assert data["totals"] == {"served": 3, "exposures": 7, "clicks": 3, "conversions": 3,
                              "ctr": round(3 / 7, 6), "conversion_rate": 1.0, "revenue": 32.5}


async def test_window_and_validation(client: Any, org: OrgKeys) -> None:
    empty = await client.get("/v1/analytics/recommendations", params={"since": "2001-01-01T00:00:00Z",
                                                                       "until": "2001-01-02T00:00:00Z"},
                             headers=org.sk)
    assert empty.status_code == 200
    assert empty.json()["data"]["strategies"] == [] and empty.json()["data"]["totals"]["served"] == 0
    backwards = await client.get("/v1/analytics/recommendations",
                                 params={"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
                                 headers=org.sk)
    assert backwards.status_code == 400
    garbage = await client.get("/v1/analytics/recommendations", params={"since": "yesterday-ish"}, headers=org.sk)
    assert garbage.status_code == 400 and garbage.json()["error"][0]["field"] == "since"
    assert (await client.get("/v1/analytics/recommendations", headers=org.pk)).status_code == 403
