"""Hypothesis properties of filters and pagination (one trained world) and of ingest validation.

Filters and pages: for generated filter objects (every valid operator) and any strategy, page
size and starting page, paging to the end gives pages that never overlap, whose items all hold
the filters (rechecked here against the attributes we ingested), with one total_count that is the
number of distinct items paged through, and scores in [0, 1] that never increase down the list.

Ingest validation: a valid batch is 202 with every record accepted; a batch with exactly one
invalid field, at any index, is 400 naming that index, and nothing of it is queued.

Examples per property: LEHNZ_FUZZ_EXAMPLES (default 25), derandomized.
"""

from __future__ import annotations

import itertools
import math
import operator
import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app import redis_keys
from app.ml.factor_index import FactorIndex, demote
from app.ml.topk import top_order
from app.recommend.ranking import Ranking, ReusedDense, best_first
from app.recommend.registry import ITEM, ITEM_OR_CATEGORY, REGISTRY, USER
from app.recommend.service import _dense_stage, _dense_top, _PageBuilder
from app.storage import orgs
from tests.factories import OrgKeys, create_org, event, item
from tests.fuzz.support import parked_errors
from tests.recommend.conftest import build_world

EXAMPLES = int(os.environ.get("LEHNZ_FUZZ_EXAMPLES", "25"))
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TIMEOUT_S = max(120, EXAMPLES * 6)
NOW = datetime.now(UTC)

# --- the world -------------------------------------------------------------------------------

CATEGORIES = ["shoes", "bags", "hats", "Shoes"]
TAGS = ["sale", "new", "vegan", "eco"]


def _attributes(k: int) -> dict[str, Any]:
    """Categorical, numeric, list and boolean attributes, with the awkward cases mixed in:
    missing keys, numbers as strings, int vs float, scalars where lists are usual."""
    attributes: dict[str, Any] = {
        "category": CATEGORIES[k % 4] if k % 19 else 1,
        "price": (k * 1.5 if k % 2 else k) if k % 10 else None,
        "rating": k % 5 + 1,
        "tags": [TAGS[k % 4], TAGS[(k * 7) % 4]] if k % 13 else "vegan",
        "on_sale": k % 3 == 0,
    }
    if k % 17 == 0:
        attributes["price"] = "12.5"  # a string: never a number for range filters
    if k % 9 == 0:
        attributes["tags"] = []
    if k % 7 == 0:
        attributes["tags"] = (
            [*attributes["tags"], 1] if isinstance(attributes["tags"], list) else attributes["tags"]
        )
    if k % 11 == 0:
        del attributes["on_sale"]
    if attributes["price"] is None:
        del attributes["price"]
    return attributes


ITEMS = [
    item(
        f"p{k:02d}",
        item_type="article" if k % 4 == 3 else "product",
        status="inactive" if k % 11 == 5 else "deleted" if k % 23 == 7 else "active",
        attributes=_attributes(k),
        created_at=(NOW - timedelta(days=90 - k, minutes=k)).isoformat(),
    )
    for k in range(90)
]
BY_ID = {record["item_id"]: record for record in ITEMS}
USERS = [f"u{n:02d}" for n in range(30)]


def _events() -> list[dict[str, Any]]:
    events = []
    for n, user_id in enumerate(USERS):
        start = NOW - timedelta(days=n % 7 + 1, hours=n % 5)
        picks = [(n * 7 + step * 11) % 90 for step in range(8)]
        for step, k in enumerate(picks):
            when = (start + timedelta(minutes=3 * step)).isoformat()
            events.append(event(user_id, "view", f"p{k:02d}", timestamp=when))
        for k in picks[:2]:
            when = (start + timedelta(minutes=30)).isoformat()
            events.append(
                event(
                    user_id,
                    "purchase",
                    f"p{k:02d}",
                    timestamp=when,
                    context={"order_id": f"o{n}", "price": 10},
                )
            )
    return events


@pytest_asyncio.fixture(scope="module")
async def world(client: Any, db: Any, drain: Any) -> OrgKeys:
    org = await create_org(db, name="filters and pages")
    async with db() as session, session.begin():  # thousands of requests: out of the rate limit's way
        await orgs.set_rate_limit(session, uuid.UUID(org.org_id), "100000000/minute")

    await build_world(client, org, drain, items=ITEMS, events=_events())
    return org


# --- the oracle: the filter semantics of API.md section 5, recomputed here ---------------------


