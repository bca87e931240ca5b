"""Hostile values through the real HTTP endpoints (API.md section 2: every refusal is a 4xx envelope).

Huge strings, deep nesting, unicode and NUL bytes, NaN/Infinity and overflowing numbers,
timestamps far away, identify cycles, duplicate keys, a body of a million empty objects and
wrong types everywhere. Every refusal is a 4xx envelope; whatever is accepted is persisted by
the worker without being parked; and the events an org had stored before are all still there.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from sqlalchemy import func, select

from app import redis_keys
from app.storage.tables import Event, IdentityAlias, Item
from tests.factories import OrgKeys, event, item, user
from tests.fuzz.support import parked_errors
from tests.recommend.conftest import build_world
from tests.waiting import eventually

ITEMS = "/v1/ingest/items/upsert"
USERS = "/v1/ingest/users/upsert"
EVENTS = "/v1/ingest/events/ingest"
RECOMMEND = "/v1/recommend"
JSON = {"Content-Type": "application/json"}


def assert_refused(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    """A clean refusal: a 4xx (one of `statuses` when given) in the error envelope."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    if statuses:
        assert response.status_code in statuses, (response.status_code, response.text[:500])
    body = orjson.loads(response.content)
    assert set(body) == {"success", "message", "data", "error"}, body
    assert body["success"] is False and body["data"] is None and body["error"], body
    return body


def assert_clean(response: httpx.Response) -> dict[str, Any]:
    """Accepted or refused, but never a 5xx and always the envelope."""
    assert response.status_code < 500, (response.status_code, response.text[:500])
    body = orjson.loads(response.content)
    assert set(body) == {"success", "message", "data", "error"}, body
    assert body["success"] is (response.status_code < 400), body
    return body


def fields(body: dict[str, Any]) -> set[str]:
    return {e["field"] for e in body["error"]} if isinstance(body["error"], list) else set()


@dataclass
class Canary:
    """Events an org stored before the hostile requests; they must all survive them."""

    org: OrgKeys
    db: Any
    redis: Any
    drain: Any

    async def stored(self, *where: Any) -> int:
        async with self.db() as session:
            return int(
                await session.scalar(
                    select(func.count())
                    .select_from(Event)
                    .where(Event.org_id == uuid.UUID(self.org.org_id), *where)
                )
                or 0
            )

    async def assert_nothing_lost(self) -> None:
        """Whatever was accepted is persisted (nothing parked), and the canary events are intact."""
        await self.drain()
        assert await self.stored(Event.user_id == "canary") == 10
        assert await self.redis.zcard(redis_keys.pending(self.org.org_id)) == 0
        assert await parked_errors(self.redis, self.org.org_id) == []


@pytest_asyncio.fixture
async def canary(client: Any, org: OrgKeys, db: Any, redis: Any, drain: Any) -> Canary:
    batch = [event("canary", "view", f"c{i}") for i in range(10)]
    assert (await client.post(EVENTS, json=batch, headers=org.pk)).status_code == 202
    await drain()
    watch = Canary(org, db, redis, drain)
    assert await watch.stored(Event.user_id == "canary") == 10
    return watch


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- huge strings ----------------------------------------------------------------------------

LONG = "x" * 257


@pytest.mark.parametrize(
    ("path", "record", "field"),
    [
        (ITEMS, item(LONG), "item_id"),
        (ITEMS, item("ok", item_type="t" * 65), "item_type"),
        (USERS, user(LONG), "user_id"),
        (EVENTS, event(LONG, "view", "i"), "user_id"),
        (EVENTS, event("u", "view", LONG), "item_id"),
        (EVENTS, event("u", "identify", previous_user_id=LONG), "previous_user_id"),
        (EVENTS, event("u", "view", "i", recommendation_id="r" * 65), "recommendation_id"),
        (EVENTS, event("u", "e" * 65, "i"), "event_name"),
    ],
)
async def test_ids_over_their_length_limit_are_400_naming_the_field(
    client: Any, canary: Canary, path: str, record: dict[str, Any], field: str
) -> None:
    headers = canary.org.pk if path == EVENTS else canary.org.sk
    body = assert_refused(
        await client.post(path, json=[item("fine"), record] if path == ITEMS else [record], headers=headers),
        400,
    )
    assert any(f.endswith(field) for f in fields(body)), body
    await canary.assert_nothing_lost()


