"""IdIndex: the id -> position index the api keeps for catalogs and model users."""

from __future__ import annotations

import numpy as np
import pytest

from app.ml.id_index import IdIndex, Ids
from app.ml.interactions import object_array


class Colliding(str):
    """A str whose hash is constant: every id of these shares one hash."""

    def __hash__(self) -> int:
        return 7


def test_every_id_is_found_at_its_position_and_others_are_not():
    ids = object_array([f"item-{i}" for i in range(5000)] + ["ü", ""])
    index = IdIndex(ids)
    assert len(index) == 5002 and list(index)[:2] == ["item-0", "item-1"]
    assert all(index[item_id] == i for i, item_id in enumerate(ids.tolist()))
    assert index.get("item-5000") is None and "item-5000" not in index and "ü" in index and 3 not in index
    with pytest.raises(KeyError):
        index["nope"]
    keys = ["item-42", "nope", "", "item-42", "ü"]
    assert index.positions(keys).tolist() == [42, -1, 5001, 42, 5000]
    assert index.positions([]).tolist() == [] and IdIndex(object_array([])).positions(["a"]).tolist() == [-1]


def test_ids_sharing_a_hash_are_told_apart_by_the_id_itself():
    ids = object_array([Colliding(f"c{i}") for i in range(50)] + ["plain"])
    index = IdIndex(ids)
    assert [index[Colliding(f"c{i}")] for i in range(50)] == list(range(50))
    assert index.positions([Colliding("c49"), Colliding("c50"), "plain"]).tolist() == [49, -1, 50]
    assert Colliding("c50") not in index


def test_an_extended_index_finds_old_and_new_ids():
    ids = object_array([f"a{i}" for i in range(1000)])
    grown = np.concatenate([ids, object_array(["new-1", "new-2"])])
    index = IdIndex(ids).extended(grown)
    assert index["a0"] == 0 and index["a999"] == 999 and index["new-2"] == 1001 and len(index) == 1002
    assert index.positions(["new-1", "a500", "x"]).tolist() == [1000, 500, -1]


def test_ids_read_like_the_object_array_they_replace():
    plain = object_array(["a", "bb", "ü", ""])
    ids = Ids.of(plain.tolist())
    assert len(ids) == ids.size == 4 and ids.tolist() == list(ids) == plain.tolist()
    assert ids[1] == "bb" and ids[-1] == "" and ids[np.int64(2)] == "ü"
    for at in (np.array([3, 0]), [2], slice(1, 3), np.array([True, False, True, False])):
        assert ids[at].tolist() == plain[at].tolist()
    with pytest.raises(IndexError):
        ids[4]
    grown = ids.appended(["new"])
    assert grown.tolist() == [*plain.tolist(), "new"] and ids.tolist() == plain.tolist()
    assert Ids.of([]).tolist() == [] and len(Ids.of([]).appended([])) == 0
