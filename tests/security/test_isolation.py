"""Cross-org isolation on every endpoint (API.md section 1: no request can read or change another
org's data). Ids that exist in another org behave exactly like ids that exist nowhere."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import func, select

from app import redis_keys
from app.recommend.registry import ITEM, ITEM_OR_CATEGORY, REGISTRY, USER
from app.storage.tables import Event, IdentityAlias, Item, User
from tests.factories import OrgKeys, create_org, event, item, user
from tests.recommend.conftest import build_world
from tests.waiting import eventually

EVENTS = "/v1/ingest/events/ingest"
RECOMMEND = "/v1/recommend"
NOW = datetime.now(UTC)
SHARED = ["shared-0", "shared-1", "shared-2"]  # item ids both orgs use, with different attributes


@dataclass(frozen=True)
class World:
    org: OrgKeys
    items: dict[str, dict[str, Any]]  # item_id -> attributes
    users: list[str]


def _world(prefix: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    item_ids = [f"{prefix}{k}" for k in range(10)] + SHARED
    items = [
        item(i, attributes={"owner": prefix, "category": f"{prefix}-cat{k % 2}", "price": 10 + k})
        for k, i in enumerate(item_ids)
    ]
    users = [user(f"{prefix}-u{n}") for n in range(8)]
    events = []
    for n in range(8):
        start = NOW - timedelta(days=n % 3 + 1)
        for step in range(6):
            target = item_ids[(n * 3 + step) % len(item_ids)]
            when = (start + timedelta(minutes=2 * step)).isoformat()
            events.append(event(f"{prefix}-u{n}", "view", target, timestamp=when))
        bought = item_ids[(n * 5) % len(item_ids)]
        events.append(
            event(
                f"{prefix}-u{n}",
                "purchase",
                bought,
                timestamp=(start + timedelta(minutes=20)).isoformat(),
                context={"order_id": f"{prefix}-o{n}", "price": 10},
            )
        )
    return items, users, events


@pytest_asyncio.fixture(scope="module")
async def worlds(client: Any, db: Any, drain: Any) -> tuple[World, World]:
    """Two trained orgs: "a" (ours) and "b" (theirs). b's users also touched ids that only exist in a."""
    built = []
    for prefix in ("a", "b"):
        org = await create_org(db, name=f"isolation {prefix}")
        items, users, events = _world(prefix)
        if prefix == "b":
            events += [
                event("b-u0", "view", "a3"),
                event("b-u0", "purchase", "a4", context={"order_id": "x"}),
                event("b-u1", "view", "shared-1"),
            ]
        await build_world(client, org, drain, items=items, users=users, events=events)
        built.append(
            World(org, {r["item_id"]: r["attributes"] for r in items}, [u["user_id"] for u in users])
        )
    return built[0], built[1]