async def test_recommend_and_erase_refuse_ids_over_the_limit(client: Any, canary: Canary) -> None:
    for request in (
        {"strategy": "personalized", "user_id": LONG},
        {"strategy": "similar", "context_item_id": LONG},
    ):
        assert_refused(await client.post(RECOMMEND, json=request, headers=canary.org.pk), 400)
    assert_refused(await client.delete(f"/v1/users/{LONG}", headers=canary.org.sk), 400)
    await canary.assert_nothing_lost()


async def test_a_4mb_attribute_within_the_body_limit_is_accepted_and_stored_whole(
    client: Any, canary: Canary
) -> None:
    blob = "é" * (2 * 1024 * 1024)  # 4 MiB of UTF-8 in one attribute, under the 5 MB body limit
    body = orjson.dumps(item("big", attributes={"blob": blob}))
    assert 4 * 1024 * 1024 < len(body) < 5 * 1024 * 1024
    response = await client.post(ITEMS, content=body, headers={**canary.org.sk, **JSON})
    assert_clean(response)
    await canary.assert_nothing_lost()
    if response.status_code == 202:
        async with canary.db() as session:
            row = await session.get(Item, (uuid.UUID(canary.org.org_id), "big"))
        assert row is not None and row.attributes["blob"] == blob


# --- deep nesting ----------------------------------------------------------------------------


