"""What a train reads: canonical user ids, weights from the settings, hidden users left out, the
training window; streamed as compact columns (the load that replaced one array_agg per column)."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np
import orjson
import pytest

from app.ml.interactions import CatalogSnapshot, InteractionLog
from app.storage import training_data
from tests.factories import OrgKeys, event, item, user
from workers.train_process import plain_dsn


async def load(settings: Any, org: OrgKeys, **options: Any) -> training_data.TrainingData:
    conn = await asyncpg.connect(plain_dsn(settings.database_url))
    try:
        return await training_data.load(conn, uuid.UUID(org.org_id), event_weights=settings.event_weights,
                                        family_weights=settings.family_weights, **options)
    finally:
        await conn.close()


async def test_training_input_resolves_aliases_weights_and_hides_inactive_users(
    client: Any, org: OrgKeys, settings: Any, drain: Any
) -> None:
    await client.post("/v1/ingest/items/upsert", json=[item("a"), item("b")], headers=org.sk)
    await client.post("/v1/ingest/users/upsert", json=[user("active"), user("gone", status="inactive")],
                      headers=org.sk)
    await client.post("/v1/ingest/events/ingest", json=[
        event("active", "view", "a"),
        event("active", "remove_from_cart", "a"),
        event("gone", "purchase", "b"),
        event("anon", "wishlist", "b", event_family="conversion"),  # custom name: weighted by family
        event("active", "search", context={"query": "socks"}),       # no item: not an interaction
    ], headers=org.pk)
    await client.post("/v1/ingest/events/ingest", json=event("member", "identify", previous_user_id="anon"),
                      headers=org.pk)
    await drain()
    data = await load(settings, org)
    log = data.log
    rows = sorted(zip(log.user_ids.tolist(), log.item_ids.tolist(), log.event_names.tolist(),
                      log.weights.tolist()))
    assert rows == [
        ("active", "a", "remove_from_cart", -2.0),
        ("active", "a", "view", 1.0),
        ("member", "b", "wishlist", 8.0),
    ]
    assert sorted(data.catalog.item_ids.tolist()) == ["a", "b"]


def test_a_big_load_reprs_in_one_short_line() -> None:
    """asyncio.run reprs the result of the task it ran; a generated repr of a million-event
    load spent seconds of every train formatting it."""
    n = 200_000
    log = InteractionLog.build(user_ids=["u"] * n, item_ids=["i"] * n, event_names=["view"] * n,
                               weights=np.ones(n), timestamps=np.zeros(n))
    data = training_data.TrainingData(log, CatalogSnapshot.empty(), training_data.LoadCounts(n, 1, 1, 0, None))
    assert repr(data) == "TrainingData(200000 events, 0 items)"


async def test_a_partial_weight_table_changes_only_the_names_it_lists(
    client: Any, org: OrgKeys, settings: Any, drain: Any, monkeypatch: Any
) -> None:
    """LEHNZ_EVENT_WEIGHTS='{"view": 3}' makes views weigh 3 and leaves every other default
    alone: remove_from_cart stays a negative signal instead of falling to its family's +1."""
    from app.settings import Settings

    monkeypatch.setenv("LEHNZ_EVENT_WEIGHTS", '{"view": 3, "wishlist": 6}')
    monkeypatch.setenv("LEHNZ_FAMILY_WEIGHTS", '{"conversion": 7}')
    tuned = Settings(database_url=settings.database_url, redis_url=settings.redis_url)
    assert tuned.event_weights["remove_from_cart"] == -2.0 and tuned.event_weights["purchase"] == 10.0
    assert tuned.family_weights == {"exposure": 0.0, "engagement": 1.0, "conversion": 7.0, "system": 0.0}

    await client.post("/v1/ingest/events/ingest", json=[
        event("u", "view", "a"),
        event("u", "remove_from_cart", "a"),
        event("u", "purchase", "b"),
        event("u", "wishlist", "b", event_family="engagement"),
        event("u", "preorder", "c", event_family="conversion"),  # not listed: its family's weight
    ], headers=org.pk)
    await drain()
    log = (await load(tuned, org)).log
    assert dict(zip(log.event_names.tolist(), log.weights.tolist(), strict=True)) == {
        "view": 3.0, "remove_from_cart": -2.0, "purchase": 10.0, "wishlist": 6.0, "preorder": 7.0,
    }