def _inputs(name: str, *, user_id: str, item_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {"strategy": name, "limit": 50}
    if REGISTRY[name].requires == USER:
        body["user_id"] = user_id
    if REGISTRY[name].requires in (ITEM, ITEM_OR_CATEGORY):
        body["context_item_id"] = item_id
    return body


async def _recommend(client: Any, org: OrgKeys, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(RECOMMEND, json=body, headers=org.pk)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["tenant_id"] == org.slug
    return data


@pytest.mark.parametrize("name", sorted(REGISTRY))
async def test_recommendations_only_ever_hold_own_items_and_own_metadata(
    client: Any, worlds: tuple[World, World], name: str
) -> None:
    ours, theirs = worlds
    for user_id, item_id in (("a-u1", "a2"), ("b-u0", "b2"), ("b-u1", "shared-1")):
        data = await _recommend(client, ours.org, _inputs(name, user_id=user_id, item_id=item_id))
        for result in data["results"]:
            assert result["item_id"] in ours.items, result
            assert result["metadata"] == ours.items[result["item_id"]], result
        # and the other way round
        data = await _recommend(client, theirs.org, _inputs(name, user_id=user_id, item_id=item_id))
        assert {r["item_id"] for r in data["results"]} <= set(theirs.items)
        assert all(r["metadata"]["owner"] == "b" for r in data["results"])


@pytest.mark.parametrize("name", sorted(n for n, s in REGISTRY.items() if s.requires == USER))
async def test_another_orgs_user_is_a_stranger(client: Any, worlds: tuple[World, World], name: str) -> None:
    """b-u0 has a history in b (including ids that exist in a): in a, no trace of it is used."""
    ours, _ = worlds
    theirs_user = await _recommend(client, ours.org, _inputs(name, user_id="b-u0", item_id=""))
    nobody = await _recommend(
        client, ours.org, _inputs(name, user_id=f"nobody-{uuid.uuid4().hex}", item_id="")
    )
    assert theirs_user["mode"] == nobody["mode"] == "fallback"
    assert theirs_user["recommended_items"] == nobody["recommended_items"]
    assert [r["reason"] for r in theirs_user["results"]] == [r["reason"] for r in nobody["results"]]


@pytest.mark.parametrize(
    "name", sorted(n for n, s in REGISTRY.items() if s.requires in (ITEM, ITEM_OR_CATEGORY))
)
async def test_another_orgs_item_is_an_unknown_context(
    client: Any, worlds: tuple[World, World], name: str
) -> None:
    ours, _ = worlds
    theirs_item = await _recommend(client, ours.org, _inputs(name, user_id="", item_id="b2"))
    nowhere = await _recommend(
        client, ours.org, _inputs(name, user_id="", item_id=f"none-{uuid.uuid4().hex}")
    )
    assert theirs_item["mode"] == nowhere["mode"]
    assert theirs_item["recommended_items"] == nowhere["recommended_items"]


async def test_models_status_counts_only_own_data(
    client: Any, worlds: tuple[World, World], db: Any, redis: Any, drain: Any
) -> None:
    ours, theirs = worlds
    before = (await client.get("/v1/models/status", headers=ours.org.sk)).json()["data"]
    async with db() as session:
        own_events = await session.scalar(
            select(func.count()).select_from(Event).where(Event.org_id == uuid.UUID(ours.org.org_id))
        )
    assert before["stored"] == {"items": len(ours.items), "users": len(ours.users), "events": own_events}
    assert before["model"]["items"] <= len(ours.items) and before["model"]["users"] <= len(ours.users)
    # Their queued jobs and a train of theirs are not ours.
    assert (
        await client.post(EVENTS, json=[event("b-u3", "view", "b1")] * 3, headers=theirs.org.pk)
    ).status_code == 202
    await redis.set(redis_keys.training(theirs.org.org_id), "1", ex=30)
    during = (await client.get("/v1/models/status", headers=ours.org.sk)).json()["data"]
    theirs_during = (await client.get("/v1/models/status", headers=theirs.org.sk)).json()["data"]
    assert (during["queue_depth"], during["training"]) == (0, False)
    assert (theirs_during["queue_depth"], theirs_during["training"]) == (1, True)
    await redis.delete(redis_keys.training(theirs.org.org_id))
    await drain()
    after = (await client.get("/v1/models/status", headers=ours.org.sk)).json()["data"]
    assert after["stored"] == before["stored"] and after["model"] == before["model"]


async def test_another_orgs_events_on_our_item_ids_never_reach_our_models(
    client: Any, worlds: tuple[World, World], drain: Any
) -> None:
    """b floods purchases of an id that is one of a's items and both retrain: a learns nothing of it,
    and a's train leaves b's model alone."""
    ours, theirs = worlds
    popular = {"strategy": "popular", "limit": 50}
    before = await _recommend(client, ours.org, popular)
    ours_before = (await client.get("/v1/models/status", headers=ours.org.sk)).json()["data"]["model"]
    flood = [event(f"b-flood-{n}", "purchase", "a9", context={"order_id": f"f{n}"}) for n in range(300)]
    assert (await client.post(EVENTS, json=flood, headers=theirs.org.pk)).status_code == 202
    await drain()
    assert (await client.post("/v1/models/train", headers=theirs.org.sk)).status_code == 202
    await drain()
    theirs_before = (await client.get("/v1/models/status", headers=theirs.org.sk)).json()["data"]["model"]

    assert (await client.post("/v1/models/train", headers=ours.org.sk)).status_code == 202
    await drain()
    ours_after = (await client.get("/v1/models/status", headers=ours.org.sk)).json()["data"]["model"]
    assert ours_after["version"] != ours_before["version"]
    assert {k: ours_after[k] for k in ("items", "users", "interactions")} == {
        k: ours_before[k] for k in ("items", "users", "interactions")
    }

    async def serving_new_version() -> bool:
        return (await _recommend(client, ours.org, popular))["model_version"] == ours_after["version"]

    await eventually(serving_new_version)
    after = await _recommend(client, ours.org, popular)
    assert after["recommended_items"] == before["recommended_items"]
    theirs_after = (await client.get("/v1/models/status", headers=theirs.org.sk)).json()["data"]["model"]
    assert theirs_after == theirs_before


async def test_analytics_never_count_another_orgs_recommendations_or_events(
    client: Any, app: Any, org: OrgKeys, other_org: OrgKeys, drain: Any
) -> None:
    await client.post("/v1/ingest/items/upsert", json=[item("x"), item("y")], headers=org.sk)
    await client.post("/v1/ingest/items/upsert", json=[item("x"), item("y")], headers=other_org.sk)
    await drain()
    ours = (await client.post(RECOMMEND, json={"strategy": "popular"}, headers=org.pk)).json()["data"]
    theirs = (await client.post(RECOMMEND, json={"strategy": "new-arrivals"}, headers=other_org.pk)).json()[
        "data"
    ]
    await app.state.lehnz.served_log.flush()

    def outcomes(rid: str) -> list[dict[str, Any]]:
        return [
            {
                "user_id": "u",
                "event_family": "exposure",
                "event_name": "impression",
                "item_id": "x",
                "recommendation_id": rid,
            },
            event("u", "click", "x", recommendation_id=rid),
            event("u", "purchase", "x", recommendation_id=rid, context={"price": 100, "quantity": 3}),
        ]

    # Each org sends events that carry the OTHER org's recommendation id (and one of its own).
    assert (
        await client.post(
            EVENTS,
            json=outcomes(theirs["recommendation_id"])
            + [event("u", "click", "y", recommendation_id=ours["recommendation_id"])],
            headers=org.pk,
        )
    ).status_code == 202
    assert (
        await client.post(EVENTS, json=outcomes(ours["recommendation_id"]), headers=other_org.pk)
    ).status_code == 202
    await drain()

    mine = (await client.get("/v1/analytics/recommendations", headers=org.sk)).json()["data"]
    assert [s["strategy"] for s in mine["strategies"]] == ["popular"]
    assert {k: mine["totals"][k] for k in ("served", "exposures", "clicks", "conversions", "revenue")} == {
        "served": 1,
        "exposures": 0,
        "clicks": 1,
        "conversions": 0,
        "revenue": 0.0,
    }
    other = (await client.get("/v1/analytics/recommendations", headers=other_org.sk)).json()["data"]
    assert [s["strategy"] for s in other["strategies"]] == ["new-arrivals"]
    assert {k: other["totals"][k] for k in ("served", "exposures", "clicks", "conversions", "revenue")} == {
        "served": 1,
        "exposures": 0,
        "clicks": 0,
        "conversions": 0,
        "revenue": 0.0,
    }


async def test_erasing_another_orgs_user_leaves_their_data_untouched(
    client: Any, org: OrgKeys, other_org: OrgKeys, db: Any, redis: Any, drain: Any
) -> None:
    await client.post("/v1/ingest/items/upsert", json=[item("i1"), item("i2")], headers=other_org.sk)
    await client.post("/v1/ingest/users/upsert", json=user("victim"), headers=other_org.sk)
    await client.post(
        EVENTS, json=[event("anon-v", "view", "i1"), event("victim", "view", "i2")], headers=other_org.pk
    )
    await drain()
    await client.post(
        EVENTS, json=event("victim", "identify", previous_user_id="anon-v"), headers=other_org.pk
    )
    await client.post(EVENTS, json=event("mine", "view", "i1"), headers=org.pk)
    await drain()

    async def snapshot() -> tuple[Any, ...]:
        theirs = uuid.UUID(other_org.org_id)
        async with db() as session:
            events = await session.scalar(
                select(func.count()).select_from(Event).where(Event.org_id == theirs)
            )
            users = await session.scalar(select(func.count()).select_from(User).where(User.org_id == theirs))
            aliases = await session.scalar(
                select(func.count()).select_from(IdentityAlias).where(IdentityAlias.org_id == theirs)
            )
        recent = await redis.zrange(redis_keys.recent(other_org.org_id, "victim"), 0, -1)
        alias_map = await redis.hgetall(redis_keys.aliases(other_org.org_id))
        return events, users, aliases, sorted(recent), alias_map

    before = await snapshot()
    assert before[:3] == (3, 1, 1) and len(before[3]) == 2
    for user_id in ("victim", "anon-v"):
        response = await client.delete(f"/v1/users/{user_id}", headers=org.sk)
        assert response.status_code == 202  # unknown here: accepted, and nothing of theirs changes
    await drain()
    assert await snapshot() == before
    assert await redis.hget(redis_keys.erased(other_org.org_id), "victim") is None
    viewed = await client.post(
        RECOMMEND, json={"strategy": "recently-viewed", "user_id": "victim"}, headers=other_org.pk
    )
    assert sorted((r["item_id"], r["reason"]) for r in viewed.json()["data"]["results"]) == [
        ("i1", "recently_viewed"),
        ("i2", "recently_viewed"),
    ]


async def test_upserts_with_the_same_ids_only_touch_the_senders_rows(
    client: Any, org: OrgKeys, other_org: OrgKeys, db: Any, drain: Any
) -> None:
    await client.post(
        "/v1/ingest/items/upsert", json=item("same", attributes={"v": "theirs"}), headers=other_org.sk
    )
    await client.post(
        "/v1/ingest/users/upsert", json=user("same", attributes={"v": "theirs"}), headers=other_org.sk
    )
    await drain()
    await client.post(
        "/v1/ingest/items/upsert",
        json=item("same", status="deleted", attributes={"v": "ours"}),
        headers=org.sk,
    )
    await client.post(
        "/v1/ingest/users/upsert",
        json=user("same", status="deleted", attributes={"v": "ours"}),
        headers=org.sk,
    )
    await drain()
    async with db() as session:
        their_item = await session.get(Item, (uuid.UUID(other_org.org_id), "same"))
        their_user = await session.get(User, (uuid.UUID(other_org.org_id), "same"))
    assert (their_item.status, their_item.attributes) == ("active", {"v": "theirs"})
    assert (their_user.status, their_user.attributes) == ("active", {"v": "theirs"})


def _ip() -> str:
    n = uuid.uuid4().int
    return f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}"


async def _account(client: Any) -> dict[str, Any]:
    email, password = f"iso-{uuid.uuid4().hex[:10]}@example.com", "isolation passphrase"
    registered = await client.post(
        "/auth/register", json={"email": email, "password": password, "org_name": "Iso"}
    )
    assert registered.status_code == 201, registered.text
    login = await client.post("/auth/login", json={"email": email, "password": password})
    return {
        **registered.json()["data"],
        "bearer": {"Authorization": f"Bearer {login.json()['data']['token']}"},
    }


async def test_keys_list_only_own_pairs_and_another_orgs_key_cannot_be_revoked(app_with: Any) -> None:
    async with app_with(client_ip=_ip()) as client:
        ours, theirs = await _account(client), await _account(client)
        extra = (await client.post("/v1/keys", headers=ours["bearer"])).json()["data"]

        listed = (await client.get("/v1/keys", headers=ours["bearer"])).json()["data"]
        assert {k["key_id"] for k in listed} == {ours["key_id"], extra["key_id"]}
        their_list = (await client.get("/v1/keys", headers=theirs["bearer"])).json()["data"]
        assert [k["key_id"] for k in their_list] == [theirs["key_id"]]

        refused = await client.delete(f"/v1/keys/{theirs['key_id']}", headers=ours["bearer"])
        assert refused.status_code == 404 and refused.json()["success"] is False
        theirs_sk = {"X-API-KEY": theirs["secret_key"]}
        assert (await client.get("/v1/models/status", headers=theirs_sk)).status_code == 200
        assert [
            k["revoked_at"] for k in (await client.get("/v1/keys", headers=theirs["bearer"])).json()["data"]
        ] == [None]
        # A pair made with our session belongs to our org.
        made = await client.post(
            RECOMMEND, json={"strategy": "popular"}, headers={"X-API-KEY": extra["publishable_key"]}
        )
        assert made.json()["data"]["tenant_id"] == ours["tenant_id"]