def _nested(levels: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(levels - 1):
        node["x"] = {}
        node = node["x"]
    return root


def _nested_lists(levels: int) -> list[Any]:
    root: list[Any] = ["x"]
    for _ in range(levels - 1):
        root = [root]
    return root


@pytest.mark.parametrize("shape", ["lists", "objects", "unclosed"])
@pytest.mark.parametrize("path", [ITEMS, USERS, EVENTS, RECOMMEND, "/auth/login"])
async def test_10000_levels_of_nesting_are_400(
    client: Any, app_with: Any, canary: Canary, path: str, shape: str
) -> None:
    levels = 10_000
    content = {
        "lists": b"[" * levels + b"]" * levels,
        "objects": b'{"a":' * levels + b"1" + b"}" * levels,
        "unclosed": b"[" * levels,
    }[shape]
    if path.startswith("/auth/"):
        # From an address of its own: the per-IP auth limit (checked before the body) must not
        # depend on how many /auth calls earlier tests made from the shared client's address.
        async with app_with(client_ip=_ip()) as own:
            response = await own.post(path, content=content, headers=JSON)
    else:
        headers = canary.org.pk if path in (EVENTS, RECOMMEND) else canary.org.sk
        response = await client.post(path, content=content, headers={**headers, **JSON})
    assert_refused(response, 400)
    await canary.assert_nothing_lost()


@pytest.mark.parametrize(
    ("path", "record", "field"),
    [
        (ITEMS, item("deep", attributes=_nested(40)), "items[1].attributes"),
        (USERS, user("deep", attributes=_nested(40)), "users[1].attributes"),
        (EVENTS, event("deep", "view", "i", context=_nested(40)), "events[1].context"),
        (ITEMS, item("deep", attributes={"tags": _nested_lists(40)}), "items[1].attributes"),
    ],
)
async def test_40_levels_inside_free_json_are_400(
    client: Any, canary: Canary, path: str, record: dict[str, Any], field: str
) -> None:
    first = {ITEMS: item("fine"), USERS: user("fine"), EVENTS: event("fine", "view", "i")}[path]
    headers = canary.org.pk if path == EVENTS else canary.org.sk
    body = assert_refused(await client.post(path, json=[first, record], headers=headers), 400)
    assert fields(body) == {field}, body
    await canary.assert_nothing_lost()


async def test_deep_filters_are_400(client: Any, canary: Canary) -> None:
    response = await client.post(
        RECOMMEND, json={"strategy": "popular", "filters": {"price": _nested(40)}}, headers=canary.org.pk
    )
    assert_refused(response, 400)


async def test_made_up_filter_keys_are_capped_and_retain_nothing(
    client: Any, app: Any, canary: Canary
) -> None:
    """Filters come from browsers (publishable key). Each attribute key used to build and keep a
    column over the whole catalog: 5,000 made-up keys held ~600 MB for a 10,000-item catalog."""
    org = canary.org
    for start in (0, 1000):
        batch = [
            item(f"m{k}", attributes={"category": f"c{k % 5}", "price": k})
            for k in range(start, start + 1000)
        ]
        assert (await client.post(ITEMS, json=batch, headers=org.sk)).status_code == 202
    await canary.drain()

    async def catalog_settled() -> bool:
        response = await client.post(RECOMMEND, json={"strategy": "new-arrivals"}, headers=org.pk)
        snapshot = app.state.lehnz.models.peek(org.org_id)
        current = await canary.redis.get(redis_keys.catalog_version(org.org_id))
        return (
            response.json()["data"]["pagination"]["total_count"] == 2000
            and snapshot.catalog_version == current
        )

    await eventually(catalog_settled)  # from here on the snapshot's catalog is not replaced
    too_many = {f"made-up-{n}": "x" for n in range(1000)}
    body = assert_refused(
        await client.post(RECOMMEND, json={"strategy": "popular", "filters": too_many}, headers=org.pk), 400
    )
    assert fields(body) == {"filters"}

    real = await client.post(
        RECOMMEND, json={"strategy": "new-arrivals", "filters": {"category": "c1"}}, headers=org.pk
    )
    assert real.json()["data"]["pagination"]["total_count"] == 400
    catalog = app.state.lehnz.models.peek(org.org_id).catalog
    kept = len(catalog._columns)  # white box: the per-catalog column cache
    for round_ in range(20):
        made_up = {f"k{round_}-{n}": "x" for n in range(32)}
        response = await client.post(
            RECOMMEND, json={"strategy": "new-arrivals", "filters": made_up}, headers=org.pk
        )
        assert response.status_code == 200 and response.json()["data"]["pagination"]["total_count"] == 0
    assert app.state.lehnz.models.peek(org.org_id).catalog is catalog
    assert len(catalog._columns) == kept


# --- unicode ---------------------------------------------------------------------------------

UNICODE_IDS = [
    "😀🛒",  # emoji (astral plane)
    "👩‍👩‍👧‍👦",  # ZWJ sequence
    "مرحبا-١٢٣",  # RTL (Arabic, Arabic-Indic digits)
    "\u202eevil\u202c",  # right-to-left override
    "e\u0301",  # combining mark (NFD)
    "é",  # the same glyph precomposed (NFC): a different id
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",  # mathematical alphanumerics (astral plane)
    "ａｂｃ",  # full-width
    "zero\u200bwidth",
    " padded ",
]


async def test_unicode_ids_and_attributes_round_trip_unchanged(
    client: Any, org: OrgKeys, drain: Any, db: Any
) -> None:
    attributes = {
        item_id: {"title": f"«{item_id}» ☕ שלום", "brand": "Ñandú\u0301", "tags": ["🏷️", item_id], "n": 1}
        for item_id in UNICODE_IDS
    }
    users = [f"user-{i}-{uid}" for i, uid in enumerate(UNICODE_IDS)]
    events = [
        event(users[n % len(users)], "view", UNICODE_IDS[(n * 3) % len(UNICODE_IDS)]) for n in range(60)
    ]
    await build_world(
        client, org, drain, items=[item(i, attributes=attributes[i]) for i in UNICODE_IDS], events=events
    )

    async with db() as session:
        stored = dict(
            (
                await session.execute(
                    select(Item.item_id, Item.attributes).where(Item.org_id == uuid.UUID(org.org_id))
                )
            ).all()
        )
        stored_users = set(
            (await session.scalars(select(Event.user_id).where(Event.org_id == uuid.UUID(org.org_id)))).all()
        )
    assert stored == attributes
    assert stored_users == set(users)

    popular = await client.post(RECOMMEND, json={"strategy": "popular", "limit": 100}, headers=org.pk)
    data = popular.json()["data"]
    assert {r["item_id"] for r in data["results"]} == set(UNICODE_IDS)
    for result in data["results"]:
        assert result["metadata"] == attributes[result["item_id"]]

    viewer = users[0]
    seen = {e["item_id"] for e in events if e["user_id"] == viewer}
    recent = await client.post(
        RECOMMEND, json={"strategy": "recently-viewed", "user_id": viewer}, headers=org.pk
    )
    own = {r["item_id"] for r in recent.json()["data"]["results"] if r["reason"] == "recently_viewed"}
    assert own == seen
    for context in ("e\u0301", "é", "😀🛒"):
        similar = await client.post(
            RECOMMEND, json={"strategy": "similar", "context_item_id": context}, headers=org.pk
        )
        assert similar.status_code == 200
        assert context not in similar.json()["data"]["recommended_items"]
    # The filter compares exactly: the NFD id is not the NFC one.
    filtered = await client.post(
        RECOMMEND, json={"strategy": "popular", "filters": {"tags": {"contains": "é"}}}, headers=org.pk
    )
    assert filtered.json()["data"]["recommended_items"] == ["é"]


def _path_segment(user_id: str) -> str:
    """Percent-encode every byte that is not a letter or digit (dots too: no dot-segment games)."""
    return "".join(
        ch if ch.isascii() and ch.isalnum() else "".join(f"%{b:02X}" for b in ch.encode()) for ch in user_id
    )


@pytest.mark.parametrize(
    "user_id",
    [
        "a/b",
        "line\nbreak",
        "carriage\rreturn",
        "tab\there",
        "..",
        "%2F",
        "q?x=1#f",
        "😀",
        "e\u0301",
        " spaced ",
    ],
)
async def test_any_user_id_that_can_be_ingested_can_be_erased(
    client: Any, org: OrgKeys, drain: Any, db: Any, user_id: str
) -> None:
    """GDPR: DELETE /v1/users/{id} reaches every id the events endpoint accepts."""
    batch = [event(user_id, "view", "a"), event(user_id, "purchase", "b"), event("bystander", "view", "a")]
    assert (await client.post(EVENTS, json=batch, headers=org.pk)).status_code == 202
    await drain()
    response = await client.delete(f"/v1/users/{_path_segment(user_id)}", headers=org.sk)
    assert response.status_code == 202, response.text
    assert response.json()["data"]["user_id"] == user_id
    await drain()
    async with db() as session:
        left = dict(
            (
                await session.execute(
                    select(Event.user_id, func.count())
                    .where(Event.org_id == uuid.UUID(org.org_id))
                    .group_by(Event.user_id)
                )
            ).all()
        )
    assert left == {"bystander": 1}


# --- NUL bytes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "record"),
    [
        (ITEMS, item("nul\x00id")),
        (ITEMS, item("x", item_type="pro\x00duct")),
        (ITEMS, item("x", attributes={"k": "v\x00"})),
        (ITEMS, item("x", attributes={"k\x00": "v"})),
        (ITEMS, item("x", attributes={"tags": ["ok", "n\x00"]})),
        (USERS, user("nul\x00")),
        (USERS, user("x", attributes={"segment": "\x00"})),
        (EVENTS, event("u\x00", "view", "i")),
        (EVENTS, event("u", "view", "i\x00")),
        (EVENTS, event("u", "vi\x00ew", "i")),
        (EVENTS, event("u", "identify", previous_user_id="anon\x00")),
        (EVENTS, event("u", "view", "i", recommendation_id="r\x00")),
        (EVENTS, event("u", "view", "i", context={"session_id": "s\x00"})),
    ],
)
async def test_nul_bytes_in_ids_and_free_json_are_400(
    client: Any, canary: Canary, path: str, record: dict[str, Any]
) -> None:
    headers = canary.org.pk if path == EVENTS else canary.org.sk
    assert_refused(await client.post(path, json=record, headers=headers), 400)
    await canary.assert_nothing_lost()


