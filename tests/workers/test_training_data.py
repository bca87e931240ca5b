"""What a train reads: canonical user ids, weights from the settings, hidden users left out."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from app.storage import training_data
from tests.factories import OrgKeys, event, item, user
from workers.train_process import interaction_log, plain_dsn


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
    conn = await asyncpg.connect(plain_dsn(settings.database_url))
    try:
        raw = await training_data.load(conn, uuid.UUID(org.org_id), event_weights=settings.event_weights,
                                       family_weights=settings.family_weights)
    finally:
        await conn.close()
    log = interaction_log(raw)
    rows = sorted(zip(log.user_ids.tolist(), log.item_ids.tolist(), log.event_names.tolist(),
                      log.weights.tolist()))
    assert rows == [
        ("active", "a", "remove_from_cart", -2.0),
        ("active", "a", "view", 1.0),
        ("member", "b", "wishlist", 8.0),
    ]
    assert sorted(raw.items[i][0] for i in range(len(raw.items))) == ["a", "b"]


def test_a_big_load_reprs_in_one_short_line() -> None:
    """asyncio.run reprs the result of the task it ran; a generated repr of a million-event
    load spent seconds of every train formatting it."""
    n = 200_000
    raw = training_data.RawTrainingData(events={"users": ["u"] * n, "items": ["i"] * n}, items=[])
    assert repr(raw) == "RawTrainingData(200000 events, 0 items)"