def _key(value: Any) -> tuple[str, Any] | None:
    """Equality as the contract has it: 1 == 1.0, but True is not 1 and "1" is not 1."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", float(value))
    if isinstance(value, str):
        return ("s", value)
    return None


_RANGE = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}
_MISSING = object()


def holds(record: dict[str, Any], filters: dict[str, Any]) -> bool:
    attributes = record["attributes"]
    for key, spec in filters.items():
        if key == "exclude_item_ids":
            if record["item_id"] in spec:
                return False
            continue
        if key == "item_type":
            if record["item_type"] not in (spec if isinstance(spec, list) else [spec]):
                return False
            continue
        value = attributes.get(key, _MISSING)
        if isinstance(spec, dict) and "contains" in spec:
            target = _key(spec["contains"])
            # A list attribute holding the value; a scalar attribute counts as a list of one.
            elements = value if isinstance(value, list) else [value]
            ok = any(_key(e) == target for e in elements if e is not _MISSING)
        elif isinstance(spec, dict):
            number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
            ok = (
                number is not None
                and math.isfinite(number)
                and all(_RANGE[op](number, bound) for op, bound in spec.items())
            )
        elif isinstance(spec, list):
            ok = value is not _MISSING and _key(value) is not None and _key(value) in {_key(v) for v in spec}
        else:
            ok = value is not _MISSING and _key(value) is not None and _key(value) == _key(spec)
        if not ok:
            return False
    return True


# --- generated requests ------------------------------------------------------------------------

_scalar = st.sampled_from([*CATEGORIES, "none-such", 1, 1.0, True, False, "1", 3, 4.5])
_bounds = st.one_of(st.integers(-5, 140), st.floats(-5, 140, allow_nan=False, allow_infinity=False))
_range = st.dictionaries(st.sampled_from(list(_RANGE)), _bounds, min_size=1, max_size=2)
_types = st.sampled_from(["product", "article", "video"])

# Every operator, on every kind of attribute; a filter object holds up to three of them (more
# would leave almost every page empty).
_FILTER_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "category": st.one_of(_scalar, st.lists(_scalar, min_size=1, max_size=3)),
    "price": st.one_of(_range, _range, st.sampled_from([15, 15.0, 3, "12.5"])),
    "rating": st.one_of(_range, st.integers(0, 6), st.lists(st.integers(0, 6), min_size=1, max_size=3)),
    "tags": st.one_of(
        st.fixed_dictionaries({"contains": st.sampled_from([*TAGS, 1, "1", True])}), st.sampled_from(TAGS)
    ),
    "on_sale": st.one_of(st.booleans(), st.sampled_from(["true", 0, 1])),
    "item_type": st.one_of(_types, st.lists(_types, min_size=1, max_size=2)),
    "exclude_item_ids": st.lists(st.sampled_from([*BY_ID, "not-an-item"]), max_size=30),
}


@st.composite
def filter_objects(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(sorted(_FILTER_VALUES)), max_size=3, unique=True))
    filters = {key: draw(_FILTER_VALUES[key]) for key in keys}
    if draw(st.integers(0, 9)) == 9:
        filters["no_such_attribute"] = draw(st.sampled_from(["x", 1]))  # holds for no item
    return filters


@st.composite
def recommend_requests(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.sampled_from(sorted(REGISTRY)))
    body: dict[str, Any] = {
        "strategy": name,
        "filters": draw(filter_objects()),
        "limit": draw(st.integers(1, 40)),
    }
    requires = REGISTRY[name].requires
    if requires == USER or draw(st.booleans()):
        body["user_id"] = draw(st.sampled_from([*USERS, "stranger"]))
    if requires in (ITEM, ITEM_OR_CATEGORY):
        body["context_item_id"] = draw(st.sampled_from([*BY_ID, "not-an-item"]))
    return body


@pytest.mark.timeout(TIMEOUT_S)
@settings(PROPERTY, max_examples=2 * EXAMPLES)
@given(request=recommend_requests())
# Every operator at least once on a non-empty answer, whatever the generator draws.
@example(request={"strategy": "popular", "limit": 7, "filters": {"category": "bags"}})
@example(
    request={
        "strategy": "personalized",
        "user_id": "u01",
        "limit": 5,
        "filters": {"category": ["shoes", "hats", 1], "on_sale": True},
    }
)
@example(
    request={
        "strategy": "similar",
        "context_item_id": "p05",
        "limit": 4,
        "filters": {"price": {"gte": 10, "lt": 60.5}},
    }
)
@example(request={"strategy": "trending", "limit": 3, "filters": {"tags": {"contains": "vegan"}}})
@example(
    request={"strategy": "new-arrivals", "limit": 6, "filters": {"tags": {"contains": 1}, "rating": [2, 3]}}
)
@example(
    request={
        "strategy": "category-popular",
        "context_item_id": "p02",
        "limit": 2,
        "filters": {"item_type": "article", "price": {"gt": 4}},
    }
)
@example(
    request={
        "strategy": "session_based",
        "user_id": "u03",
        "limit": 9,
        "filters": {"exclude_item_ids": [f"p{k:02d}" for k in range(0, 90, 2)], "rating": {"lte": 3}},
    }
)
@example(
    request={
        "strategy": "buy-again",
        "user_id": "u04",
        "limit": 10,
        "filters": {"price": 12.0, "on_sale": True},
    }
)
async def test_pages_hold_the_filters_never_overlap_and_add_up_to_total_count(
    client: Any, world: OrgKeys, request: dict[str, Any]
) -> None:
    limit = request["limit"]
    collected: list[str] = []
    scores: list[float] = []
    totals = set()
    page = 1
    while True:
        response = await client.post("/v1/recommend", json={**request, "page": page}, headers=world.pk)
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        pagination = data["pagination"]
        assert (pagination["page"], pagination["limit"]) == (page, limit)
        assert data["recommended_items"] == [r["item_id"] for r in data["results"]]
        totals.add(pagination["total_count"])
        assert pagination["has_next"] == (pagination["total_count"] > page * limit)
        assert len(data["results"]) <= limit
        for result in data["results"]:
            record = BY_ID.get(result["item_id"])
            assert record is not None and record["status"] == "active", result
            assert holds(record, request["filters"]), (
                result["item_id"],
                record["attributes"],
                request["filters"],
            )
            assert result["metadata"] == record["attributes"]
        collected.extend(r["item_id"] for r in data["results"])
        scores.extend(r["score"] for r in data["results"])
        if not pagination["has_next"]:
            break
        assert len(data["results"]) == limit  # only the last page may be short
        page += 1

    assert len(collected) == len(set(collected)), "pages overlap"
    assert len(totals) == 1, f"total_count changed across pages: {totals}"
    assert totals.pop() == len(collected)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert all(a >= b for a, b in itertools.pairwise(scores)), "scores increase down the list"
    if request.get("context_item_id") and REGISTRY[request["strategy"]].requires in (ITEM, ITEM_OR_CATEGORY):
        assert request["context_item_id"] not in collected
    if request["strategy"] in ("trending", "popular", "new-arrivals"):
        # Their chains end in new-arrivals, which ranks every active item: nothing eligible is lost.
        eligible = {i for i, r in BY_ID.items() if r["status"] == "active" and holds(r, request["filters"])}
        assert set(collected) == eligible


# --- ingest validation -------------------------------------------------------------------------

_text = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), min_size=1, max_size=40)
_json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    _text,
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)
_free_json = st.dictionaries(
    _text,
    st.recursive(
        _json_scalar,
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_text, inner, max_size=4)),
        max_leaves=12,
    ),
    max_size=6,
)
_when = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2025, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.isoformat())

# Shop platforms send integer ids as JSON numbers: valid, stored as their decimal string.
_id = st.one_of(_text, st.integers(-(2**63), 2**64 - 1))

VALID_EVENT = st.fixed_dictionaries(
    {
        "user_id": _id,
        "event_family": st.sampled_from(["exposure", "engagement", "conversion", "system"]),
        "event_name": st.sampled_from(
            ["view", "click", "purchase", "add_to_cart", "impression", "search", "çustom"]
        ),
    },
    optional={
        "item_id": st.one_of(st.none(), _id),
        "recommendation_id": st.one_of(st.none(), _text.map(lambda s: s[:64])),
        "event_id": st.uuids().map(str),
        "context": st.one_of(st.none(), _free_json),
        "timestamp": _when,
    },
)
VALID_IDENTIFY = (
    st.tuples(_id, _id)
    .filter(lambda pair: str(pair[0]) != str(pair[1]))
    .map(
        lambda pair: {
            "user_id": pair[0],
            "previous_user_id": pair[1],
            "event_family": "system",
            "event_name": "identify",
        }
    )
)
VALID_ITEM = st.fixed_dictionaries(
    {"item_id": _id, "item_type": _text, "status": st.sampled_from(["active", "inactive", "deleted"])},
    optional={"attributes": st.one_of(st.none(), _free_json), "created_at": _when},
)
VALID_USER = st.fixed_dictionaries(
    {"user_id": _id, "status": st.sampled_from(["active", "inactive", "deleted"]), "created_at": _when},
    optional={"attributes": st.one_of(st.none(), _free_json)},
)

VALID = {
    "events": st.one_of(VALID_EVENT, VALID_IDENTIFY),
    "items": VALID_ITEM,
    "users": VALID_USER,
}
PATHS = {
    "events": "/v1/ingest/events/ingest",
    "items": "/v1/ingest/items/upsert",
    "users": "/v1/ingest/users/upsert",
}


def _deep(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {}
    for _ in range(levels):
        node = {"d": node}
    return node


# (field, a value that makes the record invalid, whether the error names the field or the record)
_COMMON_IDS = [
    ("", "field"),
    (None, "field"),
    ("x" * 257, "field"),
    ("nul\x00", "field"),
    (7.0, "field"),  # integers are ids, floats never (not even integral ones)
    (1e3, "field"),
    (True, "field"),
    (["a"], "field"),
    ({"id": 7}, "field"),
]
_TIMES = [
    ("1969-12-31T23:59:59Z", "field"),
    ("3000-01-01T00:00:00Z", "field"),
    ("yesterday", "field"),
    (True, "field"),
]
_JSON = [
    ([], "field"),
    ("text", "field"),
    (_deep(40), "field"),
    ({"k": "v\x00"}, "field"),
    ({"k\x00": 1}, "field"),
]
INVALID: dict[str, dict[str, list[tuple[Any, str]]]] = {
    "events": {
        "user_id": _COMMON_IDS,
        "event_family": [("bogus", "field"), (None, "field"), (3, "field"), ("Engagement", "field")],
        "event_name": [
            ("", "field"),
            ("e" * 65, "field"),
            ("View", "record"),
            (5, "field"),
            ("v\x00", "field"),
        ],
        "item_id": [("", "field"), ("x" * 257, "field"), (7.5, "field"), (False, "field"), ("i\x00", "field")],
        "recommendation_id": [("r" * 65, "field"), ("", "field"), (1, "field")],
        "event_id": [("not-a-uuid", "field"), (12, "field")],
        "context": _JSON,
        "timestamp": _TIMES,
    },
    "items": {
        "item_id": _COMMON_IDS,
        "item_type": [("", "field"), ("t" * 65, "field"), (None, "field"), (1, "field")],
        "status": [("gone", "field"), ("ACTIVE", "field"), (None, "field"), (True, "field")],
        "attributes": _JSON,
        "created_at": _TIMES,
    },
    "users": {
        "user_id": _COMMON_IDS,
        "status": [("gone", "field"), (None, "field")],
        "created_at": [*_TIMES, (None, "field")],
        "attributes": _JSON,
    },
}


@st.composite
def one_bad_record(draw: st.DrawFn) -> tuple[str, list[dict[str, Any]], int, str]:
    """A batch of valid records with exactly one field of one record made invalid."""
    kind = draw(st.sampled_from(sorted(VALID)))
    batch = draw(st.lists(VALID[kind], min_size=1, max_size=30))
    index = draw(st.integers(0, len(batch) - 1))
    field = draw(st.sampled_from(sorted(INVALID[kind])))
    value, names = draw(st.sampled_from(INVALID[kind][field]))
    bad = dict(batch[index])
    if bad.get("event_name") == "identify" and field in ("event_name", "user_id"):
        bad = {**bad, "event_name": "view", "previous_user_id": None}  # keep the one fault the only one
    bad[field] = value
    if draw(st.booleans()) and value is None and field not in ("item_id", "recommendation_id"):
        del bad[field]  # missing is as invalid as null for a required field
    batch[index] = bad
    expected = f"{kind}[{index}].{field}" if names == "field" else f"{kind}[{index}]"
    return kind, batch, index, expected


@pytest_asyncio.fixture(scope="module")
async def ingest_org(db: Any) -> OrgKeys:
    org = await create_org(db, name="ingest properties")
    async with db() as session, session.begin():
        await orgs.set_rate_limit(session, uuid.UUID(org.org_id), "100000000/minute")
    return org


@pytest_asyncio.fixture(scope="module")
async def refused_org(db: Any) -> OrgKeys:
    """Only ever sent invalid batches: its pending set must stay empty."""
    org = await create_org(db, name="ingest refusals")
    async with db() as session, session.begin():
        await orgs.set_rate_limit(session, uuid.UUID(org.org_id), "100000000/minute")
    return org


def _key_for(org: OrgKeys, kind: str) -> dict[str, str]:
    return org.pk if kind == "events" else org.sk


@pytest.mark.timeout(TIMEOUT_S)
@PROPERTY
@given(case=one_bad_record())
async def test_one_invalid_field_anywhere_is_400_naming_it_and_queues_nothing(
    client: Any, refused_org: OrgKeys, redis: Any, case: tuple[str, list[dict[str, Any]], int, str]
) -> None:
    kind, batch, index, expected = case
    response = await client.post(PATHS[kind], json=batch, headers=_key_for(refused_org, kind))
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["success"] is False and body["data"] is None
    named = {e["field"] for e in body["error"]}
    assert any(f == expected or f.startswith((expected + ".", expected + "[")) for f in named), (
        expected,
        named,
    )
    assert all(
        f == f"{kind}[{index}]" or f.startswith((f"{kind}[{index}].", f"{kind}[{index}][")) for f in named
    ), named
    assert await redis.zcard(redis_keys.pending(refused_org.org_id)) == 0


@pytest.mark.timeout(TIMEOUT_S)
@PROPERTY
@given(kind=st.sampled_from(sorted(VALID)), data=st.data())
async def test_a_valid_batch_is_202_with_every_record_accepted(
    client: Any, ingest_org: OrgKeys, kind: str, data: st.DataObject
) -> None:
    batch = data.draw(st.lists(VALID[kind], min_size=1, max_size=40))
    response = await client.post(PATHS[kind], json=batch, headers=_key_for(ingest_org, kind))
    assert response.status_code == 202, response.text
    assert response.json() == {
        "success": True,
        "message": f"{kind} accepted",
        "data": {"accepted": len(batch)},
        "error": None,
    }


async def test_every_generated_valid_batch_is_persisted_without_being_parked(
    ingest_org: OrgKeys, redis: Any, drain: Any
) -> None:
    """Valid by the schema means storable: the worker parks none of what was accepted above."""
    await drain()
    assert await redis.zcard(redis_keys.pending(ingest_org.org_id)) == 0
    assert await parked_errors(redis, ingest_org.org_id) == []


# --- top_order: the page's order is the full sort's prefix, ties broken by catalog index -------

# The ranking properties below draw their vectors from a seed, and keep this share of the
# catalog available: everything, half, or a narrow filter.
SEEDS = st.integers(min_value=0, max_value=2**32 - 1)
AVAILABLE_SHARES = st.sampled_from([1.0, 0.5, 0.01])

@PROPERTY
@given(
    scores=st.lists(st.sampled_from([-np.inf, -2.5, -1.0, 0.0, 0.5, 1.0, 3.0]), min_size=1, max_size=60),
    k=st.integers(min_value=1, max_value=70),
    sparse=st.booleans(),
)
def test_top_order_is_the_prefix_of_the_full_sort(scores: list[float], k: int, sparse: bool) -> None:
    values = np.asarray(scores, dtype=np.float32)
    # Sparse rankings carry their own catalog indices, in any order.
    # Dense ones rank positions that are the catalog indices.
    indices = np.arange(values.size)
    if sparse:
        indices = np.random.default_rng(len(scores)).permutation(1000)[: values.size]
    expected = sorted(range(values.size), key=lambda p: (-values[p], indices[p]))[:k]
    assert top_order(values, indices, k).tolist() == expected


@PROPERTY
@given(
    seed=SEEDS,
    n=st.integers(min_value=1, max_value=3000),
    k=st.integers(min_value=1, max_value=100),
    available=AVAILABLE_SHARES,
    levels=st.sampled_from([-1, 1, 3, 50, 0]),  # all tied, few distinct scores ... continuous
    nan=st.booleans(),
)
@example(seed=0, n=1000, k=10, available=1.0, levels=-1, nan=False)  # the shortlist cuts a tie
def test_the_dense_shortlist_ranks_as_the_whole_vector_would(
    seed: int, n: int, k: int, available: float, levels: int, nan: bool
) -> None:
    rng = np.random.default_rng(seed)
    raw = rng.standard_normal(n)
    if levels < 0:
        raw = np.ones(n)
    elif levels:
        raw = np.round(raw * levels) / levels
    raw[rng.random(n) < 0.2] = -np.inf  # not a candidate of this strategy
    if nan:
        raw[rng.integers(0, n)] = np.nan
    ok = (rng.random(n) < available) & (raw > -np.inf)
    if not ok.any():
        return
    k = min(k, int(ok.sum()))
    expected = top_order(np.where(ok, raw, -np.inf), np.arange(n), k)
    assert _dense_top(raw, ok, k, int(ok.sum()), None).tolist() == expected.tolist()
    # A vector reused across requests carries its order; walking it gives the same page.
    order = best_first(raw)
    assert _dense_top(raw, ok, k, int(ok.sum()), order).tolist() == expected.tolist()


@PROPERTY
@given(
    seed=SEEDS,
    n=st.integers(min_value=1, max_value=4000),  # past the first chunks (1024, then 2048)
    k=st.integers(min_value=1, max_value=60),
    available=AVAILABLE_SHARES,
    spread=st.sampled_from([0, 1, 4]),  # factor values in [-spread, spread]: 0 = every score tied
    demoted=st.booleans(),
    weighted=st.booleans(),
)
@example(seed=0, n=3000, k=20, available=1.0, spread=0, demoted=False, weighted=False)  # all tied at 0
def test_the_factor_index_finds_the_top_of_the_full_product(
    seed: int, n: int, k: int, available: float, spread: int, demoted: bool, weighted: bool
) -> None:
    """FactorIndex.top is the prefix of the full sort of demote(Y @ u), ties by item index; with
    weights (price-optimized), of max(that, 0) * weight.

    Small integer factors and quarter demotions and weights keep every float32 product exact, so
    the full product and the chunked scan agree to the bit and ties are plentiful."""
    rng = np.random.default_rng(seed)
    factors = rng.integers(-spread, spread + 1, size=(n, 8)).astype(np.float32)
    user = rng.integers(-3, 4, size=8).astype(np.float32)
    # A few large items along the user's taste, as ALS gives the popular ones: the scan can stop.
    liked = rng.random(n) < 0.03
    factors[liked] += rng.integers(1, 5, size=(int(liked.sum()), 1)).astype(np.float32) * user
    demotion = rng.choice(np.float32([0, 0.25, 0.5, 0.75]), size=n) if demoted else None
    ok = rng.random(n) < available
    if not ok.any():
        return
    k = min(k, int(ok.sum()))
    full = demote(factors @ user, demotion)
    weights = rng.choice([0.25, 0.5, 0.75, 1.0], size=n) if weighted else None
    if weights is not None:
        full = (np.maximum(full, 0) * weights).astype(np.float32)
    expected = top_order(np.where(ok, full, -np.inf), np.arange(n), k)
    index = FactorIndex(factors, demotion)
    top = index.top(user, ok, k, weights=None if weights is None else weights.__getitem__)
    assert top.items.tolist() == expected.tolist()
    assert top.scores.tolist() == full[expected].tolist()
    if weights is None:
        assert (full >= index.lowest_possible(user)).all()


@PROPERTY
@given(
    seed=SEEDS,
    n=st.integers(min_value=1, max_value=2000),
    need=st.integers(min_value=1, max_value=60),
    available=AVAILABLE_SHARES,
    negative=st.booleans(),
)
def test_a_reused_dense_vector_pages_exactly_as_the_plain_vector(
    seed: int, n: int, need: int, available: float, negative: bool
) -> None:
    """What ReusedDense precomputes only saves passes: same page, scores, count and leftovers."""
    rng = np.random.default_rng(seed)
    raw = np.round(rng.random(n) * 20) - (10 if negative else 0)
    raw[rng.random(n) < 0.3] = -np.inf
    mask = rng.random(n + 5) < available  # a catalog a little longer than the vector
    answers = []
    for reused in (None, ReusedDense.of(raw)):
        out, left = _PageBuilder(need=need), mask.copy()
        count = _dense_stage(Ranking(None, raw, "r", reused=reused), left, out)
        answers.append((out.indices, out.scores, count, left.tolist()))
    assert answers[0] == answers[1]