@pytest.mark.parametrize(
    "request_body",
    [
        {"strategy": "personalized", "user_id": "u\x00"},
        {"strategy": "similar", "context_item_id": "i\x00"},
        {"strategy": "popular\x00"},
    ],
)
async def test_nul_bytes_in_recommend_inputs_are_400(
    client: Any, app: Any, canary: Canary, request_body: dict[str, Any]
) -> None:
    """Every served recommendation is logged (user, context item) in Postgres text columns."""
    assert_refused(await client.post(RECOMMEND, json=request_body, headers=canary.org.pk), 400)
    await app.state.lehnz.served_log.flush()
    await canary.assert_nothing_lost()


async def test_a_nul_byte_in_the_erased_user_id_is_400(client: Any, canary: Canary) -> None:
    assert_refused(await client.delete("/v1/users/u%00x", headers=canary.org.sk), 400)


# --- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"nan", b"inf", b"1e400", b"-1e400"])
@pytest.mark.parametrize("path", [ITEMS, EVENTS, RECOMMEND])
async def test_nan_infinity_and_overflowing_numbers_are_400(
    client: Any, canary: Canary, path: str, literal: bytes
) -> None:
    content = {
        ITEMS: b'{"item_id": "n", "item_type": "p", "status": "active", "attributes": {"price": %s}}',
        EVENTS: b'{"user_id": "u", "event_family": "conversion", "event_name": "purchase", "item_id": "i",'
        b' "context": {"price": %s}}',
        RECOMMEND: b'{"strategy": "popular", "filters": {"price": {"lt": %s}}}',
    }[path] % literal
    headers = canary.org.pk if path in (EVENTS, RECOMMEND) else canary.org.sk
    body = assert_refused(await client.post(path, content=content, headers={**headers, **JSON}), 400)
    assert "Malformed JSON" in body["message"]
    await canary.assert_nothing_lost()


