"""JsonColumn: many small JSON documents in one buffer, decoded one row at a time."""

from __future__ import annotations

import numpy as np
import orjson

from app.ml.columns import JsonColumn

ROWS = [{"title": "socks", "price": 5}, None, {"tags": ["wool", "category"]}, {}]


def test_rows_read_back_as_they_went_in() -> None:
    column = JsonColumn.of_values(ROWS)
    assert len(column) == 4 and list(column) == ROWS
    assert column[0] == ROWS[0] and column[-1] == {} and column[1] is None and column[1:3] == ROWS[1:3]
    assert JsonColumn.of_texts([orjson.dumps(r) if r is not None else None for r in ROWS])[2] == ROWS[2]


def test_patched_replaces_rows_and_grows_with_empty_rows() -> None:
    column = JsonColumn.of_values(ROWS).patched(6, {1: b'{"new": 1}', 4: b'{"appended": true}'})
    assert list(column) == [ROWS[0], {"new": 1}, ROWS[2], ROWS[3], {"appended": True}, None]


def test_take_reorders_and_minus_one_is_none() -> None:
    column = JsonColumn.of_values(ROWS).take(np.array([3, -1, 0]))
    assert list(column) == [{}, None, ROWS[0]]


def test_concat_keeps_every_row_in_order() -> None:
    parts = [JsonColumn.of_values(ROWS[:2]), JsonColumn.of_values([]), JsonColumn.of_values(ROWS[2:])]
    assert list(JsonColumn.concat(parts)) == ROWS


def test_a_key_is_found_as_a_key_not_as_a_value() -> None:
    column = JsonColumn.of_texts(['{"title": "x", "tags": ["category"]}', '{"price":1}'])  # database, orjson styles
    assert column.may_have_key("title") and column.may_have_key("price")
    assert not column.may_have_key("category"), "only a value"
    assert not column.may_have_key("made-up")
