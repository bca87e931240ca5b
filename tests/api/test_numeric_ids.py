"""Integer ids, as shop platforms send them: `"item_id": 123` is the item "123" everywhere.

Most platforms number their products and customers and put those numbers in their JSON as
numbers. An integer id is accepted wherever an id is (items, users, events, recommend and its
`exclude_item_ids`) and stored as its decimal string, so `123` and `"123"` are one item; a
float (`123.0` included), a boolean or an object is still a 400 naming the field.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from app import redis_keys
from app.storage.tables import Event, IdentityAlias, Item, User
from tests.factories import OrgKeys
from tests.recommend.conftest import build_world, ids, recommend

ITEMS = "/v1/ingest/items/upsert"
USERS = "/v1/ingest/users/upsert"
EVENTS = "/v1/ingest/events/ingest"


def _item(item_id: Any, **attributes: Any) -> dict[str, Any]:
    return {"item_id": item_id, "item_type": "product", "status": "active", "attributes": attributes}


async def _rows(db: Any, org: OrgKeys, *columns: Any) -> list[tuple[Any, ...]]:
    table = columns[0].class_
    async with db() as session:
        result = await session.execute(select(*columns).where(table.org_id == uuid.UUID(org.org_id)))
        return sorted(tuple(row) for row in result.all())


async def test_integer_ids_are_stored_as_their_decimal_string(
    client: Any, org: OrgKeys, db: Any, redis: Any, drain: Any
) -> None:
    assert (await client.post(ITEMS, json=[_item(123, v=1), _item(7)], headers=org.sk)).status_code == 202
    await drain()
    # The same item named as a string: an upsert of the one row, not a second item.
    assert (await client.post(ITEMS, json=_item("123", v=2), headers=org.sk)).status_code == 202
    users = {"user_id": 42, "status": "active", "created_at": "2026-01-01T00:00:00Z"}
    assert (await client.post(USERS, json=users, headers=org.sk)).status_code == 202
    events = [
        {"user_id": 9001, "event_family": "engagement", "event_name": "view", "item_id": 7},
        {"user_id": 42, "event_family": "system", "event_name": "identify", "previous_user_id": 9001},
        {"user_id": 42, "event_family": "conversion", "event_name": "purchase", "item_id": 123},
        {"user_id": -5, "event_family": "engagement", "event_name": "view", "item_id": 18446744073709551615},
    ]
    response = await client.post(EVENTS, json=events, headers=org.pk)
    assert response.status_code == 202, response.text
    await drain()

    assert await _rows(db, org, Item.item_id, Item.attributes) == [("123", {"v": 2}), ("7", {})]
    assert await _rows(db, org, User.user_id) == [("42",)]
    assert await _rows(db, org, Event.user_id, Event.event_name, Event.item_id) == [
        ("-5", "view", "18446744073709551615"),
        ("42", "identify", None),
        ("42", "purchase", "123"),
        ("9001", "view", "7"),
    ]
    assert await _rows(db, org, IdentityAlias.alias_id, IdentityAlias.canonical_id) == [("9001", "42")]
    recent = await redis.zrange(redis_keys.recent(org.org_id, "42"), 0, -1)
    assert sorted(orjson.loads(m)["i"] for m in recent) == ["123", "7"]  # the anonymous view came along


@pytest.mark.parametrize(
    ("path", "record", "field"),
    [
        (ITEMS, _item(123.0), "item_id"),
        (ITEMS, _item(1e3), "item_id"),
        (ITEMS, _item(True), "item_id"),
        (USERS, {"user_id": {"id": 42}, "status": "active", "created_at": "2026-01-01T00:00:00Z"}, "user_id"),
        (EVENTS, {"user_id": 42.5, "event_family": "engagement", "event_name": "view"}, "user_id"),
        (EVENTS, {"user_id": 1, "event_family": "engagement", "event_name": "view", "item_id": False}, "item_id"),
        (EVENTS, {"user_id": 1, "event_family": "system", "event_name": "identify", "previous_user_id": [2]},
         "previous_user_id"),
    ],
)
async def test_floats_booleans_and_objects_are_still_400_naming_the_field(
    client: Any, org: OrgKeys, redis: Any, path: str, record: dict[str, Any], field: str
) -> None:
    headers = org.pk if path == EVENTS else org.sk
    response = await client.post(path, json=[record], headers=headers)
    assert response.status_code == 400, response.text
    kind = path.split("/")[3]
    assert {"field": f"{kind}[0].{field}", "issue": "must be a string or an integer"} in response.json()["error"]
    assert await redis.zcard(redis_keys.pending(org.org_id)) == 0


async def test_an_identify_between_42_and_the_string_42_links_an_id_to_itself_and_is_400(
    client: Any, org: OrgKeys
) -> None:
    same = {"user_id": 42, "event_family": "system", "event_name": "identify", "previous_user_id": "42"}
    response = await client.post(EVENTS, json=same, headers=org.pk)
    assert response.status_code == 400
    assert response.json()["error"] == [{"field": "(record)", "issue": "previous_user_id must differ from user_id"}]


async def test_recommend_takes_integer_ids_as_the_same_ids_as_strings(
    client: Any, org: OrgKeys, drain: Any
) -> None:
    items = [_item(n, category="c") for n in (1, 2, 3, 4)]
    views = [{"user_id": 42, "event_family": "engagement", "event_name": "view", "item_id": n,
              "timestamp": f"2026-12-01T10:00:0{n}Z"} for n in (1, 2, 3)]
    await build_world(client, org, drain, items=items, events=views, train=False)

    as_numbers = await recommend(client, org, strategy="recently-viewed", user_id=42,
                                 filters={"exclude_item_ids": [2]})
    as_strings = await recommend(client, org, strategy="recently-viewed", user_id="42",
                                 filters={"exclude_item_ids": ["2"]})
    assert ids(as_numbers) == ids(as_strings) and ids(as_numbers)[:2] == ["3", "1"]
    assert "2" not in ids(as_numbers)
    similar = await recommend(client, org, strategy="similar", context_item_id=4)
    assert "4" not in ids(similar) and len(ids(similar)) == 3  # the context item is known as "4"
    response = await client.post("/v1/recommend", json={"strategy": "popular", "filters": {"exclude_item_ids": [2.0]}},
                                 headers=org.pk)
    assert response.status_code == 400 and response.json()["error"][0]["field"] == "filters.exclude_item_ids"


async def test_analytics_and_erasure_find_what_integer_ids_named(
    client: Any, app: Any, org: OrgKeys, db: Any, drain: Any
) -> None:
    await build_world(client, org, drain, items=[_item(123)], events=[], train=False)
    served = await recommend(client, org, strategy="new-arrivals", user_id=42)
    assert ids(served) == ["123"]
    await app.state.lehnz.served_log.flush()
    rid = served["recommendation_id"]
    events = [
        {"user_id": 42, "event_family": "engagement", "event_name": "click", "item_id": 123, "recommendation_id": rid},
        {"user_id": 42, "event_family": "conversion", "event_name": "purchase", "item_id": 123,
         "recommendation_id": rid, "context": {"order_id": 555, "price": 20, "quantity": 2}},
    ]
    assert (await client.post(EVENTS, json=events, headers=org.pk)).status_code == 202
    await drain()
    totals = (await client.get("/v1/analytics/recommendations", headers=org.sk)).json()["data"]["totals"]
    assert (totals["served"], totals["clicks"], totals["conversions"], totals["revenue"]) == (1, 1, 1, 40.0)

    # DELETE /v1/users/42 erases what was sent as "user_id": 42.
    assert (await client.delete("/v1/users/42", headers=org.sk)).status_code == 202
    await drain()
    assert await _rows(db, org, Event.user_id) == []


async def test_the_openapi_document_declares_integer_ids(client: Any) -> None:
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    declared = {
        ("ItemIn", "item_id"), ("UserIn", "user_id"), ("EventIn", "user_id"), ("EventIn", "item_id"),
        ("EventIn", "previous_user_id"), ("RecommendIn", "user_id"), ("RecommendIn", "context_item_id"),
    }
    for model, field in declared:
        schema = schemas[model]["properties"][field]
        assert {"type": "integer", "minimum": -(2**63), "maximum": 2**64 - 1} in schema["anyOf"], (model, schema)
        assert {"type": "string", "minLength": 1, "maxLength": 256} in schema["anyOf"], (model, schema)