async def test_extreme_but_finite_numbers_are_stored_cleanly(client: Any, canary: Canary) -> None:
    attributes = {
        "max": 1.7976931348623157e308,
        "tiny": 5e-324,
        "big_int": 9_223_372_036_854_775_807,
        "neg": -9_223_372_036_854_775_808,
        "huge_int": 18_446_744_073_709_551_615,
    }
    response = await client.post(ITEMS, json=item("num", attributes=attributes), headers=canary.org.sk)
    assert_clean(response)
    underflow = await client.post(
        ITEMS,
        content=b'{"item_id": "u", "item_type": "p", "status": "active",'
        b' "attributes": {"x": 1e-400, "y": 123456789012345678901234567890}}',
        headers={**canary.org.sk, **JSON},
    )
    assert_clean(underflow)
    await canary.assert_nothing_lost()
    async with canary.db() as session:
        row = await session.get(Item, (uuid.UUID(canary.org.org_id), "num"))
    # jsonb keeps decimal digits, not the float/int distinction: 1.797e308 reads back as an int.
    assert row is not None and set(row.attributes) == set(attributes)
    for key, value in attributes.items():
        assert float(row.attributes[key]) == float(value), (key, row.attributes[key])


# --- timestamps ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "timestamp",
    [
        "1969-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "1900-01-01T00:00:00+00:00",
        "-1",
        "9999-12-31T23:59:59Z",
        "2999-01-01T00:00:00Z",
        "not a time",
        "2026-02-30T00:00:00Z",
        "",
        1e20,
    ],
)
async def test_timestamps_before_1970_or_over_a_day_ahead_are_400(
    client: Any, canary: Canary, timestamp: Any
) -> None:
    value = -1 if timestamp == "-1" else timestamp
    for path, record in (
        (EVENTS, event("u", "view", "i", timestamp=value)),
        (ITEMS, item("i", created_at=value)),
        (USERS, user("u", created_at=value)),
    ):
        headers = canary.org.pk if path == EVENTS else canary.org.sk
        body = assert_refused(await client.post(path, json=[record], headers=headers), 400)
        assert fields(body) and all(f.endswith(("timestamp", "created_at")) for f in fields(body)), body
    await canary.assert_nothing_lost()


