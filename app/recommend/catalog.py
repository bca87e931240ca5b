"""The live catalog an api process serves from: immutable, replaced whole on every change.

Its order starts with the trained model's items (so model-indexed arrays line up with catalog
indices 0..n_model-1 without translation), followed by items upserted since the last train.
Attribute columns for filters are built lazily, once per catalog version, so filtering a
request is a few numpy mask operations.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

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


@dataclass(frozen=True, eq=False)
class AttributeColumn:
    numbers: np.ndarray  # float64, NaN where the value is not a number
    codes: np.ndarray  # int32 equality code per item, -1 where missing / not a scalar
    vocab: dict[tuple[str, Any], int]
    members: dict[tuple[str, Any], np.ndarray]  # value -> item indices whose list holds it

    @classmethod
    def build(cls, attributes: list[dict[str, Any] | None], key: str) -> AttributeColumn:
        n = len(attributes)
        numbers = np.full(n, np.nan)
        codes = np.full(n, -1, dtype=np.int32)
        vocab: dict[tuple[str, Any], int] = {}
        members: dict[tuple[str, Any], list[int]] = {}
        for i, attrs in enumerate(attributes):
            if not attrs or key not in attrs:
                continue
            value = attrs[key]
            scalar = value_key(value)
            if scalar is not None:
                codes[i] = vocab.setdefault(scalar, len(vocab))
                members.setdefault(scalar, []).append(i)
                if scalar[0] == "n" and math.isfinite(scalar[1]):
                    numbers[i] = scalar[1]
            elif isinstance(value, list):
                for element in value:
                    element_key = value_key(element)
                    if element_key is not None:
                        members.setdefault(element_key, []).append(i)
        return cls(
            numbers=numbers,
            codes=codes,
            vocab=vocab,
            members={k: np.unique(np.asarray(v, dtype=np.int64)) for k, v in members.items()},
        )


@dataclass(frozen=True, eq=False)
class Catalog:
    item_ids: np.ndarray  # object (str)
    index: dict[str, int]
    known: np.ndarray  # bool: the item is in the items table (events may name unknown items)
    active: np.ndarray  # bool: known and status == active
    item_types: np.ndarray  # object
    created_at: np.ndarray  # float64 unix, NaN when unknown
    attributes: list[dict[str, Any] | None]
    watermark: float  # newest updated_at applied (unix s)
    _columns: dict[str, AttributeColumn] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.item_ids)

    @classmethod
    def empty(cls) -> Catalog:
        return cls.build([], order=None)

    @classmethod
    def build(cls, rows: list[Row], *, order: np.ndarray | None) -> Catalog:
        """From database rows; `order` (the model's item ids) comes first when given."""
        by_id = {row[0]: row for row in rows}
        ids: list[str] = list(order.tolist()) if order is not None else []
        seen = set(ids)
        ids.extend(sorted(i for i in by_id if i not in seen))
        n = len(ids)
        known = np.zeros(n, dtype=bool)
        active = np.zeros(n, dtype=bool)
        types = np.full(n, None, dtype=object)
        created = np.full(n, np.nan)
        attributes: list[dict[str, Any] | None] = [None] * n
        watermark = 0.0
        for i, item_id in enumerate(ids):
            row = by_id.get(item_id)
            if row is None:
                continue
            known[i] = True
            active[i] = row[2] == "active"
            types[i] = row[1]
            attributes[i] = orjson.loads(row[3])
            created[i] = row[4]
            watermark = max(watermark, row[5])
        item_ids = np.empty(n, dtype=object)
        item_ids[:] = ids
        return cls(item_ids, {item_id: i for i, item_id in enumerate(ids)}, known, active, types, created,
                   attributes, watermark)

    def apply(self, rows: list[Row]) -> Catalog:
        """A new catalog with these changed rows applied (new ids appended)."""
        if not rows:
            return self
        new_ids = [row[0] for row in rows if row[0] not in self.index]
        n_old, n = len(self), len(self) + len(dict.fromkeys(new_ids))
        grow = n - n_old
        item_ids = np.concatenate([self.item_ids, np.empty(grow, dtype=object)])
        index = dict(self.index)
        for item_id in dict.fromkeys(new_ids):
            index[item_id] = len(index)
            item_ids[index[item_id]] = item_id
        known = np.concatenate([self.known, np.zeros(grow, dtype=bool)])
        active = np.concatenate([self.active, np.zeros(grow, dtype=bool)])
        types = np.concatenate([self.item_types, np.full(grow, None, dtype=object)])
        created = np.concatenate([self.created_at, np.full(grow, np.nan)])
        attributes = [*self.attributes, *([None] * grow)]
        watermark = self.watermark
        for item_id, item_type, status, attrs, created_at, updated_at in rows:
            i = index[item_id]
            known[i] = True
            active[i] = status == "active"
            types[i] = item_type
            attributes[i] = orjson.loads(attrs)
            created[i] = created_at
            watermark = max(watermark, updated_at)
        return Catalog(item_ids, index, known, active, types, created, attributes, watermark)

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
            [self.attributes[o] if o >= 0 else None for o in old.tolist()],
            self.watermark,
        )

    def column(self, key: str) -> AttributeColumn:
        """Built on first use per catalog version; a benign race may build it twice.

        A key no item has (a filter a client made up) gets one shared empty column: made-up
        keys must not each cost a pass over the catalog and a column kept for its lifetime.
        """
        column = self._columns.get(key)
        if column is None:
            if key not in self.attribute_keys:
                return self._absent_column
            column = AttributeColumn.build(self.attributes, key)
            self._columns[key] = column
        return column

    @functools.cached_property
    def attribute_keys(self) -> frozenset[str]:
        return frozenset(key for attributes in self.attributes if attributes for key in attributes)

    @functools.cached_property
    def _absent_column(self) -> AttributeColumn:
        return AttributeColumn.build([None] * len(self), "")

    def lookup(self, item_id: str | None) -> int | None:
        if item_id is None:
            return None
        return self.index.get(item_id)