# The load the streaming one replaced (one array_agg value per column, capped at 1 GB by
# PostgreSQL), kept here as the reference it must agree with.
_ARRAY_AGG_REFERENCE = """
SELECT array_agg(ev.user_id) AS users, array_agg(ev.item_id) AS items, array_agg(ev.event_name) AS names,
       array_agg(ev.weight) AS weights, array_agg(ev.ts) AS timestamps, array_agg(ev.order_id) AS orders,
       array_agg(ev.session_id) AS sessions, array_agg(ev.price) AS prices, array_agg(ev.is_exposure) AS exposures
FROM (
    SELECT coalesce(a.canonical_id, e.user_id) AS user_id, e.item_id, e.event_name,
           coalesce(w.weight, f.weight, 0)::float8 AS weight,
           extract(epoch FROM e.occurred_at)::float8 AS ts,
           e.context->>'order_id' AS order_id,
           e.context->>'session_id' AS session_id,
           CASE WHEN jsonb_typeof(e.context->'price') = 'number'
                THEN (e.context->>'price')::float8 ELSE 'NaN'::float8 END AS price,
           e.event_family = 'exposure' AS is_exposure
    FROM events e
    LEFT JOIN identity_aliases a ON a.org_id = e.org_id AND a.alias_id = e.user_id
    LEFT JOIN unnest($2::text[], $3::float8[]) AS w(name, weight) ON w.name = e.event_name
    LEFT JOIN unnest($4::text[], $5::float8[]) AS f(family, weight) ON f.family = e.event_family
    WHERE e.org_id = $1 AND e.item_id IS NOT NULL
) ev
WHERE NOT EXISTS (
    SELECT 1 FROM users x WHERE x.org_id = $1 AND x.user_id = ev.user_id AND x.status <> 'active'
)
"""
_ITEMS_REFERENCE = "SELECT item_id, item_type, status, attributes::text, extract(epoch FROM created_at)::float8 " \
                   "FROM items WHERE org_id = $1 ORDER BY item_id"
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def shop_events() -> list[dict[str, Any]]:
    """Views, carts, purchases in orders (one order id reused by another user), sessions (one
    empty), prices (one a string), impressions, a custom event name, an item only events know,
    an anonymous shopper who signs in later, and shoppers whose accounts are closed."""
    out = []
    minute = 0.0
    for u in range(6):
        for k, name in enumerate(("view", "click", "add_to_cart", "remove_from_cart", "purchase", "view")):
            minute += 7.5
            context: dict[str, Any] = {"session_id": f"s{u}-{k // 3}"}
            if name in ("add_to_cart", "purchase"):
                context["price"] = 10.0 + u + k / 4
                context["quantity"] = 1 + k % 2
            if name == "purchase":
                context["order_id"] = "o-shared" if u in (1, 2) else f"o{u}"
            out.append(event(f"u{u}", name, f"p{(u + k) % 5}", timestamp=at(minute), context=context))
    out += [
        event("u0", "impression", "p3", event_family="exposure", timestamp=at(1), context={"session_id": ""}),
        event("u1", "wishlist", "ghost", event_family="conversion", timestamp=at(2)),
        event("u2", "view", "p1", timestamp=at(3), context={"price": "12.5", "order_id": 77}),
        event("anon", "view", "p4", timestamp=at(4), context={"session_id": "s-anon"}),
        event("closed", "purchase", "p0", timestamp=at(5), context={"order_id": "o-closed", "price": 9}),
        event("gone", "view", "p0", timestamp=at(6)),
        event("u3", "search", timestamp=at(8), context={"query": "socks"}),
    ]
    return out