async def test_timestamps_within_the_rules_are_accepted_and_stored_as_sent(
    client: Any, canary: Canary
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    moments = {
        "epoch": datetime(1970, 1, 1, tzinfo=UTC),
        "eighties": datetime(1980, 6, 1, 12, 30, tzinfo=UTC),
        "soon": now + timedelta(hours=23),
        "offset": now - timedelta(days=30),
    }
    sent = {name: _iso(moment) for name, moment in moments.items()}
    sent["offset"] = moments["offset"].astimezone(timezone(timedelta(hours=10))).isoformat()  # same instant
    batch = [event(f"t-{name}", "view", "i", timestamp=value) for name, value in sent.items()]
    response = await client.post(EVENTS, json=batch, headers=canary.org.pk)
    assert response.status_code == 202, response.text
    await canary.assert_nothing_lost()
    async with canary.db() as session:
        rows = dict(
            (
                await session.execute(
                    select(Event.user_id, Event.occurred_at).where(
                        Event.org_id == uuid.UUID(canary.org.org_id), Event.user_id.like("t-%")
                    )
                )
            ).all()
        )
    assert rows == {f"t-{name}": moment for name, moment in moments.items()}


# --- identify cycles ---------------------------------------------------------------------------


async def test_1000_identify_events_forming_a_cycle_are_stored_and_resolve_in_one_hop(
    client: Any, canary: Canary, redis: Any
) -> None:
    n = 1000
    base = datetime.now(UTC) - timedelta(days=1)
    cycle = [
        event(
            f"c{(i + 1) % n}",
            "identify",
            previous_user_id=f"c{i}",
            timestamp=_iso(base + timedelta(seconds=i)),
        )
        for i in range(n)
    ]
    response = await client.post(EVENTS, json=cycle, headers=canary.org.pk)
    assert response.status_code == 202 and response.json()["data"] == {"accepted": n}
    started = time.monotonic()
    await canary.assert_nothing_lost()
    elapsed = time.monotonic() - started
    assert await canary.stored(Event.event_name == "identify") == n
    async with canary.db() as session:
        aliases = dict(
            (
                await session.execute(
                    select(IdentityAlias.alias_id, IdentityAlias.canonical_id).where(
                        IdentityAlias.org_id == uuid.UUID(canary.org.org_id)
                    )
                )
            ).all()
        )
    # Every alias resolves in one hop to an id that is not itself an alias (no cycle survived).
    assert aliases and all(canonical not in aliases for canonical in aliases.values())
    assert len(aliases) == n - 1  # the link that would close the cycle is refused
    in_redis = {
        k.decode(): v.decode()
        for k, v in (await redis.hgetall(redis_keys.aliases(canary.org.org_id))).items()
    }
    assert in_redis == aliases
    # One job of 1,000 identifies (it used to rewrite the chain once per link: minutes, then a
    # timeout and a retry that never finished).
    assert elapsed < 20, f"persisting the cycle took {elapsed:.1f} s"


# --- duplicate keys, huge arrays, wrong types -------------------------------------------------


async def test_duplicate_keys_in_a_json_object_resolve_to_the_last_one(client: Any, canary: Canary) -> None:
    content = (
        b'{"item_id": "first", "item_type": "p", "status": "bogus", "item_id": "last", "status": "active",'
        b' "attributes": {"k": 1, "k": 2}}'
    )
    response = await client.post(ITEMS, content=content, headers={**canary.org.sk, **JSON})
    assert response.status_code == 202, response.text
    await canary.assert_nothing_lost()
    async with canary.db() as session:
        rows = (
            await session.execute(
                select(Item.item_id, Item.status, Item.attributes).where(
                    Item.org_id == uuid.UUID(canary.org.org_id)
                )
            )
        ).all()
    assert [tuple(r) for r in rows] == [("last", "active", {"k": 2})]


async def test_a_5mb_array_of_empty_objects_is_refused_quickly(client: Any, canary: Canary) -> None:
    limit = 5 * 1024 * 1024
    count = (limit - 2) // 3
    content = b"[" + b",".join([b"{}"] * count) + b"]"
    assert len(content) <= limit
    for path, headers in ((EVENTS, canary.org.pk), (ITEMS, canary.org.sk), (USERS, canary.org.sk)):
        started = time.monotonic()
        body = assert_refused(await client.post(path, content=content, headers={**headers, **JSON}), 413)
        assert "1000" in body["message"]
        assert time.monotonic() - started < 10
    response = await client.post(RECOMMEND, content=content, headers={**canary.org.pk, **JSON})
    assert_refused(response, 400)
    await canary.assert_nothing_lost()


@pytest.mark.parametrize(
    "request_body",
    [
        {"strategy": "popular", "page": 1.5},
        {"strategy": "popular", "limit": 2.5},
        {"strategy": "popular", "limit": "ten"},
        {"strategy": "popular", "limit": None},
        {"strategy": "popular", "limit": True},
        {"strategy": "popular", "limit": [10]},
        {"strategy": "popular", "limit": 0},
        {"strategy": "popular", "limit": 101},
        {"strategy": "popular", "page": 0},
        {"strategy": "popular", "page": -1},
        {"strategy": "popular", "page": 2**64},
        {"strategy": "popular", "filters": []},
        {"strategy": "popular", "filters": "category=shoes"},
        {"strategy": "popular", "filters": {"price": {"gte": "10"}}},
        {"strategy": "popular", "filters": {"price": {"gte": True}}},
        {"strategy": "popular", "filters": {"price": {"between": [1, 2]}}},
        {"strategy": "popular", "filters": {"price": {}}},
        {"strategy": "popular", "filters": {"brand": []}},
        {"strategy": "popular", "filters": {"brand": [{"a": 1}]}},
        {"strategy": "popular", "filters": {"brand": None}},
        {"strategy": "popular", "filters": {"tags": {"contains": ["a"]}}},
        {"strategy": "popular", "filters": {"exclude_item_ids": "a"}},
        {"strategy": "popular", "filters": {"exclude_item_ids": [1.0]}},
        {"strategy": "popular", "filters": {"exclude_item_ids": [True]}},
        {"strategy": "popular", "filters": {"item_type": 5}},
        {"strategy": 5},
        {"strategy": ["popular"]},
        {"strategy": "no-such-strategy"},
        {"strategy": "personalized", "user_id": 42.0},
        {"strategy": "personalized", "user_id": False},
        {"strategy": "similar", "context_item_id": 1e3},
        {"strategy": "personalized", "user_id": ""},
        {"strategy": "similar", "context_item_id": {"id": 1}},
    ],
)
async def test_wrong_types_in_recommend_are_400(
    client: Any, canary: Canary, request_body: dict[str, Any]
) -> None:
    assert_refused(await client.post(RECOMMEND, json=request_body, headers=canary.org.pk), 400)


@pytest.mark.parametrize(
    "request_body", [{"strategy": "popular", "limit": "10"}, {"strategy": "popular", "page": 1.0}]
)
async def test_lossless_coercions_in_recommend_are_accepted_as_their_value(
    client: Any, canary: Canary, request_body: dict[str, Any]
) -> None:
    response = await client.post(RECOMMEND, json=request_body, headers=canary.org.pk)
    body = assert_clean(response)
    if response.status_code == 200:
        pagination = body["data"]["pagination"]
        assert (pagination["limit"], pagination["page"]) == (
            int(request_body.get("limit", 20)),
            int(request_body.get("page", 1)),
        )


@pytest.mark.parametrize(
    ("path", "content"),
    [
        (ITEMS, b"null"),
        (ITEMS, b"123"),
        (ITEMS, b'"item"'),
        (ITEMS, b"true"),
        (ITEMS, b"[1, 2]"),
        (ITEMS, b"[[]]"),
        (ITEMS, b"[null]"),
        (ITEMS, b"{}"),
        (EVENTS, b"[]   [] "),
        (ITEMS, b'{"item_id": 123.0, "item_type": "p", "status": "active"}'),
        (ITEMS, b'{"item_id": 18446744073709551616, "item_type": "p", "status": "active"}'),
        (ITEMS, b'{"item_id": true, "item_type": "p", "status": "active"}'),
        (ITEMS, b'{"item_id": "a", "item_type": ["p"], "status": "active"}'),
        (ITEMS, b'{"item_id": "a", "item_type": "p", "status": true}'),
        (ITEMS, b'{"item_id": "a", "item_type": "p", "status": "active", "attributes": []}'),
        (ITEMS, b'{"item_id": "a", "item_type": "p", "status": "active", "attributes": "x"}'),
        (ITEMS, b'{"item_id": "a", "item_type": "p", "status": "active", "created_at": true}'),
        (ITEMS, b'{"item_id": "a", "item_type": "p", "status": "active", "created_at": {}}'),
        (USERS, b'{"user_id": "u", "status": "active", "created_at": null}'),
        (USERS, b'{"user_id": "u", "status": "ACTIVE", "created_at": "2026-01-01T00:00:00Z"}'),
        (EVENTS, b'{"user_id": "u", "event_family": "engagement", "event_name": 7}'),
        (EVENTS, b'{"user_id": "u", "event_family": "other", "event_name": "view"}'),
        (EVENTS, b'{"user_id": "u", "event_family": "engagement", "event_name": "view", "event_id": "nope"}'),
        (EVENTS, b'{"user_id": "u", "event_family": "engagement", "event_name": "view", "context": [1]}'),
        (EVENTS, b'{"user_id": "u", "event_family": "engagement", "event_name": "view", "item_id": false}'),
        (EVENTS, b'{"user_id": null, "event_family": "engagement", "event_name": "view"}'),
        (EVENTS, b'\xff\xfe{"user_id": "u"}'),
        (EVENTS, b'{"user_id": "\xc3\x28", "event_family": "engagement", "event_name": "view"}'),
        (EVENTS, b'{"user_id": "\\ud800", "event_family": "engagement", "event_name": "view"}'),
    ],
)
async def test_wrong_types_and_bytes_in_ingest_are_400(
    client: Any, canary: Canary, path: str, content: bytes
) -> None:
    headers = canary.org.pk if path == EVENTS else canary.org.sk
    assert_refused(await client.post(path, content=content, headers={**headers, **JSON}), 400)
    await canary.assert_nothing_lost()


async def test_an_empty_array_is_accepted_as_nothing(client: Any, canary: Canary) -> None:
    response = await client.post(EVENTS, json=[], headers=canary.org.pk)
    assert response.status_code == 202 and response.json()["data"] == {"accepted": 0}
    await canary.assert_nothing_lost()


@pytest.mark.parametrize(
    "params",
    [
        {"since": "yesterday"},
        {"until": "2026-13-45"},
        {"since": "2026-01-01T00:00:00Z\x00"},
        {"since": "9" * 40},
        {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
    ],
)
async def test_wrong_analytics_windows_are_400(client: Any, canary: Canary, params: dict[str, str]) -> None:
    assert_refused(
        await client.get("/v1/analytics/recommendations", params=params, headers=canary.org.sk), 400
    )


# --- accounts ----------------------------------------------------------------------------------


def _ip() -> str:
    n = uuid.uuid4().int
    return f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}"


@pytest.mark.parametrize(
    ("path", "request_body"),
    [
        ("/auth/register", {"email": "nul\x00@example.com", "password": "long enough pass", "org_name": "N"}),
        ("/auth/register", {"email": "ok@example.com", "password": "long enough pass", "org_name": "N\x00"}),
        (
            "/auth/register",
            {
                "email": "ok@example.com",
                "password": "long enough pass",
                "org_name": "N",
                "domain": "com\x00merce",
            },
        ),
        (
            "/auth/register",
            {"email": "x" * 400 + "@example.com", "password": "long enough pass", "org_name": "N"},
        ),
        ("/auth/register", {"email": "ok@example.com", "password": "p" * 1025, "org_name": "N"}),
        (
            "/auth/register",
            {"email": "ok@example.com", "password": "long enough pass", "org_name": "N" * 201},
        ),
        ("/auth/register", {"email": 42, "password": "long enough pass", "org_name": "N"}),
        ("/auth/register", {"email": "ok@example.com", "password": ["long enough pass"], "org_name": "N"}),
        ("/auth/register", []),
        ("/auth/login", {"email": "nul\x00@example.com", "password": "whatever pass"}),
        ("/auth/login", {"email": "ok@example.com", "password": None}),
        ("/auth/login", {"email": "ok@example.com", "password": "p" * 1025}),
    ],
)
async def test_hostile_account_requests_are_refused_cleanly(
    app_with: Any, path: str, request_body: Any
) -> None:
    async with app_with(client_ip=_ip()) as client:
        response = await client.post(path, json=request_body)
    assert_refused(response, 400)


async def test_hostile_session_tokens_are_401(client: Any) -> None:
    for token in ("\x00", "a" * 10_000, "e30.e30.", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "Bearer", "😀"):
        response = await client.get("/v1/keys", headers={"Authorization": f"Bearer {token}".encode()})
        assert_refused(response, 401)
    response = await client.delete("/v1/keys/not-a-uuid", headers={"Authorization": "Bearer x"})
    assert_refused(response, 401)


async def test_hostile_api_keys_are_401(client: Any) -> None:
    for key in (b"lehnz_sk_" + b"a" * 10_000, b"\xff\xfe", "lehnz_pk_😀".encode(), b" ", b"lehnz_sk_"):
        response = await client.post(EVENTS, json=event("u", "view", "i"), headers={"X-API-KEY": key})
        assert_refused(response, 401)


async def test_the_served_log_keeps_every_row_after_hostile_recommends(
    client: Any, app: Any, canary: Canary, db: Any
) -> None:
    """Hostile-but-valid recommend inputs do not poison the batch of served rows they travel in."""
    from app.storage.tables import ServedRecommendation

    served = []
    for user_id in ("😀", "\u202e", "x" * 256, "line\nbreak", "tab\t"):
        response = await client.post(
            RECOMMEND, json={"strategy": "popular", "user_id": user_id}, headers=canary.org.pk
        )
        assert response.status_code == 200
        served.append(response.json()["data"]["recommendation_id"])
    await app.state.lehnz.served_log.flush()
    await canary.assert_nothing_lost()

    async def all_persisted() -> bool:
        async with db() as session:
            rows = await session.scalar(
                select(func.count())
                .select_from(ServedRecommendation)
                .where(ServedRecommendation.org_id == uuid.UUID(canary.org.org_id))
            )
        return rows == len(served)

    await eventually(all_persisted)
