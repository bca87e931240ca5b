"""The api's catalog: compact attributes, and filter columns carried across catalog versions
(a change patches them, a new model's order permutes them) exactly as if rebuilt."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from app.ml.id_index import Ids
from app.recommend.catalog import AttributeColumn, Catalog, value_key


def row(item_id: str, attributes: dict[str, Any], *, status: str = "active", t: float = 1.0) -> tuple[Any, ...]:
    return (item_id, "product", status, orjson.dumps(attributes).decode(), 0.0, t)


def rows_of(seed: int, n: int, *, prefix: str = "i") -> list[tuple[Any, ...]]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        attrs: dict[str, Any] = {"category": f"c{rng.integers(0, 4)}", "price": float(rng.integers(1, 50)),
                                 "tags": [f"t{t}" for t in rng.choice(6, rng.integers(0, 3), replace=False)]}
        if rng.random() < 0.2:
            attrs.pop("category")
        if rng.random() < 0.1:
            attrs["price"] = "n/a"
        out.append(row(f"{prefix}{k}", attrs))
    return out


def as_values(column: AttributeColumn) -> tuple[list[Any], list[float], dict[Any, list[int]]]:
    """A column in terms of values (codes differ between builds, values must not)."""
    value_of = {code: value for value, code in column.vocab.items()}
    scalars = [value_of.get(int(c)) for c in column.codes]
    members = {value: sorted(column.members[value].tolist()) for value in column.members}
    return scalars, [float(x) if np.isfinite(x) else None for x in column.numbers], members


@pytest.mark.parametrize("key", ["category", "price", "tags"])
def test_a_change_patches_the_built_columns_to_what_a_rebuild_gives(key: str) -> None:
    catalog = Catalog.build(rows_of(1, 40), order=None)
    catalog.column(key)
    changed = [row("i3", {"category": "c9", "tags": ["t1", "t1"]}), row("i7", {}), row("new-1", {"price": 7}),
               row("i3", {"category": "c8", "tags": ["t5"]}, t=2.0)]  # the last change of an item wins
    applied = catalog.apply(changed)
    assert key in applied.column_keys, "carried, not left to be rebuilt by a request"
    final = {r[0]: r for r in rows_of(1, 40)} | {r[0]: r for r in changed}
    rebuilt = Catalog.build(list(final.values()), order=applied.item_ids)
    assert as_values(applied.column(key)) == as_values(rebuilt.column(key))
    assert list(applied.attributes) == list(rebuilt.attributes)


@pytest.mark.parametrize("key", ["category", "price", "tags"])
def test_a_new_models_order_permutes_the_columns_to_what_a_rebuild_gives(key: str) -> None:
    rows = rows_of(2, 30)
    catalog = Catalog.build(rows, order=None)
    catalog.column(key)
    order = np.array([f"i{k}" for k in (5, 2, 29, 0)] + ["only-in-model"], dtype=object)
    realigned = catalog.realign(order)
    assert key in realigned.column_keys
    rebuilt = Catalog.build(rows, order=order)
    assert realigned.item_ids.tolist() == rebuilt.item_ids.tolist()
    assert as_values(realigned.column(key)) == as_values(rebuilt.column(key))
    assert list(realigned.attributes) == list(rebuilt.attributes)


def test_a_new_model_of_the_same_items_keeps_the_catalog_as_it_is() -> None:
    catalog = Catalog.build(rows_of(4, 12), order=np.array([f"i{k}" for k in range(12)], dtype=object))
    same = Ids.of(catalog.item_ids.tolist())
    assert catalog.realign(same) is catalog
    reordered = catalog.realign(Ids.of(["i1", "i0"] + [f"i{k}" for k in range(2, 12)]))
    assert reordered is not catalog and reordered.item_ids.tolist()[:3] == ["i1", "i0", "i2"]
    assert reordered.attributes[0] == catalog.attributes[1]


def test_attributes_are_kept_as_text_and_decoded_when_read() -> None:
    catalog = Catalog.build([row("a", {"title": "Socks"}), row("b", {})], order=np.array(["gone", "a"], dtype=object))
    assert catalog.item_ids.tolist() == ["gone", "a", "b"]
    assert catalog.attributes[0] is None and catalog.attributes[1] == {"title": "Socks"}
    assert catalog.known.tolist() == [False, True, True] and catalog.active.tolist() == [False, True, True]


def test_a_made_up_key_gets_the_shared_empty_column() -> None:
    catalog = Catalog.build(rows_of(3, 10), order=None)
    column = catalog.column("no-such-key")
    assert column is catalog.column("other-made-up") and catalog.column_keys == []
    assert not (column.codes >= 0).any() and column.members.get(value_key("x")) is None


def test_columns_built_together_equal_columns_built_one_by_one_and_keep_the_value_rules() -> None:
    rows = rows_of(4, 50) + [row("odd", {"category": 1, "price": True, "tags": ["t1", "t1", 1.0, {"x": 1}]}),
                             row("none", {"category": None, "price": "2"})]
    together = Catalog.build(rows, order=None).with_columns(["category", "price", "tags"])
    for key in ("category", "price", "tags"):
        assert as_values(together.column(key)) == as_values(Catalog.build(rows, order=None).column(key))
    odd, none = together.index["odd"], together.index["none"]
    category, price, tags = (together.column(k) for k in ("category", "price", "tags"))
    assert category.vocab[value_key(1)] == category.codes[odd] and value_key("1") not in category.vocab
    assert price.codes[odd] == price.vocab[("b", True)] and np.isnan(price.numbers[odd]), "true is not the number 1"
    assert category.codes[none] == -1 and np.isnan(price.numbers[none]) and price.codes[none] == price.vocab[("s", "2")]
    assert tags.members[value_key("t1")].tolist().count(odd) == 1, "a repeated list element is one membership"
    assert odd in tags.members[value_key(1)].tolist() and tags.codes[odd] == -1, "a list is no scalar value"


def test_a_requests_filter_column_is_built_off_the_event_loop() -> None:
    """Building a column reads every item (seconds at a million): the event loop must go on
    serving meanwhile. The attributes here only let the build read them once a coroutine on the
    loop has run; a build on the loop itself would wait for that coroutine forever."""
    import asyncio
    import threading

    from app.ml.columns import JsonColumn
    from app.recommend.answer import Tenant, answer
    from app.recommend.model_cache import OrgSnapshot
    from app.schemas.recommend import RecommendIn
    from app.settings import Settings

    gate = threading.Event()

    class GatedColumn(JsonColumn):
        def __iter__(self):  # type: ignore[no-untyped-def]
            assert gate.wait(timeout=10), "the column was built on the event loop"
            return super().__iter__()

    plain = Catalog.build([row("red-1", {"color": "red"}), row("blue-1", {"color": "blue"})], order=None)
    texts = [plain.attributes.text(i) for i in range(len(plain))]
    catalog = Catalog(plain.item_ids, plain.index, plain.known, plain.active, plain.item_types, plain.created_at,
                      GatedColumn(b"".join(texts), np.cumsum([0, *map(len, texts)])), plain.watermark)
    snapshot = OrgSnapshot("org", None, catalog, None, 0.0)

    async def no_state(org: str, user: str) -> tuple[str, list[Any]]:
        return user, []

    async def main() -> dict[str, Any]:
        request = RecommendIn(strategy="new-arrivals", filters={"color": "red"}, limit=5)
        task = asyncio.create_task(answer(request, tenant=Tenant("org", "shop", "shop.example"),
                                          snapshot=snapshot, user_state=no_state, settings=Settings()))
        await asyncio.sleep(0)  # the request has started and is waiting for its column
        gate.set()
        return await asyncio.wait_for(task, timeout=20)

    data = asyncio.run(main())
    assert data["recommended_items"] == ["red-1"]
    assert set(catalog.column_keys) == {"color"} and catalog.missing_columns(["color", "category"]) == []
