"""The live catalog an api process serves from: immutable, replaced whole on every change.

Its order starts with the trained model's items (so model-indexed arrays line up with catalog
indices 0..n_model-1 without translation), followed by items upserted since the last train.

Compact, because a catalog can have a million items: attributes stay one buffer of JSON text
(a JsonColumn, about a sixth of the memory of the dicts) and a row is decoded only when read
(a page's results). Attribute columns for filters are built on first use per key, then carried
to every later version of the catalog (apply patches only the changed rows, realign permutes),
so a catalog change never makes a request wait for a column to be rebuilt from a million rows.
"""

from __future__ import annotations

import functools
import math
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from app.ml.columns import JsonColumn

# A row: (item_id, item_type, status, attributes JSON text, created_at unix, updated_at unix)
Row = tuple[str, str, str, str, float, float]


def value_key(value: Any) -> tuple[str, Any] | None:
    """Equality key for filters: 1 == 1.0, but True is not 1 and "1" is not 1."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", float(value))
    if isinstance(value, str):
        return ("s", value)
    return None


class Members(Mapping[tuple[str, Any], np.ndarray]):
    """value -> the (sorted) item indices whose value it is or whose list holds it, stored as one
    sorted array of (value code, item) pairs: rebuilt, patched and permuted with whole-array
    operations whatever the number of distinct values (a title column has one per item)."""

    def __init__(self, vocab: dict[tuple[str, Any], int], codes: np.ndarray, items: np.ndarray) -> None:
        order = np.lexsort((items, codes))
        self._vocab = vocab
        self._codes = codes[order]
        self._items = items[order]
        self._starts = np.searchsorted(self._codes, np.arange(len(vocab) + 1))

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        return self._codes, self._items

    def __getitem__(self, value: tuple[str, Any]) -> np.ndarray:
        code = self._vocab[value]
        members = self._items[self._starts[code]:self._starts[code + 1]]
        if members.size == 0:
            raise KeyError(value)
        return members

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        present = set(np.unique(self._codes).tolist())
        return (value for value, code in self._vocab.items() if code in present)

    def __len__(self) -> int:
        return int(np.unique(self._codes).size)


@dataclass(frozen=True, eq=False)
class AttributeColumn:
    numbers: np.ndarray  # float64, NaN where the value is not a number
    codes: np.ndarray  # int32 equality code per item, -1 where missing / not a scalar
    vocab: dict[tuple[str, Any], int]  # every value seen (scalars and list elements) -> code
    members: Members  # value -> item indices whose value is it or whose list holds it

    @classmethod
    def build(cls, attributes: Sequence[dict[str, Any] | None], key: str) -> AttributeColumn:
        return cls._of_rows(len(attributes), enumerate(attributes), key)

    @classmethod
    def _of_rows(
        cls, n: int, rows: Iterable[tuple[int, dict[str, Any] | None]], key: str,
        base: AttributeColumn | None = None, keep: np.ndarray | None = None,
    ) -> AttributeColumn:
        """Values of `key` for the given (index, attributes) rows, over `base`'s other rows."""
        numbers = np.full(n, np.nan)
        codes = np.full(n, -1, dtype=np.int32)
        vocab: dict[tuple[str, Any], int] = {}
        pair_codes: list[np.ndarray] = []
        pair_items: list[np.ndarray] = []
        if base is not None:
            m = min(n, len(base.codes))
            numbers[:m], codes[:m], vocab = base.numbers[:m], base.codes[:m], dict(base.vocab)
            old_codes, old_items = base.members.pairs()
            kept = old_items < n if keep is None else keep[old_items]
            pair_codes.append(old_codes[kept])
            pair_items.append(old_items[kept])
        # C arrays, not lists: a million Python ints would cost ~70 MB per column while it is
        # built, and the api's RSS would keep the high-water mark.
        new_codes = array("i")
        new_items = array("q")
        for i, attrs in rows:
            numbers[i], codes[i] = np.nan, -1
            if not attrs or key not in attrs:
                continue
            value = attrs[key]
            scalar = value_key(value)
            if scalar is not None:
                code = vocab.setdefault(scalar, len(vocab))
                codes[i] = code
                new_codes.append(code)
                new_items.append(i)
                if scalar[0] == "n" and math.isfinite(scalar[1]):
                    numbers[i] = scalar[1]
            elif isinstance(value, list):
                for element in value:
                    element_key = value_key(element)
                    if element_key is not None:
                        new_codes.append(vocab.setdefault(element_key, len(vocab)))
                        new_items.append(i)
        pair_codes.append(np.frombuffer(new_codes, dtype=np.int32) if new_codes else np.zeros(0, np.int32))
        pair_items.append(np.frombuffer(new_items, dtype=np.int64) if new_items else np.zeros(0, np.int64))
        all_codes, all_items = np.concatenate(pair_codes), np.concatenate(pair_items)
        pairs = np.unique(all_items * max(len(vocab), 1) + all_codes)  # a list may repeat an element
        return cls(numbers, codes, vocab, Members(vocab, (pairs % max(len(vocab), 1)).astype(np.int32),
                                                   pairs // max(len(vocab), 1)))

    def patched(self, n: int, rows: dict[int, dict[str, Any] | None], key: str) -> AttributeColumn:
        """This column grown to n items, with the given rows' attributes replaced."""
        keep = np.ones(n, dtype=bool)
        keep[list(rows)] = False
        return AttributeColumn._of_rows(n, rows.items(), key, base=self, keep=keep)

    def permuted(self, old: np.ndarray) -> AttributeColumn:
        """The column for a catalog whose row j was row old[j] of this one's (-1: not there)."""
        has = old >= 0
        source = np.where(has, old, 0)
        numbers = np.where(has, self.numbers[source], np.nan) if len(self.numbers) else np.full(len(old), np.nan)
        codes = np.where(has, self.codes[source], -1).astype(np.int32) if len(self.codes) else np.full(
            len(old), -1, np.int32)
        new_of_old = np.full(len(self.codes), -1, dtype=np.int64)
        new_of_old[old[has]] = np.flatnonzero(has)
        pair_codes, pair_items = self.members.pairs()
        moved = new_of_old[pair_items] if pair_items.size else pair_items
        present = moved >= 0
        return AttributeColumn(numbers, codes, self.vocab, Members(self.vocab, pair_codes[present], moved[present]))


class CatalogTable:
    """The items table's rows gathered as compact columns, a chunk of rows at a time (a
    million items are loaded without a million row objects alive at once)."""

    def __init__(self) -> None:
        self.item_ids: list[str] = []
        self.item_types: list[str] = []
        self.active: list[bool] = []
        self.created_at: list[float] = []
        self.watermark = 0.0
        self._texts: list[JsonColumn] = []
        self._shared: dict[str, str] = {}  # one object per distinct item type, not one per item

    def add(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        self.item_ids.extend(row[0] for row in rows)
        self.item_types.extend(self._shared.setdefault(row[1], row[1]) for row in rows)
        self.active.extend(row[2] == "active" for row in rows)
        self.created_at.extend(row[4] for row in rows)
        self.watermark = max(self.watermark, max(row[5] for row in rows))
        self._texts.append(JsonColumn.of_texts(row[3] for row in rows))

    def attributes(self) -> JsonColumn:
        return JsonColumn.concat(self._texts) if self._texts else JsonColumn.of_texts([])


@dataclass(frozen=True, eq=False)
class Catalog:
    item_ids: np.ndarray  # object (str)
    index: dict[str, int]
    known: np.ndarray  # bool: the item is in the items table (events may name unknown items)
    active: np.ndarray  # bool: known and status == active
    item_types: np.ndarray  # object
    created_at: np.ndarray  # float64 unix, NaN when unknown
    attributes: JsonColumn  # one JSON object per item (None where unknown), decoded when read
    watermark: float  # newest updated_at applied (unix s)
    _columns: dict[str, AttributeColumn] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.item_ids)

    @classmethod
    def empty(cls) -> Catalog:
        return cls.build([], order=None)

    @classmethod
    def build(cls, rows: Sequence[Row], *, order: np.ndarray | None) -> Catalog:
        """From database rows; `order` (the model's item ids) comes first when given."""
        table = CatalogTable()
        table.add(rows)
        return cls.of_table(table, order=order)

    @classmethod
    def of_table(cls, table: CatalogTable, *, order: np.ndarray | None) -> Catalog:
        """From the items table's columns; `order` (the model's item ids) comes first when given."""
        position = {item_id: j for j, item_id in enumerate(table.item_ids)}
        ids: list[str] = list(order.tolist()) if order is not None else []
        seen = set(ids)
        ids.extend(sorted(i for i in position if i not in seen))
        n = len(ids)
        source = np.fromiter((position.get(item_id, -1) for item_id in ids), np.int64, n)
        known = source >= 0
        types = np.full(n, None, dtype=object)
        active = np.zeros(n, dtype=bool)
        created = np.full(n, np.nan)
        if position:
            row = source[known]
            table_types = np.empty(len(table.item_types), dtype=object)
            table_types[:] = table.item_types
            types[known] = table_types[row]
            active[known] = np.asarray(table.active, dtype=bool)[row]
            created[known] = np.asarray(table.created_at, dtype=np.float64)[row]
        item_ids = np.empty(n, dtype=object)
        item_ids[:] = ids
        return cls(item_ids, {item_id: i for i, item_id in enumerate(ids)}, known, active, types, created,
                   table.attributes().take(source), table.watermark)

    def apply(self, rows: Sequence[Row]) -> Catalog:
        """A new catalog with these changed rows applied (new ids appended)."""
        if not rows:
            return self
        latest = {row[0]: row for row in rows}  # one change per item: the last one read
        new_ids = [item_id for item_id in latest if item_id not in self.index]
        n_old, n = len(self), len(self) + len(new_ids)
        grow = n - n_old
        item_ids = np.concatenate([self.item_ids, np.empty(grow, dtype=object)])
        index = dict(self.index)
        for item_id in new_ids:
            index[item_id] = len(index)
            item_ids[index[item_id]] = item_id
        known = np.concatenate([self.known, np.zeros(grow, dtype=bool)])
        active = np.concatenate([self.active, np.zeros(grow, dtype=bool)])
        types = np.concatenate([self.item_types, np.full(grow, None, dtype=object)])
        created = np.concatenate([self.created_at, np.full(grow, np.nan)])
        texts: dict[int, bytes] = {}
        watermark = max(self.watermark, max(row[5] for row in rows))
        for item_id, item_type, status, attrs, created_at, _ in latest.values():
            i = index[item_id]
            known[i] = True
            active[i] = status == "active"
            types[i] = item_type
            texts[i] = attrs.encode() if isinstance(attrs, str) else attrs
            created[i] = created_at
        attributes = self.attributes.patched(n, texts)
        decoded = {i: orjson.loads(text) for i, text in texts.items()}
        columns = {key: column.patched(n, decoded, key) for key, column in self._columns.items()}
        return Catalog(item_ids, index, known, active, types, created, attributes, watermark, columns)

    def realign(self, order: np.ndarray) -> Catalog:
        """The same items re-ordered so that `order` (a new model's item ids) comes first."""
        first = order.tolist()
        in_order = set(first)
        ids = first + [i for i in self.item_ids[self.known].tolist() if i not in in_order]
        old = np.fromiter((self.index.get(i, -1) for i in ids), dtype=np.int64, count=len(ids))
        has = old >= 0
        src = np.where(has, old, 0)

        def take(values: np.ndarray, missing: Any) -> np.ndarray:
            taken = values[src] if len(values) else np.empty(len(ids), dtype=values.dtype)
            return np.where(has, taken, missing) if len(ids) else taken

        item_ids = np.empty(len(ids), dtype=object)
        item_ids[:] = ids
        return Catalog(
            item_ids,
            {item_id: i for i, item_id in enumerate(ids)},
            take(self.known, False).astype(bool),
            take(self.active, False).astype(bool),
            take(self.item_types, None),
            take(self.created_at, np.nan).astype(np.float64),
            self.attributes.take(old),
            self.watermark,
            {key: column.permuted(old) for key, column in self._columns.items()},
        )

    def column(self, key: str) -> AttributeColumn:
        """Built on first use per key (then carried to later versions); a benign race may build
        it twice.

        A key no item has (a filter a client made up) gets one shared empty column: made-up
        keys must not each cost a pass over the catalog and a column kept for its lifetime.
        """
        column = self._columns.get(key)
        if column is None:
            if not self.attributes.may_have_key(key):
                return self._absent_column
            column = AttributeColumn.build(self.attributes, key)
            self._columns[key] = column
        return column

    def with_columns(self, keys: Iterable[str]) -> Catalog:
        """Build these columns now (a loader thread does it, so no request waits for them)."""
        for key in keys:
            self.column(key)
        return self

    @property
    def column_keys(self) -> list[str]:
        return list(self._columns)

    @functools.cached_property
    def _absent_column(self) -> AttributeColumn:
        return AttributeColumn.build([None] * len(self), "")

    def lookup(self, item_id: str | None) -> int | None:
        if item_id is None:
            return None
        return self.index.get(item_id)