async def build_shop(client: Any, org: OrgKeys, drain: Any) -> None:
    items = [item(f"p{i}", attributes={"title": f"thing {i}", "price": 5 + i, "tags": ["x", f"t{i}"]})
             for i in range(5)]
    assert (await client.post("/v1/ingest/items/upsert", json=items, headers=org.sk)).status_code == 202
    users = [user("closed", status="inactive"), user("gone", status="deleted"), user("u0")]
    assert (await client.post("/v1/ingest/users/upsert", json=users, headers=org.sk)).status_code == 202
    assert (await client.post("/v1/ingest/events/ingest", json=shop_events(), headers=org.pk)).status_code == 202
    await drain()
    alias = event("member", "identify", previous_user_id="anon", timestamp=at(90))
    assert (await client.post("/v1/ingest/events/ingest", json=alias, headers=org.pk)).status_code == 202
    await drain()


async def reference_load(settings: Any, org: OrgKeys) -> tuple[dict[str, list[Any]], list[Any]]:
    conn = await asyncpg.connect(plain_dsn(settings.database_url))
    try:
        weights, families = settings.event_weights, settings.family_weights
        row = await conn.fetchrow(_ARRAY_AGG_REFERENCE, uuid.UUID(org.org_id), list(weights), list(weights.values()),
                                  list(families), list(families.values()))
        items = await conn.fetch(_ITEMS_REFERENCE, uuid.UUID(org.org_id))
    finally:
        await conn.close()
    return {key: list(row[key] or []) for key in row.keys()}, items  # noqa: SIM118


def same_partition(old: list[Any], new: list[int]) -> bool:
    """Equal ids got equal codes, different ids different codes, missing ids (None, "") -1."""
    pairs = set(zip([None if v in (None, "") else v for v in old], new, strict=True))
    ids = [v for v, _ in pairs if v is not None]
    codes = [c for v, c in pairs if v is not None]
    return all((v is None) == (c == -1) for v, c in pairs) and len(set(ids)) == len(ids) == len(set(codes))


async def test_the_streamed_load_equals_the_array_agg_load_it_replaced(
    client: Any, org: OrgKeys, settings: Any, drain: Any, monkeypatch: Any
) -> None:
    await build_shop(client, org, drain)
    old, old_items = await reference_load(settings, org)
    # Tiny blocks: rows straddle the COPY blocks they are parsed in, ids the arrays they arrive in.
    monkeypatch.setattr(training_data, "_PARSE_BYTES", 100)
    monkeypatch.setattr(training_data, "_VOCAB_CHUNK", 3)
    monkeypatch.setattr(training_data, "_CATALOG_CHUNK", 2)
    data = await load(settings, org)
    log = data.log

    new_rows = list(zip(log.user_ids.tolist(), log.item_ids.tolist(), log.event_names.tolist(),
                        log.weights.tolist(), log.timestamps.tolist(), log.orders.tolist(), log.sessions.tolist(),
                        log.prices.tolist(), log.is_exposure.tolist(), strict=True))
    old_rows = list(zip(old["users"], old["items"], old["names"], old["weights"], old["timestamps"], old["orders"],
                        old["sessions"], old["prices"], old["exposures"], strict=True))
    assert len(old_rows) == len(new_rows) == 40
    new_rows.sort(key=lambda r: (r[0], r[4]))
    old_rows.sort(key=lambda r: (r[0], r[4]))
    for new, ref in zip(new_rows, old_rows):
        assert new[:5] == ref[:5] and new[8] == ref[8]
        assert (math.isnan(new[7]) and math.isnan(ref[7])) or new[7] == pytest.approx(ref[7], rel=1e-6)
    assert same_partition([r[5] for r in old_rows], [r[5] for r in new_rows])
    assert same_partition([r[6] for r in old_rows], [r[6] for r in new_rows])
    assert {"member", "u1", "u2"} <= set(log.user_vocab.tolist()) and "closed" not in log.user_vocab
    assert log.user_vocab.tolist() == sorted(log.user_vocab.tolist())  # the universe itself, in row order
    assert log.item_vocab.tolist() == ["ghost", "p0", "p1", "p2", "p3", "p4"]
    assert log.is_purchase.tolist() == [n == "purchase" for n in log.event_names.tolist()]

    catalog = data.catalog
    assert catalog.item_ids.tolist() == [r[0] for r in old_items]
    assert list(catalog.attributes) == [orjson.loads(r[3]) for r in old_items]
    assert catalog.statuses.tolist() == [r[2] for r in old_items] and catalog.created_at.tolist() == [
        r[4] for r in old_items]
    assert data.counts == training_data.LoadCounts(40, len(log.user_vocab), 6, 0, None)


