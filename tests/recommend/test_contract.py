"""The contract every strategy honours (STYLE.md rule 8), parametrised over the registry."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from app.recommend.registry import ITEM, ITEM_OR_CATEGORY, REGISTRY, USER
from tests.factories import OrgKeys, create_org, event, item
from tests.recommend.conftest import build_world, ids, recommend

STRATEGIES = sorted(REGISTRY)
INACTIVE = {"i57", "i58", "i59"}
NOW = datetime.now(UTC)


def _world() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rng = random.Random(7)
    items = []
    for k in range(60):
        items.append(
            item(
                f"i{k:02d}",
                status="inactive" if f"i{k:02d}" in INACTIVE else "active",
                attributes={
                    "category": f"c{k // 20}",
                    "price": 5 + k,
                    "brand": "Acme" if k % 2 else "Globex",
                    "tags": ["sale"] if k % 3 == 0 else ["new"],
                    "title": f"{['red', 'blue', 'green'][k // 20]} widget {k}",
                },
                created_at=(NOW - timedelta(days=60 - k)).isoformat(),
            )
        )
    events = []
    for u in range(30):
        group = u % 3
        start = NOW - timedelta(days=rng.randint(1, 9), hours=rng.randint(0, 20))
        for s in range(3):
            session_start = start + timedelta(hours=5 * s)
            picks = rng.sample(range(group * 20, group * 20 + 20), 4)
            for step, k in enumerate(picks):
                when = (session_start + timedelta(minutes=2 * step)).isoformat()
                events.append(event(f"u{u:02d}", "view", f"i{k:02d}", timestamp=when))
            bought = picks[:2]
            for k in bought:
                when = (session_start + timedelta(minutes=10)).isoformat()
                events.append(event(f"u{u:02d}", "add_to_cart", f"i{k:02d}", timestamp=when))
                events.append(
                    event(f"u{u:02d}", "purchase", f"i{k:02d}", timestamp=when,
                          context={"order_id": f"o{u}-{s}", "price": 5 + k})
                )
    return items, events


@pytest_asyncio.fixture(scope="module")
async def trained(client: Any, db: Any, drain: Any) -> OrgKeys:
    org = await create_org(db, name="contract world")
    items, events = _world()
    await build_world(client, org, drain, items=items, events=events)
    return org


@pytest_asyncio.fixture(scope="module")
async def untrained(client: Any, db: Any, drain: Any) -> OrgKeys:
    """A catalog and nothing else: no model yet."""
    org = await create_org(db, name="contract cold")
    items, _ = _world()
    await build_world(client, org, drain, items=items, events=[], train=False)
    return org


def _inputs(name: str, *, cold: bool = False) -> dict[str, Any]:
    requires = REGISTRY[name].requires
    body: dict[str, Any] = {"strategy": name}
    if requires == USER:
        body["user_id"] = "nobody" if cold else "u01"
    if requires in (ITEM, ITEM_OR_CATEGORY):
        body["context_item_id"] = "nope" if cold else "i05"
    return body


@pytest.mark.parametrize("name", STRATEGIES)
async def test_pages_are_ranked_scored_and_never_overlap(client: Any, trained: OrgKeys, name: str) -> None:
    pages = [await recommend(client, trained, **_inputs(name), limit=7, page=p) for p in (1, 2, 3)]
    seen: list[str] = []
    previous_score = 1.0
    for number, data in enumerate(pages, start=1):
        assert data["strategy"] == name
        assert data["recommended_items"] == ids(data)
        assert data["pagination"]["page"] == number and data["pagination"]["limit"] == 7
        assert data["pagination"]["total_count"] == pages[0]["pagination"]["total_count"]
        for result in data["results"]:
            assert 0.0 <= result["score"] <= previous_score
            previous_score = result["score"]
            assert result["item_id"] not in INACTIVE
            assert result["reason"]
            assert isinstance(result["metadata"], dict) and "category" in result["metadata"]
        seen.extend(ids(data))
    assert len(seen) == len(set(seen)), "pages overlap or repeat an item"
    total = pages[0]["pagination"]["total_count"]
    # Every fallback chain ends in popular / new-arrivals, which list every active item: three
    # full pages always exist in this world, so an empty or short answer is a failure.
    assert total >= 21 and len(seen) == 21
    assert pages[0]["pagination"]["has_next"] is True


async def _kept(client: Any, org: OrgKeys, name: str, matching: set[str]) -> set[str]:
    """What an answer under a filter must hold: exactly the matching items of the strategy's
    whole unfiltered answer (the filter removes nothing else, and adds nothing). In this world
    that is never empty: the fallback chains end in new-arrivals, which lists every active item."""
    everything = await recommend(client, org, **_inputs(name), limit=100)
    assert everything["pagination"]["total_count"] == len(everything["results"])
    return set(ids(everything)) & matching


@pytest.mark.parametrize("name", STRATEGIES)
async def test_filters_always_hold(client: Any, trained: OrgKeys, name: str) -> None:
    filters = {"category": "c1", "price": {"gte": 30}, "brand": ["Acme"], "exclude_item_ids": ["i35"]}
    data = await recommend(client, trained, **_inputs(name), filters=filters, limit=50)
    for result in data["results"]:
        metadata = result["metadata"]
        assert metadata["category"] == "c1" and metadata["price"] >= 30 and metadata["brand"] == "Acme"
        assert result["item_id"] != "i35"
    assert data["pagination"]["total_count"] == len(data["results"])
    matching = {f"i{k:02d}" for k in range(25, 40, 2)} - {"i35"}  # c1, price >= 30, Acme (odd), not i35
    assert set(ids(data)) == await _kept(client, trained, name, matching) and ids(data)


@pytest.mark.parametrize("name", STRATEGIES)
async def test_contains_and_item_type_filters_hold(client: Any, trained: OrgKeys, name: str) -> None:
    data = await recommend(
        client, trained, **_inputs(name), filters={"tags": {"contains": "sale"}, "item_type": "product"}, limit=50
    )
    assert all("sale" in r["metadata"]["tags"] for r in data["results"])
    matching = {f"i{k:02d}" for k in range(0, 60, 3)} - INACTIVE - {"i05"}
    assert set(ids(data)) == await _kept(client, trained, name, matching) and ids(data)


@pytest.mark.parametrize("name", [n for n in STRATEGIES if REGISTRY[n].requires is not None])
async def test_too_little_signal_answers_with_the_declared_fallback(
    client: Any, trained: OrgKeys, name: str
) -> None:
    strategy = REGISTRY[name]
    cold = await recommend(client, trained, **_inputs(name, cold=True), limit=10)
    assert cold["mode"] == "fallback"
    assert cold["strategy"] == name
    fallback_body = _inputs(strategy.fallback or "", cold=True)
    expected = await recommend(client, trained, **fallback_body, limit=10)
    assert ids(cold) == ids(expected)
    assert [r["reason"] for r in cold["results"]] == [r["reason"] for r in expected["results"]]


@pytest.mark.parametrize("name", ["trending", "popular"])
async def test_without_a_model_popularity_strategies_fall_back(client: Any, untrained: OrgKeys, name: str) -> None:
    data = await recommend(client, untrained, strategy=name, limit=5)
    assert data["mode"] == "fallback"
    assert data["model_version"] is None
    newest = await recommend(client, untrained, strategy="new-arrivals", limit=5)
    assert ids(data) == ids(newest) == ["i56", "i55", "i54", "i53", "i52"]


@pytest.mark.parametrize("name", [n for n in STRATEGIES if REGISTRY[n].requires is not None])
async def test_missing_required_input_is_422(client: Any, trained: OrgKeys, name: str) -> None:
    response = await client.post("/v1/recommend", json={"strategy": name}, headers=trained.pk)
    assert response.status_code == 422
    body = response.json()
    assert body["success"] is False and body["data"] is None
    assert REGISTRY[name].requires.split(" ")[0] in body["message"]  # type: ignore[union-attr]


@pytest.mark.parametrize("name", STRATEGIES)
async def test_the_other_spelling_is_accepted_and_answered_canonically(
    client: Any, trained: OrgKeys, name: str
) -> None:
    other = name.replace("-", "_") if "-" in name else name.replace("_", "-")
    body = {**_inputs(name), "strategy": other}
    data = await recommend(client, trained, **body, limit=3)
    assert data["strategy"] == name


async def test_default_strategy_is_personalized(client: Any, trained: OrgKeys) -> None:
    data = await recommend(client, trained, user_id="u01")
    assert data["strategy"] == "personalized"
    assert data["pagination"] == {**data["pagination"], "page": 1, "limit": 20}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"strategy": "nope"}, "Unknown strategy"),
        ({"strategy": "popular", "limit": 0}, "limit"),
        ({"strategy": "popular", "limit": 101}, "limit"),
        ({"strategy": "popular", "page": 0}, "page"),
        ({"strategy": "popular", "filters": {"price": {"between": [1, 2]}}}, "unknown operator"),
        ({"strategy": "popular", "filters": {"price": {"gte": "cheap"}}}, "finite number"),
        ({"strategy": "popular", "filters": "category=shoes"}, "filters"),
    ],
)
async def test_bad_requests_are_400(client: Any, trained: OrgKeys, body: dict[str, Any], needle: str) -> None:
    response = await client.post("/v1/recommend", json=body, headers=trained.pk)
    assert response.status_code == 400
    payload = response.json()
    assert payload["success"] is False
    assert needle in str(payload["message"]) + str(payload["error"])


async def test_secret_key_is_refused_on_recommend(client: Any, trained: OrgKeys) -> None:
    response = await client.post("/v1/recommend", json={"strategy": "popular"}, headers=trained.sk)
    assert response.status_code == 403


async def test_response_carries_identity_and_timing(client: Any, trained: OrgKeys) -> None:
    data = await recommend(client, trained, strategy="popular", limit=3)
    assert data["tenant_id"] == trained.slug
    assert data["domain"] == "commerce"
    assert len(data["recommendation_id"]) == 36
    assert data["latency_ms"] > 0
    assert data["model_version"]