async def test_the_events_arrive_as_rows_not_as_one_value_per_column(client: Any, org: OrgKeys, settings: Any,
                                                                      drain: Any) -> None:
    """No aggregate builds a column in one value (PostgreSQL caps a value at 1 GB, which 25M
    UUID user ids reach): the events query's plan has no Aggregate above the events scan."""
    conn = await asyncpg.connect(plain_dsn(settings.database_url))
    try:
        async with conn.transaction():
            await conn.execute(training_data._TEMP_TABLES)
            plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {training_data._EVENTS}", uuid.UUID(org.org_id),
                                       -math.inf)
    finally:
        await conn.close()
    nodes = []

    def walk(node: dict[str, Any]) -> None:
        nodes.append(node["Node Type"])
        for child in node.get("Plans", []):
            walk(child)

    walk(orjson.loads(plan)[0]["Plan"])
    assert "Seq Scan" in nodes or "Index Scan" in nodes or "Bitmap Heap Scan" in nodes
    assert not [n for n in nodes if "Aggregate" in n], nodes
    assert "array_agg" not in training_data._EVENTS


async def test_the_window_reads_the_newest_whole_hours_and_keeps_the_rest_stored(
    client: Any, org: OrgKeys, settings: Any, drain: Any, db: Any
) -> None:
    # Three events in the newest hour, two in each of the two hours before, one 40 days earlier.
    minutes = [-10, -20, -30, -70, -80, -130, -140, -40 * 24 * 60]
    events = [event(f"u{k}", "view", f"p{k % 3}", timestamp=at(12 * 60 + 50 + m)) for k, m in enumerate(minutes)]
    # An inactive user's events are not read, so they take no place in the window either.
    events += [event("gone", "view", "p0", timestamp=at(12 * 60 + 50 - m)) for m in (5, 15)]
    assert (await client.post("/v1/ingest/users/upsert", json=[user("gone", status="inactive")],
                              headers=org.sk)).status_code in (200, 202)
    assert (await client.post("/v1/ingest/events/ingest", json=events, headers=org.pk)).status_code == 202
    await drain()

    def window(**limits: Any) -> training_data.TrainingWindow:
        return training_data.TrainingWindow(**limits)

    everything = await load(settings, org)
    assert len(everything.log) == 8 and everything.counts.left_out == 0
    five = await load(settings, org, window=window(max_events=5))
    assert sorted(five.log.user_ids.tolist()) == ["u0", "u1", "u2", "u3", "u4"]
    assert five.counts.left_out == 3 and five.counts.users == 5
    assert five.log.user_vocab.tolist() == ["u0", "u1", "u2", "u3", "u4"], "users of older events are not rows"
    assert len((await load(settings, org, window=window(max_events=4))).log) == 3, "whole hours only"
    assert len((await load(settings, org, window=window(max_events=1))).log) == 3, "at least the newest hour"
    month = await load(settings, org, window=window(max_age_days=30))
    assert len(month.log) == 7 and "u7" not in month.log.user_vocab
    assert month.counts.since == pytest.approx((T0 + timedelta(minutes=12 * 60 + 40)).timestamp() - 30 * 86400)
    async with db() as session:
        from sqlalchemy import text

        stored = await session.scalar(text("SELECT count(*) FROM events WHERE org_id = :o"), {"o": org.org_id})
    assert stored == 10, "the window limits what a train reads, never what is stored"


def test_a_window_limit_is_never_negative() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        training_data.TrainingWindow(max_events=-1)
